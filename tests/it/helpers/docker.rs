//! A real Docker engine for tests: a registry-free test image (busybox-static plus
//! stand-in AIO scripts, `docker import`), per-test container names, and a TCP
//! proxy in front of the engine's socket that a test can cut.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use tokio::net::{TcpListener, UnixStream};
use tokio::task::JoinHandle;

/// The image every Docker test uses; the tag changes when its content does.
pub const IMAGE: &str = "bmqtt-test-aio:4";

const DAILY_BACKUP: &str = r#"#!/bin/sh
echo "daily-backup: DAILY_BACKUP=${DAILY_BACKUP:-} CHECK_BACKUP=${CHECK_BACKUP:-} STOP_CONTAINERS=${STOP_CONTAINERS:-} START_CONTAINERS=${START_CONTAINERS:-} AUTOMATIC_UPDATES=${AUTOMATIC_UPDATES:-}"
echo ran >> /tmp/daily-backup-ran
for i in 1 2 3 4 5 6 7 8 9 10; do echo "daily-backup line $i"; done
echo "daily-backup: a line on stderr" >&2
sleep "${SCRIPT_SLEEP:-0}"
exit "${SCRIPT_EXIT:-0}"
"#;

const HEALTHCHECK: &str = "#!/bin/sh\necho healthy\nexit \"${HEALTH_EXIT:-0}\"\n";

const BORG_STANDIN: &str = r#"#!/bin/sh
echo "borgbackup: starting"
for i in 1 2 3; do echo "borgbackup line $i"; done
echo "borgbackup: done with ${BORG_EXIT:-0}"
exit "${BORG_EXIT:-0}"
"#;

const ARCHIVES_LIST: &str =
    "20261122_020000-nextcloud-aio,Sun Nov 22 02:00:03 2026\n20261123_020000-nextcloud-aio,Mon Nov 23 02:00:04 2026\n";

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the docker CLI is missing: run scripts/setup")
}

fn ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether an engine answers. Without one, a test fails under `CI=true` and says
/// loudly that it did not run otherwise.
pub fn engine_or_skip(test: &str) -> bool {
    let answers = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if answers {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: no Docker engine answers, and CI must run the Docker tests (.ci/run starts dockerd)");
    }
    eprintln!("!!! {test} DID NOT RUN: no Docker engine answers (start dockerd, see .ci/run) !!!");
    false
}

/// Starts a container `name` of the test image, without network, that sleeps for
/// an hour.
fn run_sleeper(name: &str) {
    ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        name,
        IMAGE,
        "sleep",
        "3600",
    ]);
}

/// Builds the test image once per test binary (and not at all when it exists).
pub fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if docker(&["image", "inspect", IMAGE]).status.success() {
            return;
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static is not installed: run scripts/setup");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in ["bin", "tmp", "mnt/docker-aio-config/data"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        // The deny-list tests need the wrappers and interpreters busybox has, so
        // that a refusal is the only reason they leave no evidence.
        for applet in [
            "sh", "echo", "sleep", "cat", "ls", "env", "test", "touch", "true", "awk", "find",
            "sed", "setsid", "tar", "timeout", "xargs",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        for (name, body) in [
            ("daily-backup.sh", DAILY_BACKUP),
            ("healthcheck.sh", HEALTHCHECK),
            ("borg-standin.sh", BORG_STANDIN),
        ] {
            let p = root.join(name);
            std::fs::write(&p, body).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(
            root.join("mnt/docker-aio-config/data/backup_archives.list"),
            ARCHIVES_LIST,
        )
        .unwrap();
        let tar = dir.path().join("rootfs.tar");
        let made = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success();
        assert!(made, "tar failed");
        ok(&[
            "import",
            "--change",
            "ENV PATH=/bin",
            tar.to_str().unwrap(),
            IMAGE,
        ]);
    });
    IMAGE
}

/// A fake Nextcloud AIO: its mastercontainer (running) and borgbackup container
/// (created, started by the test as AIO would), under a prefix of this test's own.
pub struct Aio {
    pub prefix: String,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Aio {
    /// `master_env` / `borg_env` are `KEY=VALUE` settings of the stand-ins.
    pub fn start(master_env: &[&str], borg_env: &[&str]) -> Aio {
        let image = image();
        let prefix = format!("{}-nextcloud-aio-", super::uuid_like());
        let mut aio = Aio {
            prefix,
            containers: vec![],
            volumes: vec![],
        };
        let master = aio.master();
        let mut args = vec!["run", "-d", "--network", "none", "--name", &master];
        for e in master_env {
            args.extend(["-e", e]);
        }
        args.extend([image, "sleep", "3600"]);
        ok(&args);
        aio.containers.push(master.clone());
        aio.create_borgbackup(borg_env);
        aio
    }

    pub fn master(&self) -> String {
        format!("{}mastercontainer", self.prefix)
    }
    pub fn borgbackup(&self) -> String {
        format!("{}borgbackup", self.prefix)
    }
    pub fn volume_prefix(&self) -> String {
        self.prefix.replace('-', "_")
    }

    /// (Re)creates the borgbackup stand-in, not started.
    pub fn create_borgbackup(&mut self, borg_env: &[&str]) {
        let name = self.borgbackup();
        let _ = docker(&["rm", "-f", &name]);
        let mut args = vec!["create", "--network", "none", "--name", &name];
        for e in borg_env {
            args.extend(["-e", e]);
        }
        args.extend([IMAGE, "/borg-standin.sh"]);
        ok(&args);
        if !self.containers.contains(&name) {
            self.containers.push(name);
        }
    }

    /// What AIO's mastercontainer does when a backup is asked for.
    pub fn start_borgbackup(&self) {
        ok(&["start", &self.borgbackup()]);
    }

    pub fn add_volume(&mut self, suffix: &str) -> String {
        let name = format!("{}{suffix}", self.volume_prefix());
        ok(&["volume", "create", &name]);
        self.volumes.push(name.clone());
        name
    }

    /// Whether a file exists inside the mastercontainer.
    pub fn master_has(&self, path: &str) -> bool {
        docker(&["exec", &self.master(), "test", "-e", path])
            .status
            .success()
    }

    /// A running container outside AIO (its name lacks the AIO prefix), for exec
    /// rules that are not about AIO.
    pub fn start_plain(&mut self) -> String {
        let name = self.prefix.replace("nextcloud-aio-", "plain");
        run_sleeper(&name);
        self.containers.push(name.clone());
        name
    }

    /// Whether a file exists inside a container.
    pub fn has(container: &str, path: &str) -> bool {
        docker(&["exec", container, "test", "-e", path])
            .status
            .success()
    }

    /// Runs a command in a container directly (test set-up, not the worker).
    pub fn exec(container: &str, argv: &[&str]) {
        let mut args = vec!["exec", container];
        args.extend_from_slice(argv);
        ok(&args);
    }

    /// The container's id.
    pub fn id(container: &str) -> String {
        ok(&["inspect", "--format", "{{.Id}}", container])
    }

    /// Worker settings that point it at this AIO.
    pub fn worker_env(&self) -> Vec<(&'static str, String)> {
        vec![("BMQTT_DOCKER__AIO_PREFIX", self.prefix.clone())]
    }
}

impl Drop for Aio {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

/// A TCP proxy in front of the engine's unix socket, like a socket proxy in
/// production; dropping or cutting it makes the engine unreachable mid-way.
pub struct EngineProxy {
    pub port: u16,
    task: JoinHandle<()>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl EngineProxy {
    pub async fn start() -> EngineProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let conns2 = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let handle = tokio::spawn(async move {
                    if let Ok(mut unix) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                    }
                });
                conns2.lock().unwrap().push(handle);
            }
        });
        EngineProxy { port, task, conns }
    }

    /// `tcp://127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Stops listening and drops every open connection.
    pub fn cut(&self) {
        self.task.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

impl Aio {
    /// Runs the borgbackup container as a long-running one (AIO backing up on its own).
    pub fn start_borgbackup_running(&self) {
        let name = self.borgbackup();
        let _ = docker(&["rm", "-f", &name]);
        run_sleeper(&name);
    }

    pub fn stop_borgbackup(&self) {
        let _ = docker(&["rm", "-f", &self.borgbackup()]);
    }
}
