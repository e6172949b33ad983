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

use serde_json::{json, Value};

use super::summary::EVENT_TYPES;
use super::Topics;
use crate::jobs::{JobEngine, JobState};

/// One discovery message: its config topic and payload (`None` removes it).
pub struct Entity {
    pub topic: String,
    pub payload: Option<Value>,
}

/// What every discovery message of one worker shares.
pub struct Discovery<'a> {
    pub prefix: &'a str,
    pub node: &'a str,
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

/// Options of the backup result sensor (`result` of `last/<repo>/backup`).
pub const BACKUP_RESULTS: &[&str] = &[
    "succeeded",
    "partial",
    "warning",
    "failed",
    "cancelled",
    "interrupted",
];

/// Options of the verification result sensor.
pub const VERIFY_RESULTS: &[&str] = &["verified", "failed", "cancelled", "interrupted"];

/// What the last-result sensor shows as attributes: the archive, the reason and
/// what a partial backup left out.
const LAST_RESULT_ATTRIBUTES: &str = "{{ {'archive': value_json.archive, \
'job_id': value_json.job_id, \
'error': value_json.error, \
'reason': value_json.reason if value_json.reason is defined and value_json.reason else value_json.error, \
'partial': value_json.partial | default(false), \
'skipped_files': value_json.skipped_files | default(0), \
'skipped_reasons': value_json.skipped_reasons | default({}), \
'skipped': value_json.skipped | default([])} | tojson }}";

const VERIFY_ATTRIBUTES: &str = "{{ {'archive': value_json.archive, \
'job_id': value_json.job_id, 'error': value_json.error, \
'sampled': value_json.sampled, 'matched': value_json.matched, \
'mismatched': value_json.mismatched, 'missing': value_json.missing} | tojson }}";

const VERIFY_RESULT: &str = "{{ 'verified' if value_json.verified else \
(value_json.result if value_json.result in ['cancelled', 'interrupted'] else 'failed') }}";

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
        let backup = topics.last(repository, "backup");
        let verify = topics.last(repository, "verify");
        let health = topics.repo_health(repository);
        let progress = topics.repo_progress(repository);
        let button = |action: &str, icon: &str| {
            json!({
                "command_topic": topics.ha_button(repository, action),
                "payload_press": "PRESS",
                "icon": icon,
            })
        };
        ENTITIES
            .iter()
            .map(|&(entity, component)| {
                let (name, extra) = match entity {
                    "run_backup" => ("Run backup", button("run", "mdi:backup-restore")),
                    "verify_backup" => ("Verify backup", button("verify", "mdi:shield-check")),
                    "check_repository" => (
                        "Check repository",
                        button("check", "mdi:database-check-outline"),
                    ),
                    "prune" => ("Prune archives", button("prune", "mdi:content-cut")),
                    "cancel" => ("Cancel job", button("cancel", "mdi:cancel")),
                    "last_backup" => (
                        "Last backup",
                        json!({
                            "state_topic": backup, "device_class": "timestamp",
                            "value_template": "{{ value_json.finished_at }}",
                        }),
                    ),
                    // `result` is `partial` for a backup that left files out: never
                    // a success-looking value. The attributes say what and why.
                    "last_result" => (
                        "Last backup result",
                        json!({
                            "state_topic": backup,
                            "device_class": "enum",
                            "options": BACKUP_RESULTS,
                            "value_template": "{{ value_json.result | default(value_json.state) }}",
                            "json_attributes_topic": backup,
                            "json_attributes_template": LAST_RESULT_ATTRIBUTES,
                            "icon": "mdi:check-circle-outline",
                        }),
                    ),
                    "last_duration" => (
                        "Last backup duration",
                        json!({
                            "state_topic": backup, "device_class": "duration",
                            "unit_of_measurement": "s", "state_class": "measurement",
                            "entity_category": "diagnostic",
                            "value_template": "{{ value_json.duration_secs }}",
                        }),
                    ),
                    // Unknown after a failed backup, never the last success's size
                    // next to the failure's time.
                    "last_size" => (
                        "Last backup size",
                        json!({
                            "state_topic": backup, "device_class": "data_size",
                            "unit_of_measurement": "B", "state_class": "measurement",
                            "value_template": "{{ value_json.stats.original_size \
                                if value_json.stats else None }}",
                        }),
                    ),
                    "last_verified" => (
                        "Last verified",
                        json!({
                            "state_topic": verify, "device_class": "timestamp",
                            "value_template": "{{ value_json.finished_at }}",
                        }),
                    ),
                    "verify_result" => (
                        "Last verification",
                        json!({
                            "state_topic": verify,
                            "device_class": "enum",
                            "options": VERIFY_RESULTS,
                            "value_template": VERIFY_RESULT,
                            "json_attributes_topic": verify,
                            "json_attributes_template": VERIFY_ATTRIBUTES,
                            "icon": "mdi:shield-check-outline",
                        }),
                    ),
                    "progress" => (
                        "Backup progress",
                        json!({
                            "state_topic": progress, "device_class": "data_size",
                            "unit_of_measurement": "B", "state_class": "measurement",
                            "value_template": "{{ value_json.bytes if value_json.active \
                                and value_json.bytes is not none else None }}",
                            "json_attributes_topic": progress,
                            "icon": "mdi:progress-upload",
                        }),
                    ),
                    "last_success" => (
                        "Last successful backup",
                        json!({
                            "state_topic": health, "device_class": "timestamp",
                            "value_template": "{{ value_json.last_success \
                                if value_json.last_success else None }}",
                            "icon": "mdi:archive-clock-outline",
                        }),
                    ),
                    "running" => (
                        "Backup running",
                        json!({
                            "state_topic": topics.running(repository),
                            "device_class": "running",
                            "payload_on": "ON", "payload_off": "OFF",
                        }),
                    ),
                    "problem" => (
                        "Backup problem",
                        json!({
                            "state_topic": health, "device_class": "problem",
                            "value_template": "{{ 'ON' if value_json.problem else 'OFF' }}",
                            "payload_on": "ON", "payload_off": "OFF",
                            "json_attributes_topic": health,
                        }),
                    ),
                    _ => (
                        "Backup events",
                        json!({
                            "state_topic": topics.repo_event(repository),
                            "event_types": EVENT_TYPES,
                            "icon": "mdi:bell-outline",
                        }),
                    ),
                };
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

/// The request a button press on `<base>/ha/<repository>/<action>` makes, or
/// why it cannot make one (`Err`, told to the user as a refused press). `cancel`
/// cancels the job that holds the repository.
pub fn button_request(
    engine: &JobEngine,
    repository: &str,
    action: &str,
) -> Option<Result<(&'static str, Value), String>> {
    let on_repo = json!({ "repository": repository });
    Some(Ok(match action {
        "run" => ("backup/run", on_repo),
        "verify" => ("backup/verify", on_repo),
        "check" => ("repo/check", on_repo),
        "prune" => ("repo/prune", on_repo),
        "cancel" => {
            let active = [JobState::Running, JobState::Queued]
                .into_iter()
                .flat_map(|s| engine.list(Some(s), usize::MAX))
                .find(|r| r.repository.as_deref() == Some(repository));
            match active {
                Some(r) => ("job/cancel", json!({ "job_id": r.job_id })),
                None => return Some(Err(format!("no job runs on {repository}"))),
            }
        }
        _ => return None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entity_has_what_home_assistant_requires() {
        let t = Topics::new("borgmatic/nas");
        let d = Discovery {
            prefix: "homeassistant",
            node: "nas",
            topics: &t,
            configuration_url: Some("http://nas.lan:8080/"),
        };
        let all = d.entities("next.cloud");
        assert_eq!(all.len(), ENTITIES.len());
        for e in &all {
            let p = e.payload.as_ref().unwrap();
            assert!(p["unique_id"].is_string() && p["name"].is_string(), "{p}");
            assert_eq!(p["device"]["via_device"], "borgmatic_mqtt_nas");
            assert_eq!(p["device"]["configuration_url"], "http://nas.lan:8080/");
            assert_eq!(p["origin"]["name"], "borgmatic-mqtt");
            assert_eq!(p["availability_topic"], "borgmatic/nas/status");
            let component = e.topic.split('/').nth(1).unwrap();
            let object = p["object_id"].as_str().unwrap();
            assert!(object.starts_with("borgmatic_nas_next_cloud_"), "{object}");
            assert_eq!(
                p["default_entity_id"],
                format!("{component}.{object}"),
                "old and new Home Assistant give the same id"
            );
            if component == "button" {
                assert!(p["command_topic"]
                    .as_str()
                    .unwrap()
                    .starts_with("borgmatic/nas/ha/next.cloud/"));
            } else {
                assert!(p["state_topic"].is_string(), "{p}");
            }
            assert!(e.topic.starts_with("homeassistant/") && e.topic.ends_with("/config"));
            assert!(
                !e.topic.contains("next.cloud"),
                "object ids are [a-z0-9_]: {}",
                e.topic
            );
        }
        let find = |k: &str| {
            all.iter()
                .find(|e| e.topic.ends_with(&format!("/{k}/config")))
                .and_then(|e| e.payload.clone())
                .unwrap()
        };
        let result = find("last_result");
        assert_eq!(result["device_class"], "enum");
        assert!(result["options"]
            .as_array()
            .unwrap()
            .contains(&json!("partial")));
        assert_eq!(
            result["json_attributes_topic"],
            "borgmatic/nas/last/next.cloud/backup"
        );
        assert_eq!(
            find("event")["state_topic"],
            "borgmatic/nas/repos/next.cloud/event"
        );
        assert_eq!(find("problem")["device_class"], "problem");
        assert_eq!(find("last_duration")["entity_category"], "diagnostic");
        let worker = d.worker_entities();
        assert_eq!(
            worker[0].payload.as_ref().unwrap()["device"]["identifiers"][0],
            "borgmatic_mqtt_nas"
        );
        assert!(d.removals("x").iter().all(|e| e.payload.is_none()));
        assert_eq!(d.removals("x").len(), ENTITIES.len());
    }
}
