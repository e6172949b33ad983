//! The retained `<base>/info` document, typed. Serialises exactly as the former
//! `json!` document did (same keys, same order).

use serde::Serialize;
use serde_json::Value;

use super::Service;
use crate::commands::CommandName;

/// What the worker announces about itself.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub version: &'static str,
    pub borgmatic_version: String,
    pub node: String,
    pub base_topic: String,
    pub commands: Vec<&'static str>,
    pub repositories: Vec<String>,
    pub admin_enabled: bool,
    pub docker: DockerInfo,
}

/// Whether the Docker engine answers.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum DockerInfo {
    Available { available: bool, version: String },
    Unavailable { available: bool, reason: String },
}

impl DockerInfo {
    pub fn is_available(&self) -> bool {
        matches!(self, DockerInfo::Available { .. })
    }
}

impl Service {
    /// The `<base>/info` document.
    pub async fn info_typed(&self) -> Info {
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

    /// The same document as JSON, for the MQTT adapter that still reads it by key
    /// (use [`Service::info_typed`] in new code).
    pub async fn info(&self) -> Value {
        serde_json::to_value(self.info_typed().await).unwrap_or(Value::Null)
    }
}
