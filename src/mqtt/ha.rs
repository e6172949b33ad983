//! Home Assistant discovery publishing: the settings the MQTT tasks share, and the
//! (re)publishing of every repository's discovery configs. The configs themselves
//! are built in [`super::discovery`]. May import: `discovery`, `outgoing`, `topics`,
//! `config`.

use rumqttc::v5::mqttbytes::QoS;

use super::discovery;
use super::outgoing::Out;
use super::Topics;
use crate::config::Settings;

/// Home Assistant discovery settings the tasks share.
pub(super) struct HaConfig {
    pub enabled: bool,
    pub prefix: String,
    pub node: String,
    /// Labels published last time, so vanished repositories can be removed.
    pub state_file: std::path::PathBuf,
    pub configuration_url: Option<String>,
}

/// The devices' "Visit" link: the configured one, else the HTTP sidecar when it
/// listens on a specific address (a wildcard bind names no reachable host).
pub(super) fn discovery_url(settings: &Settings) -> Option<String> {
    if let Some(url) = &settings.homeassistant.configuration_url {
        // Home Assistant refuses a whole config with another scheme.
        return (url.starts_with("http://") || url.starts_with("https://")).then(|| url.clone());
    }
    let addr: std::net::SocketAddr = settings.http.listen.parse().ok()?;
    (!addr.ip().is_unspecified()).then(|| format!("http://{addr}/"))
}

impl HaConfig {
    pub fn new(settings: &Settings) -> Self {
        HaConfig {
            enabled: settings.homeassistant.discovery,
            prefix: settings
                .homeassistant
                .prefix
                .trim_end_matches('/')
                .to_string(),
            node: settings.node_id(),
            state_file: settings.state_dir.join("ha-discovery.json"),
            configuration_url: discovery_url(settings),
        }
    }

    pub fn birth_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }
}

/// Publishes every repository's discovery configs and removes those of
/// repositories that are gone since the last time.
pub(super) async fn publish_discovery(
    out: &Out,
    topics: &Topics,
    ha: &HaConfig,
    labels: &[String],
) {
    let before: Vec<String> = std::fs::read(&ha.state_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let d = discovery::Discovery {
        prefix: &ha.prefix,
        node: &ha.node,
        topics,
        configuration_url: ha.configuration_url.as_deref(),
    };
    let mut messages = d.worker_entities();
    for gone in before.iter().filter(|l| !labels.contains(l)) {
        messages.extend(d.removals(gone));
    }
    for label in labels {
        messages.extend(d.entities(label));
    }
    for m in messages {
        let payload = m.payload.map(|p| p.to_string()).unwrap_or_default();
        if let Err(e) = out
            .publish(m.topic, QoS::AtLeastOnce, true, payload.into(), None)
            .await
        {
            tracing::warn!(error = %e, "could not publish a discovery config");
        }
    }
    if let Ok(json) = serde_json::to_vec(labels) {
        if let Err(e) = std::fs::write(&ha.state_file, json) {
            tracing::warn!(error = %e, "could not remember the published discovery configs");
        }
    }
}
