//! Shared test helpers: a real Mosquitto broker per test, real borg repositories made
//! by real borgmatic, the real worker binary, and an MQTT v5 client that records
//! everything it receives.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};
use tokio::sync::broadcast;

pub mod docker;
pub mod homeassistant;
pub mod stack;

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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
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

fn require(bin: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(found, "{bin} is not installed: run scripts/setup");
}

/// A real Mosquitto on a free loopback port with a password file and an ACL.
pub struct Broker {
    pub port: u16,
    /// The TLS listener's port, when started with [`Broker::start_tls`].
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_with(false, false, "")
    }

    /// With the project's own `mosquitto/acl` and its users (`borgmatic`, `nodered`,
    /// `homeassistant`, passwords from [`shipped_password`]), plus the test's
    /// observer `client`, which may read everything and send commands.
    pub fn start_shipped() -> Broker {
        Self::start_with(false, true, "")
    }

    /// With extra `mosquitto.conf` lines (e.g. `max_packet_size 4096`).
    pub fn start_with_config(extra: &str) -> Broker {
        Self::start_with(false, false, extra)
    }

    /// Also listens with TLS (a throwaway CA and a server certificate for
    /// `localhost`); the CA is at [`Broker::ca_file`].
    pub fn start_tls() -> Broker {
        Self::start_with(true, false, "")
    }

    /// A handle for a broker started elsewhere (connection details only).
    pub fn at_port(port: u16) -> Broker {
        Broker {
            port,
            tls_port: None,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// With persistence on (saved every second and on exit, in the broker's dir):
    /// sessions, queued messages and retained messages survive a restart.
    pub fn start_persistent() -> Broker {
        Self::start_with(false, false, "persistence true\nautosave_interval 1\n")
    }

    /// Stops the broker with SIGTERM (it saves its persistence file) and waits.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    fn start_with(tls: bool, shipped: bool, extra: &str) -> Broker {
        require("mosquitto");
        require("mosquitto_passwd");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let pw = dir.path().join("passwd");
        let mut users = vec![
            ("worker".to_string(), WORKER_PASSWORD.to_string()),
            ("client".to_string(), CLIENT_PASSWORD.to_string()),
            ("homeassistant".to_string(), HA_PASSWORD.to_string()),
        ];
        if shipped {
            users.retain(|(u, _)| u == "client");
            for u in ["borgmatic", "nodered", "homeassistant"] {
                users.push((u.to_string(), shipped_password(u)));
            }
        }
        for (i, (user, pass)) in users.iter().enumerate() {
            let mut c = Command::new("mosquitto_passwd");
            if i == 0 {
                c.arg("-c");
            }
            let ok = c
                .args(["-b", pw.to_str().unwrap(), user, pass])
                .status()
                .unwrap()
                .success();
            assert!(ok, "mosquitto_passwd failed");
        }
        let acl = if shipped {
            let project = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto/acl"),
            )
            .unwrap();
            format!("{project}\nuser client\ntopic read #\ntopic write borgmatic/+/cmd/#\n")
        } else {
            "user worker\ntopic readwrite test/#\n\n\
             user client\ntopic write test/+/cmd/#\ntopic read test/#\n\n\
             user homeassistant\ntopic write test/+/ha/#\ntopic write test/+/homeassistant/status\ntopic read test/#\n"
                .to_string()
        };
        std::fs::write(dir.path().join("acl"), acl).unwrap();
        // Running as root, Mosquitto drops to user `mosquitto` and could not read the
        // 0700 temp dir: tell it to stay root.
        let user_line = if nix_is_root() { "user root\n" } else { "" };
        let tls_port = tls.then(free_port);
        let tls_block = match tls_port {
            Some(p) => {
                make_certificates(dir.path());
                let d = dir.path().display();
                format!(
                    "listener {p} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n"
                )
            }
            None => String::new(),
        };
        std::fs::write(
            dir.path().join("mosquitto.conf"),
            format!(
                "{user_line}per_listener_settings false\nlistener {port} 127.0.0.1\n{tls_block}\
                 allow_anonymous false\n\
                 password_file {}\nacl_file {}\n{}\n\
                 max_inflight_messages 1000\nmax_queued_messages 100000\nset_tcp_nodelay true\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n{extra}\n",
                pw.display(),
                dir.path().join("acl").display(),
                if extra.contains("persistence true") {
                    format!("persistence_location {}/", dir.path().display())
                } else {
                    "persistence false".to_string()
                }
            ),
        )
        .unwrap();
        let mut b = Broker {
            port,
            tls_port,
            dir,
            child: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto");
        self.child = Some(child);
        wait_for_port(self.port);
        if let Some(p) = self.tls_port {
            wait_for_port(p);
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills (SIGKILL) and starts again on the same port (retained messages are
    /// lost unless started with [`Broker::start_persistent`]).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a server certificate for `localhost`, made with openssl.
fn make_certificates(dir: &Path) {
    require("openssl");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
}

fn nix_is_root() -> bool {
    // SAFETY-free: read the effective uid through `id -u`.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on port {port}");
}

/// A borgmatic config directory with real repositories in a temp dir.
pub struct Repos {
    pub dir: tempfile::TempDir,
}

impl Repos {
    pub fn new() -> Repos {
        require("borg");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("borgmatic.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("borg-base")).unwrap();
        std::fs::create_dir_all(dir.path().join("restore")).unwrap();
        std::fs::create_dir_all(dir.path().join("mnt")).unwrap();
        Repos { dir }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("borgmatic.d")
    }
    pub fn restore_root(&self) -> PathBuf {
        self.dir.path().join("restore")
    }
    pub fn mount_root(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
    pub fn repo_path(&self, label: &str) -> PathBuf {
        self.dir.path().join(format!("repo-{label}"))
    }
    pub fn source(&self, label: &str) -> PathBuf {
        self.dir.path().join(format!("src-{label}"))
    }
    /// Environment for borg and borgmatic run by tests and the worker: an isolated
    /// cache and config, so tests never share borg state.
    pub fn borg_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "BORG_BASE_DIR".into(),
                self.dir.path().join("borg-base").display().to_string(),
            ),
            (
                "BORGMATIC_STATE_DIR".into(),
                self.dir.path().join("bm-state").display().to_string(),
            ),
        ]
    }

    /// Creates an encrypted repository labelled `label` with a few source files; the
    /// passphrase is NOT in the borgmatic config: the worker hands it over.
    /// `extra` is appended to the borgmatic YAML.
    pub fn add(&self, label: &str, extra: &str) {
        let src = self.source(label);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("hello.txt"), "hello world\n").unwrap();
        std::fs::write(src.join("data.bin"), vec![7u8; 200_000]).unwrap();
        let cfg = self.config_dir().join(format!("{label}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "source_directories:\n  - {}\nrepositories:\n  - path: {}\n    label: {label}\n\
                 {}{extra}",
                src.display(),
                self.repo_path(label).display(),
                if extra.contains("keep_") {
                    ""
                } else {
                    "keep_daily: 7\n"
                }
            ),
        )
        .unwrap();
        let out = self
            .borgmatic(&cfg, &["repo-create", "--encryption", "repokey-blake2"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "repo-create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn borgmatic(&self, cfg: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(borgmatic_bin());
        c.arg("--config").arg(cfg).args(args);
        c.envs(self.borg_env()).env("BORG_PASSPHRASE", PASSPHRASE);
        c
    }

    pub fn borg(&self, args: &[&str]) -> std::process::Output {
        self.borg_with(PASSPHRASE, args)
    }

    pub fn borg_with(&self, passphrase: &str, args: &[&str]) -> std::process::Output {
        Command::new("borg")
            .args(args)
            .envs(self.borg_env())
            .env("BORG_PASSPHRASE", passphrase)
            // Tests reach one repository both locally and over SSH.
            .env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes")
            .output()
            .unwrap()
    }

    /// Archive names, straight from borg.
    pub fn archives(&self, label: &str) -> Vec<String> {
        let out = self.borg(&["list", "--short", self.repo_path(label).to_str().unwrap()]);
        assert!(
            out.status.success(),
            "borg list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Whether `borg check` passes on the repository.
    pub fn check(&self, label: &str) -> bool {
        let out = self.borg(&["check", self.repo_path(label).to_str().unwrap()]);
        if !out.status.success() {
            eprintln!("borg check: {}", String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    }
}

/// The worker binary, started against a broker and a config directory.
pub struct Worker {
    pub base: String,
    pub state_dir: tempfile::TempDir,
    pub log_file: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

impl Worker {
    pub fn env(broker: &Broker, repos: &Repos) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("BMQTT_MQTT__HOST".into(), "127.0.0.1".into()),
            ("BMQTT_MQTT__PORT".into(), broker.port.to_string()),
            ("BMQTT_MQTT__USERNAME".into(), "worker".into()),
            ("BMQTT_MQTT__PASSWORD".into(), WORKER_PASSWORD.into()),
            ("BMQTT_MQTT__RECONNECT_MAX_SECS".into(), "1".into()),
            ("BMQTT_AUTH__READ_TOKEN".into(), READ_TOKEN.into()),
            ("BMQTT_AUTH__WRITE_TOKEN".into(), WRITE_TOKEN.into()),
            (
                "BMQTT_BORGMATIC__CONFIG_DIR".into(),
                repos.config_dir().display().to_string(),
            ),
            (
                "BMQTT_BORGMATIC__BINARY".into(),
                borgmatic_bin().display().to_string(),
            ),
            ("BMQTT_HTTP__LISTEN".into(), "off".into()),
            (
                "BMQTT_BORGMATIC__RESTORE_ROOT".into(),
                repos.restore_root().display().to_string(),
            ),
            (
                "BMQTT_BORGMATIC__MOUNT_ROOT".into(),
                repos.mount_root().display().to_string(),
            ),
            ("BMQTT_JOBS__KILL_GRACE_SECS".into(), "10".into()),
            ("BMQTT_LOG__LEVEL".into(), "debug".into()),
        ];
        // Every repository gets the passphrase from the worker's configuration.
        for entry in std::fs::read_dir(repos.config_dir()).unwrap().flatten() {
            let name = entry.file_name().into_string().unwrap();
            if let Some(label) = name.strip_suffix(".yaml") {
                env.push((
                    format!("BMQTT_REPOSITORIES__{}__PASSPHRASE", label.to_uppercase()),
                    PASSPHRASE.into(),
                ));
            }
        }
        env.extend(repos.borg_env());
        env
    }

    /// Starts the worker and waits for its retained `online`.
    pub async fn start(broker: &Broker, repos: &Repos, extra: &[(&str, &str)]) -> Worker {
        Self::start_at(broker, repos, &format!("test/{}", uuid_like()), extra).await
    }

    /// Like [`Worker::start`], under the given base topic (`extra` may override the
    /// broker user, e.g. the shipped `borgmatic`).
    pub async fn start_at(
        broker: &Broker,
        repos: &Repos,
        base: &str,
        extra: &[(&str, &str)],
    ) -> Worker {
        let mut env = Worker::env(broker, repos);
        for (k, v) in extra {
            env.retain(|(k2, _)| k2 != k);
            env.push((k.to_string(), v.to_string()));
        }
        Worker::start_env_at(broker, env, base).await
    }

    /// Starts the worker with exactly `env` (plus its own base topic and state dir),
    /// e.g. [`Worker::env`] with some settings removed.
    pub async fn start_env(broker: &Broker, env: Vec<(String, String)>) -> Worker {
        Worker::start_env_at(broker, env, &format!("test/{}", uuid_like())).await
    }

    async fn start_env_at(broker: &Broker, env: Vec<(String, String)>, base: &str) -> Worker {
        let mut w = Worker::prepare(env, base);
        w.spawn_and_wait(broker).await;
        w
    }

    /// Starts the worker without waiting for `online`: for a test that plays the
    /// broker itself (see [`Broker::at_port`]).
    pub fn launch(broker: &Broker, repos: &Repos) -> Worker {
        let mut w = Worker::prepare(Worker::env(broker, repos), &format!("test/{}", uuid_like()));
        w.spawn();
        w
    }

    fn prepare(mut env: Vec<(String, String)>, base: &str) -> Worker {
        let base = base.to_string();
        env.push(("BMQTT_MQTT__BASE_TOPIC".into(), base.clone()));
        let state_dir = tempfile::tempdir().unwrap();
        // A test may give its own state dir (a small or read-only file system).
        if !env.iter().any(|(k, _)| k == "BMQTT_STATE_DIR") {
            env.push((
                "BMQTT_STATE_DIR".into(),
                state_dir.path().display().to_string(),
            ));
        }
        let log_file = state_dir.path().join("worker.log");
        Worker {
            base,
            state_dir,
            log_file,
            child: None,
            env,
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_borgmatic-mqtt"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .envs(self.env.iter().cloned())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start the worker");
        self.child = Some(child);
    }

    async fn spawn_and_wait(&mut self, broker: &Broker) {
        let watcher = Client::connect(broker).await;
        watcher.subscribe(&format!("{}/status", self.base)).await;
        self.spawn();
        let topic = format!("{}/status", self.base);
        watcher
            .wait_for(|m| m.topic == topic && m.payload == b"online".as_slice())
            .await;
    }

    /// The worker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the worker with SIGKILL (no clean shutdown).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("worker not running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().unwrap()
    }

    /// Starts the same worker again (same state dir, same base topic).
    pub async fn restart(&mut self, broker: &Broker) {
        self.kill9();
        self.spawn_and_wait(broker).await;
    }

    pub fn topic(&self, rest: &str) -> String {
        format!("{}/{rest}", self.base)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
        // A failing test shows the end of the worker's log: CI keeps nothing else.
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- worker log (last {} lines) ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

pub fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("w{:x}{:x}", n, std::process::id())
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub correlation: Option<Bytes>,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {:?}", self.topic, self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).to_string()
    }
}

/// An MQTT v5 client (user `client`) that records every message it receives.
#[derive(Clone)]
pub struct Client {
    pub client: AsyncClient,
    tx: broadcast::Sender<Msg>,
    subacks: broadcast::Sender<()>,
    /// Whether each PubAck said the publish was authorised.
    pubacks: broadcast::Sender<bool>,
    pub seen: Arc<Mutex<Vec<Msg>>>,
}

impl Client {
    pub async fn connect(broker: &Broker) -> Client {
        Self::connect_as(broker, "client", CLIENT_PASSWORD).await
    }

    pub async fn connect_as(broker: &Broker, user: &str, password: &str) -> Client {
        let mut o = MqttOptions::new(uuid_like(), "127.0.0.1", broker.port);
        o.set_credentials(user, password);
        Self::connect_with(o).await
    }

    /// Connects over TLS to `host:port`, trusting only the CA in `ca_file`; the
    /// server's certificate must name `host`.
    pub async fn connect_tls(
        host: &str,
        port: u16,
        ca_file: &Path,
        user: &str,
        password: &str,
    ) -> Client {
        let mut o = MqttOptions::new(uuid_like(), host, port);
        o.set_credentials(user, password);
        let ca = std::fs::read(ca_file).expect("cannot read the CA file");
        o.set_transport(rumqttc::Transport::tls(ca, None, None));
        Self::connect_with(o).await
    }

    async fn connect_with(mut o: MqttOptions) -> Client {
        o.set_keep_alive(Duration::from_secs(10));
        o.set_max_packet_size(Some(64 * 1024 * 1024));
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        o.set_network_options(net);
        let (client, mut eventloop) = AsyncClient::new(o, 1024);
        let (tx, _) = broadcast::channel(1 << 16);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let tx2 = tx.clone();
        let seen2 = seen.clone();
        let (subacks, _) = broadcast::channel(64);
        let subacks2 = subacks.clone();
        let (pubacks, _) = broadcast::channel(64);
        let pubacks2 = pubacks.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subacks2.send(());
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        use rumqttc::v5::mqttbytes::v5::PubAckReason;
                        let _ = pubacks2.send(!matches!(a.reason, PubAckReason::NotAuthorized));
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let m = Msg {
                            topic: String::from_utf8_lossy(&p.topic).to_string(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            correlation: p.properties.and_then(|pr| pr.correlation_data),
                        };
                        seen2.lock().unwrap().push(m.clone());
                        let _ = tx2.send(m);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("client did not connect")
            .unwrap();
        Client {
            client,
            tx,
            subacks,
            pubacks,
            seen,
        }
    }

    /// Subscribes and waits for the broker's SubAck, so nothing published after
    /// this returns can be missed.
    pub async fn subscribe(&self, filter: &str) {
        let mut acks = self.subacks.subscribe();
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        tokio::time::timeout(WAIT, acks.recv())
            .await
            .expect("no SubAck")
            .unwrap();
    }

    /// Publishes at QoS 1 and returns whether the broker authorised it (the PubAck's
    /// reason code; MQTT v5). One at a time per client.
    pub async fn publish_authorized(&self, topic: &str, payload: &str) -> bool {
        let mut acks = self.pubacks.subscribe();
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await
            .unwrap();
        tokio::time::timeout(WAIT, acks.recv())
            .await
            .expect("no PubAck")
            .unwrap()
    }

    /// Waits for a message matching `pred` among messages arriving from now on or
    /// already seen.
    pub async fn wait_for(&self, pred: impl Fn(&Msg) -> bool) -> Msg {
        let mut rx = self.tx.subscribe();
        if let Some(m) = self.seen.lock().unwrap().iter().find(|m| pred(m)) {
            return m.clone();
        }
        tokio::time::timeout(WAIT, async {
            loop {
                match rx.recv().await {
                    Ok(m) if pred(&m) => return m,
                    Ok(_) => {}
                    // Skipped messages are all in `seen`: look there.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(m) = self.seen.lock().unwrap().iter().find(|m| pred(m)) {
                            return m.clone();
                        }
                    }
                    Err(e) => panic!("client channel closed: {e}"),
                }
            }
        })
        .await
        .expect("timed out waiting for a message")
    }

    /// Publishes a raw payload to `<base>/cmd/<command>`.
    pub async fn publish_raw(&self, base: &str, command: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(
                format!("{base}/cmd/{command}"),
                QoS::AtLeastOnce,
                retain,
                payload,
            )
            .await
            .unwrap();
    }

    /// Sends a request (adding a fresh `request_id` unless one is given) and
    /// returns the response that echoes it.
    pub async fn request(&self, base: &str, command: &str, mut body: Value) -> Value {
        let rid = body
            .get("request_id")
            .and_then(|r| r.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                let r = uuid_like();
                body["request_id"] = json!(r);
                r
            });
        let topic = format!("{base}/response/{command}");
        // A command the worker does not know is answered on `response/unknown`.
        let unknown = format!("{base}/response/unknown");
        self.publish_raw(base, command, serde_json::to_vec(&body).unwrap(), false)
            .await;
        let rid2 = rid.clone();
        self.wait_for(move |m| {
            (m.topic == topic || m.topic == unknown)
                && serde_json::from_slice::<Value>(&m.payload)
                    .ok()
                    .is_some_and(|v| v["request_id"] == json!(rid2))
        })
        .await
        .json()
    }

    /// Publishes with v5 properties.
    pub async fn publish_with(
        &self,
        base: &str,
        command: &str,
        payload: Vec<u8>,
        props: PublishProperties,
    ) {
        self.client
            .publish_with_properties(
                format!("{base}/cmd/{command}"),
                QoS::AtLeastOnce,
                false,
                payload,
                props,
            )
            .await
            .unwrap();
    }

    /// Sends a job command, asserts it was accepted, and waits for its result.
    pub async fn run_job(&self, base: &str, command: &str, body: Value) -> Value {
        let resp = self.request(base, command, body).await;
        assert_eq!(resp["status"], "ok", "{command}: {resp}");
        self.job_result(base, resp["job_id"].as_str().unwrap())
            .await
    }

    /// Waits for a job's `result` message.
    pub async fn job_result(&self, base: &str, job_id: &str) -> Value {
        let topic = format!("{base}/jobs/{job_id}/result");
        self.wait_for(move |m| m.topic == topic).await.json()
    }

    /// The log lines received for a job, in arrival order.
    pub fn job_lines(&self, base: &str, job_id: &str) -> Vec<Value> {
        let topic = format!("{base}/jobs/{job_id}/log");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic == topic)
            .map(|m| m.json())
            .collect()
    }

    /// Every payload the worker published so far, as text (the client's own
    /// commands, which carry tokens, are left out).
    pub fn all_text(&self) -> String {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| !m.topic.contains("/cmd/"))
            .map(|m| format!("{} {}\n", m.topic, m.text()))
            .collect()
    }

    pub fn messages(&self) -> HashMap<String, Vec<Msg>> {
        let mut out: HashMap<String, Vec<Msg>> = HashMap::new();
        for m in self.seen.lock().unwrap().iter() {
            out.entry(m.topic.clone()).or_default().push(m.clone());
        }
        out
    }
}

/// Worker settings that enable the admin role.
pub const WITH_ADMIN: (&str, &str) = ("BMQTT_AUTH__ADMIN_TOKEN", ADMIN_TOKEN);

/// Asserts that no test secret occurs in `text`.
pub fn assert_no_secrets(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(s), "{what} contains a secret ({}…)", &s[..6]);
    }
}

/// A real OpenSSH server on a free loopback port with a throwaway host key, and a
/// client key protected by `key_passphrase`.
pub struct SshServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SshServer {
    pub fn start(key_passphrase: &str) -> SshServer {
        require("ssh-keygen");
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "sshd is not installed: run scripts/setup"
        );
        let dir = tempfile::tempdir().unwrap();
        let keygen = |file: &str, pass: &str| {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", pass, "-f"])
                .arg(dir.path().join(file))
                .status()
                .unwrap()
                .success();
            assert!(ok, "ssh-keygen failed");
        };
        keygen("host_key", "");
        keygen("client_key", key_passphrase);
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let port = free_port();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nUsePAM no\nLogLevel ERROR\n"
            ),
        )
        .unwrap();
        // Privilege separation needs this directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.path().join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start sshd");
        wait_for_port(port);
        SshServer {
            port,
            dir,
            child: Some(child),
        }
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// borgmatic settings that reach `path` on this server as root with the client key.
    pub fn borgmatic_yaml(&self, label: &str, path: &Path, sources: &Path) -> String {
        format!(
            "source_directories:\n  - {}\nrepositories:\n  - path: ssh://root@127.0.0.1:{}{}\n    label: {label}\n\
             ssh_command: ssh -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n\
             relocated_repo_access_is_ok: true\nkeep_daily: 7\n",
            sources.display(),
            self.port,
            path.display(),
            self.client_key().display()
        )
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A worker with its HTTP sidecar on a free loopback port; returns its base URL.
/// A stand-in `borgmatic` for tests about output volume: answers `--version` like
/// borgmatic 2.1 and, for any action, prints `lines` numbered lines to stderr as fast
/// as it can, then an empty JSON list on stdout.
pub fn fast_printing_borgmatic(dir: &Path, lines: u64) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("fast-borgmatic");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\ncase \"$*\" in *--version*) echo 2.1.10; exit 0;; esac\n\
             seq -f 'line %.0f' 1 {lines} >&2\necho '[]'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

pub async fn start_with_http(
    broker: &Broker,
    repos: &Repos,
    extra: &[(&str, &str)],
) -> (Worker, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut all: Vec<(&str, &str)> = vec![
        ("BMQTT_HTTP__LISTEN", listen.as_str()),
        ("BMQTT_DOCKER__ENABLED", "false"),
    ];
    for (k, v) in extra {
        all.retain(|(k2, _)| k2 != k);
        all.push((k, v));
    }
    let w = Worker::start(broker, repos, &all).await;
    (w, format!("http://{listen}"))
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Reads an SSE response until it ends (or `stop` says so), within [`WAIT`].
pub async fn read_sse(resp: reqwest::Response, stop: impl Fn(&SseEvent) -> bool) -> Vec<SseEvent> {
    use futures_util::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut ev = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut comment_only = true;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().into();
                        comment_only = false;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().into());
                        comment_only = false;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !ev.data.is_empty() {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        comment_only = false;
                    }
                }
                if comment_only {
                    continue;
                }
                let done = stop(&ev);
                out.push(ev);
                if done {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the event stream did not end in time");
    out
}

/// A `borgmatic` that drops the capabilities named in `<dir>/drop-caps` (e.g.
/// `-dac_read_search,-dac_override`, as under `cap_drop: [ALL]`) before it runs; none when the file is empty.
pub fn setpriv_borgmatic(dir: &Path) -> (PathBuf, PathBuf) {
    let real = borgmatic_bin();
    let drop = dir.join("drop-caps");
    std::fs::write(&drop, "").unwrap();
    let bin = dir.join("borgmatic-caps");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\ndrop=$(cat '{}')\n\
             if [ -n \"$drop\" ]; then exec setpriv --inh-caps=\"$drop\" --bounding-set=\"$drop\" -- '{}' \"$@\"; fi\n\
             exec '{}' \"$@\"\n",
            drop.display(),
            real.display(),
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &bin,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    (bin, drop)
}
