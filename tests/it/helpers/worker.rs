//! The worker binary as a subprocess, for tests where the process is the point
//! (signals, kill -9, exit codes, start-up refusals, file modes, environment,
//! rlimits); [`super::TestApp`] runs it in-process otherwise.

use std::path::PathBuf;
use std::process::{Child, Command};

use super::{
    borgmatic_bin, uuid_like, Broker, Client, Repos, TestApp, PASSPHRASE, READ_TOKEN,
    WORKER_PASSWORD, WRITE_TOKEN,
};

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
        let (state_dir, log_file) = own_dirs(&mut env, &base);
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

    /// The HTTP sidecar's URL, from the address the worker logged when it bound
    /// (`http.listen` may be port 0); text and JSON logs alike.
    pub fn url(&self) -> String {
        let log = self.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("HTTP sidecar listening"))
            .unwrap_or_else(|| panic!("the worker did not log its HTTP address:\n{log}"));
        let rest = line
            .split_once("addr=")
            .or_else(|| line.split_once("\"addr\":\""))
            .unwrap_or_else(|| panic!("no addr in {line}"))
            .1;
        let addr: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        format!("http://{addr}")
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

/// What a test reads from a running worker, in-process ([`TestApp`]) or not
/// ([`Worker`]), for checks that hold for both.
pub trait Running {
    fn base(&self) -> &str;
    fn log_text(&self) -> String;
    fn topic(&self, rest: &str) -> String {
        format!("{}/{rest}", self.base())
    }
}

impl Running for Worker {
    fn base(&self) -> &str {
        &self.base
    }
    fn log_text(&self) -> String {
        Worker::log_text(self)
    }
}

impl Running for TestApp {
    fn base(&self) -> &str {
        &self.base
    }
    fn log_text(&self) -> String {
        TestApp::log_text(self)
    }
}

/// Gives a worker its base topic and a state dir of its own (unless the test gave
/// one: a small or read-only file system), and the log file in it.
pub(super) fn own_dirs(
    env: &mut Vec<(String, String)>,
    base: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    env.push(("BMQTT_MQTT__BASE_TOPIC".into(), base.to_string()));
    let state_dir = tempfile::tempdir().unwrap();
    if !env.iter().any(|(k, _)| k == "BMQTT_STATE_DIR") {
        env.push((
            "BMQTT_STATE_DIR".into(),
            state_dir.path().display().to_string(),
        ));
    }
    let log_file = state_dir.path().join("worker.log");
    (state_dir, log_file)
}
