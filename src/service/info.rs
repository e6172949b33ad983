//! The retained `<base>/info` document, typed. Serialises exactly as the former
//! `json!` document did (same keys, same order).
//!
//! May import: `commands`.

use serde::Serialize;

use super::Service;
use crate::commands::CommandName;

/// What the worker announces about itself.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// This worker's version (the crate version).
    pub version: &'static str,
    /// The borgmatic version found at start-up.
    pub borgmatic_version: String,
    /// The node id: names this worker in topics and in Home Assistant.
    pub node: String,
    /// The root of every topic of this worker.
    pub base_topic: String,
    /// The wire names of every command this version knows.
    pub commands: Vec<&'static str>,
    /// The repository labels clients may name.
    pub repositories: Vec<String>,
    /// Whether an admin token is configured (admin commands are refused without one).
    pub admin_enabled: bool,
    /// Whether the Docker engine answers, and its version.
    pub docker: DockerInfo,
}

/// Whether the Docker engine answers.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum DockerInfo {
    /// The engine answered a ping.
    Available {
        /// Always `true`: lets a client test one key whatever the variant.
        available: bool,
        /// The engine's version, as its ping reported it.
        version: String,
    },
    /// The engine did not answer; the log says why.
    Unavailable {
        /// Always `false`.
        available: bool,
        /// A client-safe sentence (the error itself goes only to the log).
        reason: String,
    },
}

impl DockerInfo {
    /// Whether the engine answered.
    pub fn is_available(&self) -> bool {
        matches!(self, DockerInfo::Available { .. })
    }
}

impl Service {
    /// The `<base>/info` document.
    pub async fn info(&self) -> Info {
        let docker = match self.docker.ping().await {
            Ok(version) => DockerInfo::Available {
                available: true,
                version,
            },
            Err(e) => {
                tracing::debug!(error = %e, "Docker engine not available for info");
                DockerInfo::Unavailable {
                    available: false,
                    reason: "the Docker engine does not answer (see the worker's log)".into(),
                }
            }
        };
        Info {
            version: env!("CARGO_PKG_VERSION"),
            borgmatic_version: self.borgmatic_version.to_string(),
            node: self.settings.node_id(),
            base_topic: self.settings.base_topic(),
            commands: CommandName::ALL.iter().map(|c| c.as_str()).collect(),
            repositories: self.borgmatic.labels(),
            admin_enabled: self.tokens.has_admin(),
            docker,
        }
    }
}
