//! The setup most tests share, as one builder: a broker, repositories, a worker and
//! a client subscribed to everything the worker publishes.
//!
//! ```ignore
//! let Scenario { broker, repos, worker, client: c } =
//!     Scenario::new().repo("nc").app().await;
//! ```
//! `app()` runs the worker in-process ([`TestApp`]); `process()` runs the binary
//! ([`Worker`]) where the process is the point or its log must hold everything
//! (the in-process app's log has the worker's own records, not its libraries').

use super::{Broker, Client, Repos, TestApp, Worker};

/// Everything a test arranged, ready to act on.
pub struct Scenario<W> {
    pub broker: Broker,
    pub repos: Repos,
    pub worker: W,
    /// User `client`, subscribed to `<base>/#`.
    pub client: Client,
}

/// What [`Scenario::new`] starts.
#[derive(Default)]
pub struct ScenarioBuilder {
    repos: Vec<(String, String)>,
    settings: Vec<(String, String)>,
}

impl<W> Scenario<W> {
    /// The scenario of a started worker whose base topic is `base`.
    async fn assemble(broker: Broker, repos: Repos, worker: W, base: &str) -> Scenario<W> {
        let client = subscribed(&broker, base).await;
        Scenario {
            broker,
            repos,
            worker,
            client,
        }
    }
}

impl Scenario<()> {
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> ScenarioBuilder {
        ScenarioBuilder::default()
    }
}

impl ScenarioBuilder {
    /// A repository labelled `label` (see [`Repos::add`]).
    pub fn repo(self, label: &str) -> Self {
        self.repo_with(label, "")
    }

    /// A repository with `extra` borgmatic YAML.
    pub fn repo_with(mut self, label: &str, extra: &str) -> Self {
        self.repos.push((label.into(), extra.into()));
        self
    }

    /// A worker setting (`BMQTT_…`), as in [`Worker::start`]'s `extra`; a later
    /// one replaces an earlier one of the same key.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.retain(|(k, _)| k != key);
        self.settings.push((key.into(), value.into()));
        self
    }

    /// The HTTP sidecar on, on a port the worker binds itself (port 0), Docker off
    /// (as [`super::start_with_http`]); the worker's `url()` says where.
    pub fn http(self) -> Self {
        self.setting("BMQTT_HTTP__LISTEN", "127.0.0.1:0")
            .setting("BMQTT_DOCKER__ENABLED", "false")
    }

    /// The admin role on ([`super::WITH_ADMIN`]).
    pub fn admin(self) -> Self {
        self.setting(super::WITH_ADMIN.0, super::WITH_ADMIN.1)
    }

    fn arrange(&self) -> (Broker, Repos) {
        let broker = Broker::start();
        let repos = Repos::new();
        for (label, extra) in &self.repos {
            repos.add(label, extra);
        }
        (broker, repos)
    }

    fn extra(&self) -> Vec<(&str, &str)> {
        self.settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The worker in-process.
    pub async fn app(self) -> Scenario<TestApp> {
        let (broker, repos) = self.arrange();
        let worker = TestApp::spawn(&broker, &repos, &self.extra()).await;
        let base = worker.base.clone();
        Scenario::assemble(broker, repos, worker, &base).await
    }

    /// The worker binary as a subprocess.
    pub async fn process(self) -> Scenario<Worker> {
        let (broker, repos) = self.arrange();
        let worker = Worker::start(&broker, &repos, &self.extra()).await;
        let base = worker.base.clone();
        Scenario::assemble(broker, repos, worker, &base).await
    }
}

/// User `client`, connected and subscribed to `<base>/#` (a worker's whole topic
/// tree).
pub async fn subscribed(broker: &Broker, base: &str) -> Client {
    let client = Client::connect(broker).await;
    client.subscribe(&format!("{base}/#")).await;
    client
}
