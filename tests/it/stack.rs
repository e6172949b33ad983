//! The deployment as users run it: the project's `docker-compose.yml` (with an
//! override that only swaps images and host paths) on a real Docker engine with
//! iptables, driven over MQTT with TLS from outside the containers. What this
//! proves and what it cannot (the official images' contents) is in the README,
//! "What the stack test proves".

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::helpers::stack::{in_netns, Engine, Images, Project};
use crate::helpers::Client;
use serde_json::{json, Value};
use serde_yaml_ng::Value as Yaml;

const BASE: &str = "borgmatic/nextcloud";
/// The worker's capabilities: CHOWN (0), DAC_READ_SEARCH (2), FOWNER (3), SYS_ADMIN (21).
const CAPS: u64 = 1 | 1 << 2 | 1 << 3 | 1 << 21;

#[test]
fn the_compose_stack_backs_up_restores_and_stops_cleanly() {
    if !crate::helpers::stack::runnable_or_skip(
        "the_compose_stack_backs_up_restores_and_stops_cleanly",
    ) {
        return;
    }
    let engine = Engine::start();
    let images = Images::build(&engine);
    let project = Project::new(&engine, &images);
    let _ = project.compose(&["down", "-v", "--remove-orphans", "-t", "1"]);
    the_override_changes_only_images_and_mount_sources(&project);
    write_borgmatic_configs(&project);
    let tree = make_nextcloud_tree(&project.path("ncdata"));

    project.compose_ok(&["up", "-d"]);
    let worker = project.container("borgmatic-mqtt");
    worker_runs_with_the_compose_security_context(&engine, &worker);
    // The README's way to create a repository: borgmatic in the worker's container.
    for (config, encryption) in [("nextcloud", "repokey-blake2"), ("slow", "none")] {
        engine.ok(&[
            "exec",
            "-e",
            "BORG_PASSCOMMAND=cat /run/secrets/borg_passphrase",
            &worker,
            "borgmatic",
            "repo-create",
            "--encryption",
            encryption,
            "-c",
            &format!("/etc/borgmatic.d/{config}.yaml"),
        ]);
    }

    let ca = project.path("mosquitto/certs/ca.crt");
    let nodered = project.secret("mqtt_nodered_password");
    let write = project.secret("write_token");
    let read = project.secret("read_token");
    let dir = project.dir.path().to_path_buf();
    let engine_host = engine.host.clone();
    let worker2 = worker.clone();
    let tree2 = tree.clone();

    let archive = in_netns(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                only_tls_is_reachable_from_outside(&dir);
                let c = Client::connect_tls("127.0.0.1", 8883, &ca, "nodered", &nodered).await;
                c.subscribe(&format!("{BASE}/#")).await;
                c.wait_for(|m| m.topic == format!("{BASE}/status") && m.text() == "online")
                    .await;
                let ctx = Ctx {
                    c,
                    write,
                    read,
                    engine_host,
                    worker: worker2,
                    dir,
                };
                ctx.scenario(&tree2).await
            })
    });
    assert!(!archive.is_empty());

    the_socket_proxy_is_unreachable_from_the_brokers_network(&engine, &project);
    the_worker_refuses_to_start_without_its_secrets(&project);

    let logs = project.compose_ok(&["logs", "--no-color"]);
    for s in [
        "write_token",
        "read_token",
        "admin_token",
        "borg_passphrase",
    ] {
        let secret = project.secret(s);
        assert!(!logs.contains(secret.trim()), "the logs contain {s}");
    }
}

/// What the test does over MQTT, from the engine's network namespace.
struct Ctx {
    c: Client,
    write: String,
    read: String,
    engine_host: String,
    worker: String,
    dir: std::path::PathBuf,
}

impl Ctx {
    async fn job(&self, command: &str, mut body: Value) -> Value {
        body["token"] = json!(self.write);
        let r = self.c.run_job(BASE, command, body).await;
        assert_eq!(r["state"], "succeeded", "{command}: {r}");
        r
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("/usr/bin/docker")
            .env("DOCKER_HOST", &self.engine_host)
            .args(args)
            .output()
            .unwrap()
    }

    async fn scenario(&self, tree: &BTreeMap<String, Entry>) -> String {
        // The proxy answers the worker over the internal network.
        let list = self
            .c
            .request(BASE, "container/list", json!({"token": self.read}))
            .await;
        assert_eq!(list["status"], "ok", "{list}");

        // A backup of www-data's 0750/0640 tree: succeeded, and every file is in it.
        let backup = self
            .job("backup/run", json!({"repository": "nextcloud"}))
            .await;
        let archive = backup["data"]["archive"].as_str().unwrap().to_string();
        let listed = self.docker(&[
            "exec",
            "-e",
            "BORG_PASSCOMMAND=cat /run/secrets/borg_passphrase",
            &self.worker,
            "borg",
            "list",
            "--format",
            "{path}{NL}",
            &format!("/mnt/backup/nextcloud::{archive}"),
            "mnt/ncdata",
        ]);
        assert!(listed.status.success(), "{listed:?}");
        let in_archive: BTreeSet<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let expected: BTreeSet<String> = tree
            .keys()
            .map(|p| {
                if p.is_empty() {
                    "mnt/ncdata".to_string()
                } else {
                    format!("mnt/ncdata/{p}")
                }
            })
            .collect();
        assert_eq!(in_archive, expected, "the archive misses files");

        // Extract restores owner, mode, mtime and content exactly.
        self.job(
            "archive/extract",
            json!({"repository": "nextcloud", "archive": archive,
                   "destination": "drill", "paths": ["mnt/ncdata"]}),
        )
        .await;
        let restored = read_tree(&self.dir.join("restore/drill/mnt/ncdata"));
        assert_eq!(&restored, tree, "the restored tree differs from the source");

        self.job("repo/check", json!({"repository": "nextcloud"}))
            .await;

        // A mounted archive is readable inside the worker's container.
        self.job(
            "archive/mount",
            json!({"repository": "nextcloud", "archive": archive, "mount_point": "m"}),
        )
        .await;
        for (path, entry) in tree.iter().filter(|(_, e)| e.kind == 'f') {
            let out = self.docker(&[
                "exec",
                &self.worker,
                "cat",
                &format!("/mnt/borgmatic/m/mnt/ncdata/{path}"),
            ]);
            assert!(
                out.status.success(),
                "{path} through the mount: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(hash(&out.stdout), entry.content, "{path} through the mount");
        }
        self.job(
            "archive/umount",
            json!({"repository": "nextcloud", "mount_point": "m"}),
        )
        .await;

        // `docker stop` while a job runs: the job ends `interrupted`, then `offline`,
        // and Docker did not have to kill the worker.
        let resp = self
            .c
            .request(
                BASE,
                "backup/run",
                json!({"token": self.write, "repository": "slow"}),
            )
            .await;
        assert_eq!(resp["status"], "ok", "{resp}");
        let id = resp["job_id"].as_str().unwrap().to_string();
        let state = format!("{BASE}/jobs/{id}/state");
        self.c
            .wait_for(|m| m.topic == state && m.json()["state"] == "running")
            .await;
        let out = self.docker(&["stop", &self.worker]);
        assert!(out.status.success(), "{out:?}");
        let result = self.c.job_result(BASE, &id).await;
        assert_eq!(result["state"], "interrupted", "{result}");
        self.c
            .wait_for(|m| m.topic == format!("{BASE}/status") && m.text() == "offline")
            .await;
        let code = self.docker(&["inspect", "-f", "{{.State.ExitCode}}", &self.worker]);
        assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "0");
        archive
    }
}

/// Only the TLS port is published, and only with the project's CA does TLS verify.
fn only_tls_is_reachable_from_outside(dir: &Path) {
    let refused = std::net::TcpStream::connect(("127.0.0.1", 1883));
    assert!(
        refused.is_err(),
        "plain MQTT (1883) is reachable from outside"
    );
    let verify = |ca: &Path| {
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                "127.0.0.1:8883",
                "-verify_return_error",
            ])
            .args(["-verify_ip", "127.0.0.1", "-CAfile"])
            .arg(ca)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        verify(&dir.join("mosquitto/certs/ca.crt")),
        "TLS with the project's CA failed"
    );
    let other = tempfile::tempdir().unwrap();
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=other", "-keyout"])
        .arg(other.path().join("k"))
        .arg("-out")
        .arg(other.path().join("ca.crt"))
        .output()
        .unwrap();
    assert!(made.status.success());
    assert!(
        !verify(&other.path().join("ca.crt")),
        "TLS verified against a CA that did not sign the broker's certificate"
    );
}

fn worker_runs_with_the_compose_security_context(engine: &Engine, worker: &str) {
    let inspect: Value = serde_json::from_str(&engine.ok(&["inspect", worker])).unwrap();
    let host = &inspect[0]["HostConfig"];
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["Privileged"], false);
    assert_eq!(host["CapDrop"], json!(["ALL"]));
    let mut added: Vec<&str> = host["CapAdd"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .map(|c| c.trim_start_matches("CAP_"))
        .collect();
    added.sort();
    assert_eq!(added, ["CHOWN", "DAC_READ_SEARCH", "FOWNER", "SYS_ADMIN"]);
    assert_eq!(host["SecurityOpt"], json!(["no-new-privileges:true"]));

    // The worker process itself (tini's child), as the kernel sees it.
    let tini = inspect[0]["State"]["Pid"].as_u64().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{tini}/task/{tini}/children")).unwrap();
    let pid = children
        .split_whitespace()
        .next()
        .expect("tini has no child");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap()
            .trim()
            .to_string()
    };
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap()
            .contains("borgmatic-mqtt"),
        "tini's child is not the worker"
    );
    for cap in ["CapEff", "CapBnd", "CapPrm"] {
        assert_eq!(
            u64::from_str_radix(&field(cap), 16).unwrap(),
            CAPS,
            "{cap} of the worker"
        );
    }
    assert_eq!(field("NoNewPrivs"), "1");
    let out = engine.docker(&["exec", worker, "touch", "/probe"]);
    assert!(!out.status.success(), "the root filesystem is writable");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));
}

fn the_override_changes_only_images_and_mount_sources(project: &Project) {
    let config = |base_only: bool| -> Yaml {
        let out = project.compose_with(base_only, &["config"]);
        assert!(out.status.success(), "{out:?}");
        serde_yaml_ng::from_slice(&out.stdout).unwrap()
    };
    let swapped = ["/var/run/docker.sock", "/mnt/backup", "/mnt/ncdata"];
    let normalise = |mut v: Yaml| -> Yaml {
        let services = v["services"].as_mapping_mut().unwrap();
        for (_, s) in services.iter_mut() {
            let s = s.as_mapping_mut().unwrap();
            s.remove("image");
            if let Some(Yaml::Sequence(vols)) = s.get_mut("volumes") {
                for vol in vols.iter_mut() {
                    let text = vol.as_str().unwrap().to_string();
                    let parts: Vec<&str> = text.split(':').collect();
                    if parts.len() >= 2 && swapped.contains(&parts[1]) {
                        *vol = Yaml::String(format!("<test>:{}", parts[1..].join(":")));
                    }
                }
            }
        }
        v
    };
    // Order and `null` versus `{}` differ between the two outputs and mean nothing.
    fn canonical(v: Yaml) -> Yaml {
        match v {
            Yaml::Null => Yaml::Mapping(Default::default()),
            Yaml::Mapping(m) => {
                Yaml::Mapping(m.into_iter().map(|(k, v)| (k, canonical(v))).collect())
            }
            Yaml::Sequence(s) => {
                let mut s: Vec<Yaml> = s.into_iter().map(canonical).collect();
                s.sort_by_key(|v| format!("{v:?}"));
                Yaml::Sequence(s)
            }
            v => v,
        }
    }
    let base = config(true);
    let merged = config(false);
    assert_ne!(base, merged, "the override swapped nothing");
    assert_eq!(
        canonical(normalise(base)),
        canonical(normalise(merged)),
        "the override changes more than images and the test's host paths"
    );
}

fn the_socket_proxy_is_unreachable_from_the_brokers_network(engine: &Engine, project: &Project) {
    let proxy = project.container("docker-proxy");
    let ip = engine.ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &proxy,
    ]);
    assert!(!ip.is_empty() && !ip.contains(' '), "proxy address {ip:?}");
    let probe = format!("exec 3<>/dev/tcp/{ip}/2375");
    let broker = project.container("mosquitto");
    let out = engine.docker(&["exec", &broker, "timeout", "5", "bash", "-c", &probe]);
    assert!(
        !out.status.success(),
        "the broker's container reached the socket proxy"
    );
    let dns = engine.docker(&["exec", &broker, "getent", "hosts", "docker-proxy"]);
    assert!(!dns.status.success(), "the broker resolves docker-proxy");
    // The same probe from the worker's container does connect: the probe works.
    engine.docker(&["start", &project.container("borgmatic-mqtt")]);
    let out = engine.docker(&[
        "exec",
        &project.container("borgmatic-mqtt"),
        "timeout",
        "5",
        "bash",
        "-c",
        &probe,
    ]);
    assert!(
        out.status.success(),
        "the worker cannot reach the proxy: {out:?}"
    );
}

fn the_worker_refuses_to_start_without_its_secrets(project: &Project) {
    for (var, says) in [
        ("BMQTT_AUTH__READ_TOKEN_FILE", "BMQTT_AUTH__READ_TOKEN"),
        ("BMQTT_AUTH__WRITE_TOKEN_FILE", "BMQTT_AUTH__WRITE_TOKEN"),
        ("BMQTT_MQTT__PASSWORD_FILE", "mqtt.password_file"),
        (
            "BMQTT_REPOSITORIES__NEXTCLOUD__PASSPHRASE_FILE",
            "repositories.nextcloud.passphrase_file",
        ),
    ] {
        let missing = format!("{var}=/run/secrets/missing");
        let out = project.compose(&[
            "run",
            "--rm",
            "--no-deps",
            "-T",
            "-e",
            &missing,
            "borgmatic-mqtt",
        ]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{var}: {text}");
        assert!(text.contains(says), "{var}: {text}");
    }
}

fn write_borgmatic_configs(project: &Project) {
    std::fs::write(
        project.path("borgmatic.d/nextcloud.yaml"),
        "source_directories:\n  - /mnt/ncdata\n\
         repositories:\n  - path: /mnt/backup/nextcloud\n    label: nextcloud\n\
         numeric_ids: true\nkeep_daily: 7\n",
    )
    .unwrap();
    // A job that is still running when the container stops.
    std::fs::write(
        project.path("borgmatic.d/slow.yaml"),
        "source_directories:\n  - /mnt/ncdata\n\
         repositories:\n  - path: /mnt/backup/slow\n    label: slow\n\
         numeric_ids: true\n\
         commands:\n  - before: action\n    when: [create]\n    run:\n      - sleep 600\n",
    )
    .unwrap();
}

/// One file system entry as the test compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: char,
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: (i64, i64),
    content: String,
}

fn hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_tree(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        let meta = std::fs::symlink_metadata(dir).unwrap();
        let rel = dir
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let ft = meta.file_type();
        let (kind, content) = if ft.is_symlink() {
            ('l', std::fs::read_link(dir).unwrap().display().to_string())
        } else if ft.is_dir() {
            ('d', String::new())
        } else {
            ('f', hash(&std::fs::read(dir).unwrap()))
        };
        out.insert(
            rel,
            Entry {
                kind,
                uid: meta.uid(),
                gid: meta.gid(),
                mode: meta.mode() & 0o7777,
                // A symlink's own mtime is not restored by borg 1.2 everywhere.
                mtime: if kind == 'l' {
                    (0, 0)
                } else {
                    (meta.mtime(), meta.mtime_nsec())
                },
                content,
            },
        );
        if kind == 'd' {
            for e in std::fs::read_dir(dir).unwrap() {
                walk(root, &e.unwrap().path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Nextcloud's data as AIO keeps it: www-data (33) owns it, directories 0750,
/// files 0640; distinct mtimes with nanoseconds, an empty file, a name with
/// spaces, a symbolic link.
fn make_nextcloud_tree(root: &Path) -> BTreeMap<String, Entry> {
    let files: [(&str, Vec<u8>); 4] = [
        (
            "data/admin/files/Documents/report.txt",
            b"quarterly report\n".to_vec(),
        ),
        (
            "data/admin/files/Photos/holiday.bin",
            (0..300_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
        (
            "data/admin/files/name with spaces.md",
            b"# notes\n".to_vec(),
        ),
        ("data/nextcloud.log", Vec::new()),
    ];
    for (path, bytes) in &files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    std::os::unix::fs::symlink("Documents/report.txt", root.join("data/admin/files/latest"))
        .unwrap();
    let sh = |script: &str| {
        let ok = Command::new("sh")
            .args(["-ec", script])
            .current_dir(root)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    };
    sh(
        "chown -hR 33:33 data && find data -type d -exec chmod 0750 {} + \
        && find data -type f -exec chmod 0640 {} +",
    );
    // Deepest first, so that setting a file's time does not change its directory's.
    let mut all: Vec<String> = read_tree(root).into_keys().collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count() + usize::from(!p.is_empty())));
    for (i, rel) in all.iter().enumerate() {
        let target = if rel.is_empty() {
            ".".to_string()
        } else {
            rel.clone()
        };
        let stamp = format!(
            "@{}.{:09}",
            1_700_000_000 + i as i64 * 3_600,
            123_456_789 + i
        );
        let ok = Command::new("touch")
            .args(["-h", "-d", &stamp])
            .arg(&target)
            .current_dir(root)
            .status()
            .unwrap()
            .success();
        assert!(ok, "touch {target}");
    }
    read_tree(root)
}
