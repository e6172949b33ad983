//! The worker in-process (zero-to-production's `spawn_app`): the library's
//! `startup::run` on its own runtime in its own thread, the HTTP sidecar bound to
//! port 0 by the app itself (no port picked by one process for another), stopped
//! with a token. Use [`super::Worker`] (the binary as a subprocess) where the process
//! is the point: signals, kill -9, exit codes, start-up refusals, file modes (the
//! binary's umask), environment handling, rlimits.
//!
//! Process-wide state the app touches, and why several apps in one test process
//! are fine: the tracing subscriber is per app (the default of the app's runtime
//! threads, writing to its own `worker.log`), the Prometheus recorder is installed
//! once and shared (so tests that assert metric values use the subprocess), the
//! secret list of `redact::register` only grows (more is masked, never less), the
//! open-file limit is raised to the same hard limit.

use std::path::PathBuf;
use std::sync::Mutex;
use std::thread::JoinHandle;

use borgmatic_mqtt::config::Settings;
use tokio_util::sync::CancellationToken;

use super::worker::own_dirs;
use super::{uuid_like, Broker, Client, Repos, Worker};

/// A worker running in this test process.
pub struct TestApp {
    pub base: String,
    pub state_dir: tempfile::TempDir,
    pub log_file: PathBuf,
    /// `http://127.0.0.1:<port>` when the HTTP sidecar is on.
    pub http: Option<String>,
    env: Vec<(String, String)>,
    running: Option<Running>,
}

struct Running {
    /// Graceful: the same shutdown as SIGTERM.
    stop: CancellationToken,
    /// Abrupt: the runtime is dropped with whatever it was doing.
    kill: CancellationToken,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Starts the worker with [`Worker::env`] plus `extra`, and waits for `online`.
    pub async fn spawn(broker: &Broker, repos: &Repos, extra: &[(&str, &str)]) -> TestApp {
        let mut env = Worker::env(broker, repos);
        for (k, v) in extra {
            env.retain(|(k2, _)| k2 != k);
            env.push((k.to_string(), v.to_string()));
        }
        Self::spawn_env(broker, env).await
    }

    /// Starts the worker with exactly `env` (plus its own base topic and state dir).
    pub async fn spawn_env(broker: &Broker, mut env: Vec<(String, String)>) -> TestApp {
        let base = format!("test/{}", uuid_like());
        let (state_dir, log_file) = own_dirs(&mut env, &base);
        let mut app = TestApp {
            base,
            state_dir,
            log_file,
            http: None,
            env,
            running: None,
        };
        app.start(broker).await;
        app
    }

    async fn start(&mut self, broker: &Broker) {
        let settings = settings_from_env(&self.env);
        let watcher = Client::connect(broker).await;
        let status = format!("{}/status", self.base);
        watcher.subscribe(&status).await;
        let (stop, kill) = (CancellationToken::new(), CancellationToken::new());
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .unwrap();
        let (stop2, kill2) = (stop.clone(), kill.clone());
        let thread = std::thread::spawn(move || run(settings, log, stop2, kill2, bound_tx));
        let addr = match bound_rx.await {
            Ok(addr) => addr,
            Err(_) => panic!(
                "the worker did not start: {:?}",
                thread.join().map(|r| r.err())
            ),
        };
        self.http = addr.map(|a| format!("http://{a}"));
        self.running = Some(Running { stop, kill, thread });
        watcher
            .wait_for(|m| m.topic == status && m.payload == b"online".as_slice())
            .await;
    }

    /// Stops like SIGTERM does (jobs interrupted, final states and `offline`
    /// published) and returns what `startup::run` returned.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        let r = self.running.take().expect("the app is not running");
        r.stop.cancel();
        tokio::task::spawn_blocking(move || r.thread.join().expect("the app panicked"))
            .await
            .unwrap()
    }

    /// Drops the app's runtime mid-flight: no clean shutdown (the broker sends the
    /// last will). The process-level kill -9 is [`super::Worker::kill9`].
    pub fn abort(&mut self) {
        if let Some(r) = self.running.take() {
            r.kill.cancel();
            let _ = r.thread.join();
        }
    }

    /// Starts the same worker again (same state dir, base topic and settings).
    pub async fn restart(&mut self, broker: &Broker) {
        self.abort();
        self.start(broker).await;
    }

    /// The sidecar's base URL.
    pub fn url(&self) -> String {
        self.http.clone().expect("the HTTP sidecar is off")
    }

    pub fn topic(&self, rest: &str) -> String {
        format!("{}/{rest}", self.base)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.abort();
    }
}

/// The app's thread: its own runtime whose threads log to the app's file only.
fn run(
    settings: Settings,
    log: std::fs::File,
    stop: CancellationToken,
    kill: CancellationToken,
    bound: tokio::sync::oneshot::Sender<Option<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let dispatch = borgmatic_mqtt::telemetry::dispatch(
        settings.log.format,
        &settings.log.level.clone(),
        Mutex::new(log),
    );
    let _default = tracing::dispatcher::set_default(&dispatch);
    let on_start = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        // A thread's default subscriber lasts as long as the thread.
        .on_thread_start(move || std::mem::forget(tracing::dispatcher::set_default(&on_start)))
        .build()?;
    let result = runtime.block_on(async move {
        let listener = borgmatic_mqtt::startup::bind(&settings).await?;
        let _ = bound.send(listener.as_ref().and_then(|l| l.local_addr().ok()));
        tokio::select! {
            r = borgmatic_mqtt::startup::run(settings, listener, stop.cancelled_owned()) => r,
            _ = kill.cancelled() => Ok(()),
        }
    });
    runtime.shutdown_background();
    result
}

/// Settings from `BMQTT_…` pairs, read the way `Settings::load` reads the
/// environment (`__` nests; secrets verbatim, other values parsed), without
/// touching this process's environment.
pub fn settings_from_env(env: &[(String, String)]) -> Settings {
    use figment::providers::Serialized;
    use figment::Figment;
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    for (k, v) in env {
        let Some(key) = k.strip_prefix("BMQTT_") else {
            continue;
        };
        let key = key.to_ascii_lowercase().replace("__", ".");
        let leaf = key.rsplit('.').next().unwrap_or(&key);
        let secret = [
            "password",
            "read_token",
            "write_token",
            "admin_token",
            "from_header",
            "passphrase",
            "ssh_passphrase",
        ]
        .contains(&leaf);
        figment = if secret {
            figment.merge((key.clone(), v.clone()))
        } else {
            let value: figment::value::Value = v.parse().unwrap();
            figment.merge((key.clone(), value))
        };
    }
    Settings::from_figment(figment)
        .unwrap_or_else(|p| panic!("the test's settings are refused: {p:?}"))
}
