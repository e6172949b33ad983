//! The project's docker-compose stack on a real Docker engine, without a registry:
//! a private `dockerd` in its own network namespace (docker/test/engine), stand-in
//! images built from a local Debian base (docker/test/), and the project's own
//! `docker-compose.yml` plus docker/test/docker-compose.override.yml, which only
//! swaps images and host paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

/// The engine's network namespace (docker/test/engine).
pub const NETNS: &str = "/run/netns/bmqtt-stack";
/// The compose project name.
pub const PROJECT: &str = "bmqttstack";
/// Debian's docker.io CLI: BuildKit is built in (newer CLIs need the buildx
/// plugin), and only BuildKit skips the Dockerfile stages the test replaces.
const CLI: &str = "/usr/bin/docker";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn found(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this machine can run the stack (root, dockerd, mmdebstrap, nsenter,
/// docker-compose). Under `CI=true` a missing piece fails the test.
pub fn runnable_or_skip(test: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut missing: Vec<&str> = ["dockerd", "mmdebstrap", "nsenter", "ip", "docker-compose"]
        .into_iter()
        .filter(|b| !found(b))
        .collect();
    if !Path::new(CLI).exists() {
        missing.push(CLI);
    }
    if root && missing.is_empty() {
        return true;
    }
    let why = if root {
        format!("missing {missing:?} (run scripts/setup)")
    } else {
        "it needs root (a private dockerd in a network namespace)".to_string()
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot run: {why}; CI must run the stack test");
    }
    eprintln!("!!! {test} DID NOT RUN: {why} !!!");
    false
}

/// The private engine; stopped again when dropped.
pub struct Engine {
    pub host: String,
    /// The private engine runs beside no other heavy test.
    _turn: super::heavy::HeavyTurn,
}

impl Engine {
    pub fn start() -> Engine {
        let turn = super::heavy::turn();
        let out = Command::new(repo_root().join("docker/test/engine"))
            .arg("start")
            .output()
            .expect("cannot run docker/test/engine");
        assert!(
            out.status.success(),
            "the stack's dockerd did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Engine {
            host: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            _turn: turn,
        }
    }

    /// `docker …` against this engine (never the default socket).
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(CLI)
            .env("DOCKER_HOST", &self.host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run docker")
    }

    /// `docker …` that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn has_image(&self, tag: &str) -> bool {
        self.docker(&["image", "inspect", tag]).status.success()
    }

    /// Removes the other tags of `tag`'s repository (old builds), so that the
    /// cache does not grow with every change of the worker.
    fn prune_others(&self, tag: &str) {
        let repo = tag.split(':').next().unwrap_or(tag);
        let listed = self.ok(&["images", repo, "--format", "{{.Repository}}:{{.Tag}}"]);
        for old in listed.lines().filter(|t| *t != tag) {
            let _ = self.docker(&["rmi", old]);
        }
        let _ = self.docker(&["image", "prune", "-f"]);
    }

    fn build(&self, tag: &str, buildkit: bool, args: &[&str]) {
        if self.has_image(tag) {
            return;
        }
        let out = Command::new(CLI)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_BUILDKIT", if buildkit { "1" } else { "0" })
            .args(["build", "-q", "-t", tag])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run docker build");
        assert!(
            out.status.success(),
            "docker build {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.prune_others(tag);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("docker/test/engine"))
            .arg("stop")
            .status();
    }
}

fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The images the stack runs, tagged by a digest of their inputs: a second run
/// with the same inputs builds nothing.
pub struct Images {
    pub mosquitto: String,
    pub proxy: String,
    pub worker: String,
}

impl Images {
    pub fn build(engine: &Engine) -> Images {
        let base = format!(
            "bmqtt-stack/base:{}",
            digest(&[&read("docker/test/make-base")])
        );
        if !engine.has_image(&base) {
            eprintln!("stack: making {base} with mmdebstrap (a few minutes, once)");
            let ok = Command::new(repo_root().join("docker/test/make-base"))
                .arg(&base)
                .env("DOCKER_HOST", &engine.host)
                .status()
                .expect("cannot run docker/test/make-base")
                .success();
            assert!(ok, "docker/test/make-base failed");
            engine.prune_others(&base);
        }
        let test_dir = repo_root().join("docker/test");
        let test_dir = test_dir.to_str().unwrap();
        let base_arg = format!("BASE={base}");

        let mosquitto = format!(
            "bmqtt-stack/mosquitto:{}",
            digest(&[base.as_bytes(), &read("docker/test/mosquitto.Dockerfile")])
        );
        let file = format!("{test_dir}/mosquitto.Dockerfile");
        engine.build(
            &mosquitto,
            false,
            &["--build-arg", &base_arg, "-f", &file, test_dir],
        );

        let proxy = format!(
            "bmqtt-stack/proxy:{}",
            digest(&[
                base.as_bytes(),
                &read("docker/test/socket-proxy.Dockerfile"),
                &read("docker/test/haproxy.cfg"),
            ])
        );
        let file = format!("{test_dir}/socket-proxy.Dockerfile");
        engine.build(
            &proxy,
            false,
            &["--build-arg", &base_arg, "-f", &file, test_dir],
        );

        // The worker as cargo built it for this test, stripped (a sixth of the size).
        let ctx = tempfile::tempdir().unwrap();
        let bin = ctx.path().join("borgmatic-mqtt");
        std::fs::copy(env!("CARGO_BIN_EXE_borgmatic-mqtt"), &bin).unwrap();
        assert!(Command::new("strip").arg(&bin).status().unwrap().success());
        std::fs::copy(
            repo_root().join("docker/test/binary.Dockerfile"),
            ctx.path().join("Dockerfile"),
        )
        .unwrap();
        let binary = format!(
            "bmqtt-stack/binary:{}",
            digest(&[&std::fs::read(&bin).unwrap()])
        );
        engine.build(&binary, false, &[ctx.path().to_str().unwrap()]);

        // The project's own Dockerfile, its runtime stage on the local base.
        let worker = format!(
            "bmqtt-stack/worker:{}",
            digest(&[
                base.as_bytes(),
                binary.as_bytes(),
                &read("Dockerfile"),
                &read("docker/entrypoint.sh"),
            ])
        );
        let root = repo_root();
        engine.build(
            &worker,
            true,
            &[
                "--build-arg",
                &format!("RUNTIME_BASE={base}"),
                "--build-arg",
                &format!("WORKER_BINARY={binary}"),
                root.to_str().unwrap(),
            ],
        );
        Images {
            mosquitto,
            proxy,
            worker,
        }
    }
}

/// A compose project in a temporary directory: the repository's compose file and
/// Mosquitto files copied byte for byte, secrets and certificates made by the
/// README's commands.
pub struct Project {
    pub dir: tempfile::TempDir,
    host: String,
    images: (String, String, String),
}

impl Project {
    pub fn new(engine: &Engine, images: &Images) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("mosquitto")).unwrap();
        std::fs::copy(
            repo_root().join("docker-compose.yml"),
            d.join("docker-compose.yml"),
        )
        .unwrap();
        std::fs::copy(
            repo_root().join("docker/test/docker-compose.override.yml"),
            d.join("override.yml"),
        )
        .unwrap();
        for f in ["mosquitto.conf", "acl", "make-passwd", "make-certs"] {
            std::fs::copy(
                repo_root().join("mosquitto").join(f),
                d.join("mosquitto").join(f),
            )
            .unwrap();
        }
        for dir in ["borgmatic.d", "restore", "ssh", "backup", "ncdata"] {
            std::fs::create_dir_all(d.join(dir)).unwrap();
        }
        let p = Project {
            dir,
            host: engine.host.clone(),
            images: (
                images.mosquitto.clone(),
                images.proxy.clone(),
                images.worker.clone(),
            ),
        };
        // The README's steps, verbatim.
        p.sh("mosquitto/make-passwd secrets >/dev/null");
        p.sh("mosquitto/make-certs localhost 127.0.0.1 >/dev/null");
        p.sh("for t in read_token write_token admin_token; do openssl rand -hex 24 > secrets/$t; done");
        p.sh("printf '%s' \"$(openssl rand -hex 16)\" > secrets/borg_passphrase");
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A secret file's value (`openssl rand -hex` ends it with a newline, which the
    /// worker trims).
    pub fn secret(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("secrets/{name}")))
            .unwrap()
            .trim()
            .to_string()
    }

    /// A shell command in the project directory that must succeed.
    pub fn sh(&self, script: &str) {
        let out = Command::new("sh")
            .args(["-ec", script])
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `docker-compose` with the project's file, plus the override unless `base_only`.
    pub fn compose_with(&self, base_only: bool, args: &[&str]) -> Output {
        let mut c = Command::new("docker-compose");
        c.current_dir(self.dir.path())
            .env("DOCKER_HOST", &self.host)
            .env("BMQTT_STACK_MOSQUITTO_IMAGE", &self.images.0)
            .env("BMQTT_STACK_PROXY_IMAGE", &self.images.1)
            .env("BMQTT_STACK_WORKER_IMAGE", &self.images.2)
            .env(
                "BMQTT_STACK_ENGINE_SOCKET",
                self.host.trim_start_matches("unix://"),
            )
            .env("BMQTT_STACK_DIR", self.dir.path())
            .args(["-p", PROJECT, "-f", "docker-compose.yml"]);
        if !base_only {
            c.args(["-f", "override.yml"]);
        }
        c.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run docker-compose")
    }

    pub fn compose(&self, args: &[&str]) -> Output {
        self.compose_with(false, args)
    }

    pub fn compose_ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The container of a compose service.
    pub fn container(&self, service: &str) -> String {
        format!("{PROJECT}_{service}_1")
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
    }
}

/// Runs `f` on a thread inside the engine's network namespace, where the compose
/// file's published ports are (127.0.0.1:8883); processes it starts are there too.
pub fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(NETNS).expect("the stack's network namespace is missing");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("cannot enter the stack's network namespace");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
