//! Home Assistant MQTT discovery, modelled on the best discovery integrations
//! (Zigbee2MQTT, Frigate): a worker device with a connectivity diagnostic, and one
//! device per repository linked to it (`via_device`) with its buttons (run,
//! verify, check, prune, cancel), its last backup / verification sensors (results
//! as `enum`s with the error, archive and skipped files as attributes), a progress
//! sensor, a `running` sensor, the repository's health (a `problem` sensor and
//! the last successful backup, read from the repository itself, see `health`) and
//! an event entity that fires on every finished backup, verification and refused
//! button press (so two failures in a row notify twice, and a restart none).
//!
//! Every entity carries both `object_id` (Home Assistant before 2025.10) and
//! `default_entity_id` (with its domain, 2025.10 and later), so old and new
//! versions give the same entity ids.
//!
//! A discovery payload is retained and readable by whoever reads the discovery
//! prefix, so it must not carry a token: the buttons publish to
//! `<base>/ha/<repository>/<action>`, which the worker accepts (as the write role,
//! rate-limited and audited like any request) only while discovery is on. The
//! broker ACL must let only Home Assistant's user write there.
//!
//! May import: the adapter's `topics` and `summary` (event types).

use serde_json::{json, Value};

use super::Topics;

mod repository;
mod templates;

pub use templates::{BACKUP_RESULTS, VERIFY_RESULTS};

/// One discovery message: its config topic and payload (`None` removes it).
pub struct Entity {
    /// `<prefix>/<component>/<object>/<entity>/config`.
    pub topic: String,
    /// The config, retained; `None` publishes an empty retained message.
    pub payload: Option<Value>,
}

/// What every discovery message of one worker shares.
pub struct Discovery<'a> {
    /// Home Assistant's discovery prefix (`homeassistant`).
    pub prefix: &'a str,
    /// The worker's node id: part of every unique id, so two workers never clash.
    pub node: &'a str,
    /// The worker's topics the entities read and write.
    pub topics: &'a Topics,
    /// The HTTP sidecar's address, shown as the devices' "Visit" link.
    pub configuration_url: Option<&'a str>,
}

/// Per repository: (entity key, component).
const ENTITIES: &[(&str, &str)] = &[
    ("run_backup", "button"),
    ("verify_backup", "button"),
    ("check_repository", "button"),
    ("prune", "button"),
    ("cancel", "button"),
    ("last_backup", "sensor"),
    ("last_result", "sensor"),
    ("last_duration", "sensor"),
    ("last_size", "sensor"),
    ("last_verified", "sensor"),
    ("verify_result", "sensor"),
    ("progress", "sensor"),
    ("last_success", "sensor"),
    ("running", "binary_sensor"),
    ("problem", "binary_sensor"),
    ("event", "event"),
];

/// `[a-z0-9_]` form of a node or repository name, for ids.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn object_id(node: &str, repository: &str) -> String {
    format!("{}_{}", clean(node), clean(repository))
}

fn config_topic(prefix: &str, component: &str, object: &str, entity: &str) -> String {
    format!("{prefix}/{component}/{object}/{entity}/config")
}

fn worker_device_id(node: &str) -> String {
    format!("borgmatic_mqtt_{node}")
}

impl Discovery<'_> {
    fn origin(&self) -> Value {
        json!({
            "name": "borgmatic-mqtt",
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    fn with_url(&self, mut device: Value) -> Value {
        if let Some(url) = self.configuration_url {
            device["configuration_url"] = json!(url);
        }
        device
    }

    fn worker_device(&self) -> Value {
        self.with_url(json!({
            "identifiers": [worker_device_id(self.node)],
            "name": format!("borgmatic {}", self.node),
            "manufacturer": "borgmatic-mqtt",
            "model": "borgmatic MQTT worker",
            "sw_version": env!("CARGO_PKG_VERSION"),
        }))
    }

    /// The worker's own entities: its connectivity (no availability of its own,
    /// so it reads `off`, not `unavailable`, while the worker is away).
    pub fn worker_entities(&self) -> Vec<Entity> {
        let object = clean(self.node);
        let payload = json!({
            "name": "Connectivity",
            "unique_id": format!("{object}_connectivity"),
            "object_id": format!("borgmatic_{object}_connectivity"),
            "default_entity_id": format!("binary_sensor.borgmatic_{object}_connectivity"),
            "device": self.worker_device(),
            "origin": self.origin(),
            "state_topic": self.topics.status(),
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
        });
        vec![Entity {
            topic: config_topic(self.prefix, "binary_sensor", &object, "connectivity"),
            payload: Some(payload),
        }]
    }

    /// The discovery messages of one repository.
    pub fn entities(&self, repository: &str) -> Vec<Entity> {
        let topics = self.topics;
        let object = object_id(self.node, repository);
        let device = self.with_url(json!({
            "identifiers": [format!("{}_{}", worker_device_id(self.node), clean(repository))],
            "name": format!("borgmatic {} {repository}", self.node),
            "manufacturer": "borgmatic-mqtt",
            "model": "borg repository",
            "sw_version": env!("CARGO_PKG_VERSION"),
            "via_device": worker_device_id(self.node),
        }));
        let ctx = repository::RepoTopics::new(topics, repository);
        ENTITIES
            .iter()
            .map(|&(entity, component)| {
                let (name, extra) = repository::config(entity, &ctx);
                let mut p = json!({
                    "name": name,
                    "unique_id": format!("{object}_{entity}"),
                    "object_id": format!("borgmatic_{object}_{entity}"),
                    "default_entity_id": format!("{component}.borgmatic_{object}_{entity}"),
                    "device": device,
                    "origin": self.origin(),
                    "availability_topic": topics.status(),
                    "payload_available": "online",
                    "payload_not_available": "offline",
                });
                if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
                    p.extend(e.clone());
                }
                Entity {
                    topic: config_topic(self.prefix, component, &object, entity),
                    payload: Some(p),
                }
            })
            .collect()
    }

    /// The empty retained messages that remove a repository's entities.
    pub fn removals(&self, repository: &str) -> Vec<Entity> {
        let object = object_id(self.node, repository);
        ENTITIES
            .iter()
            .map(|&(entity, component)| Entity {
                topic: config_topic(self.prefix, component, &object, entity),
                payload: None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
