//! Shared test helpers: a real Mosquitto broker per test, real borg repositories made
//! by real borgmatic, the worker (in-process or the binary), and an MQTT v5 client
//! that records everything it receives. One file per component; everything is
//! re-exported here, so a test says `use crate::helpers::*`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub mod app;
pub mod broker;
pub mod client;
pub mod docker;
pub mod heavy;
pub mod homeassistant;
pub mod http;
pub mod repos;
pub mod scenario;
pub mod ssh;
pub mod stack;
pub mod worker;

pub use app::TestApp;
pub use broker::*;
pub use client::*;
pub use http::*;
pub use repos::*;
pub use scenario::*;
pub use ssh::*;
pub use worker::*;

pub const READ_TOKEN: &str = "read-token-0123456789abcdef-RRRR";
pub const WRITE_TOKEN: &str = "write-token-0123456789abcdef-WWWW";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef-AAAA";
pub const WORKER_PASSWORD: &str = "worker-broker-password-5678";
pub const CLIENT_PASSWORD: &str = "client-broker-password-1234";
pub const PASSPHRASE: &str = "borg-passphrase-never-shown-9876";
pub const HA_PASSWORD: &str = "homeassistant-broker-password-42";

/// The password of a shipped broker user ([`Broker::start_shipped`]).
pub fn shipped_password(user: &str) -> String {
    format!("{user}-shipped-broker-password-31")
}

/// How long any single expected event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Every secret the tests use: none may appear in anything published or logged.
pub fn secrets() -> Vec<&'static str> {
    vec![
        READ_TOKEN,
        WRITE_TOKEN,
        ADMIN_TOKEN,
        WORKER_PASSWORD,
        CLIENT_PASSWORD,
        PASSPHRASE,
        HA_PASSWORD,
    ]
}

/// A port free right now. Bind-drop-reuse: only for servers that cannot bind port 0
/// and report it (Mosquitto, sshd, Home Assistant); their helpers retry on a
/// collision. The worker binds port 0 itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// The borgmatic binary: `BORGMATIC_BIN`, else the project's `.venv`.
pub fn borgmatic_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BORGMATIC_BIN") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/borgmatic");
    assert!(
        venv.exists(),
        "borgmatic not found at {}: run scripts/setup (or set BORGMATIC_BIN)",
        venv.display()
    );
    venv
}

pub(crate) fn require(bin: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(found, "{bin} is not installed: run scripts/setup");
}

/// Whether FUSE mounts can run here (`/dev/fuse` and `fusermount`). Without them a
/// test says loudly that it did not mount, and fails under `CI=true` (`.ci/run`
/// installs fuse3; CI machines have `/dev/fuse`).
pub fn fuse_or_skip(test: &str) -> bool {
    let fuse = Path::new("/dev/fuse").exists()
        && Command::new("sh")
            .args(["-c", "command -v fusermount || command -v fusermount3"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if !fuse {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{test}: FUSE is not available, and CI must run the mount tests"
        );
        eprintln!("!!! {test}: FUSE is not available here: the mount was NOT tested !!!");
    }
    fuse
}

/// Worker settings that enable the admin role.
pub const WITH_ADMIN: (&str, &str) = ("BMQTT_AUTH__ADMIN_TOKEN", ADMIN_TOKEN);

/// Asserts that no test secret occurs in `text`.
pub fn assert_no_secrets(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(s), "{what} contains a secret ({}…)", &s[..6]);
    }
}

/// Processes whose command line mentions `needle` (borgmatic's config path, borg's
/// repository path, a hook's command), as `pgrep -a` lists them (pgrep itself
/// excluded).
pub fn processes_with(needle: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-a", "-f", needle])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(str::to_string)
        .collect()
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(made, "mkfifo {} failed", path.display());
}

pub(crate) fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on port {port}");
}

pub fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("w{:x}{:x}", n, std::process::id())
}

/// Waits until the process `child` itself listens on every one of `ports` on
/// 127.0.0.1 (its own sockets in /proc, so another process that took the port
/// cannot pass for it); `Err` with its exit status when it exited first.
pub(crate) fn wait_listening(
    child: &mut std::process::Child,
    ports: &[u16],
) -> Result<(), std::process::ExitStatus> {
    for _ in 0..400 {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(status);
        }
        if ports.iter().all(|p| listens(child.id(), *p)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("process {} does not listen on {ports:?}", child.id());
}

/// Whether process `pid` holds a socket listening on 127.0.0.1:`port`.
fn listens(pid: u32, port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
            })
        })
        .unwrap_or(false)
}
