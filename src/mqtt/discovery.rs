//! Home Assistant MQTT discovery: one device per worker; per repository a "Run
//! backup" and a "Verify backup" button, last backup time / result / duration /
//! size and last verification sensors, and a running binary sensor; availability
//! bound to `<base>/status`. The last result reads the summary's `result`
//! (`partial` for a backup that left files out), with what was left out as
//! attributes.
//!
//! A discovery payload is retained and readable by whoever reads the discovery
//! prefix, so it must not carry a token: the buttons publish to
//! `<base>/ha/<repository>/run|verify`, which the worker accepts (as the write
//! role, rate-limited and audited like any request) only while discovery is on.
//! The broker ACL must let only Home Assistant's user write there.

use serde_json::{json, Value};

use super::Topics;

/// One discovery message: its config topic and payload (`None` removes it).
pub struct Entity {
    pub topic: String,
    pub payload: Option<Value>,
}

const ENTITIES: &[&str] = &[
    "run_backup",
    "verify_backup",
    "last_backup",
    "last_result",
    "last_duration",
    "last_size",
    "last_verified",
    "verify_result",
    "running",
];

/// What the last-result sensor shows as attributes: the archive, the reason and
/// what a partial backup left out.
const LAST_RESULT_ATTRIBUTES: &str = "{{ {'archive': value_json.archive, \
'reason': value_json.reason if value_json.reason is defined else value_json.error, \
'partial': value_json.partial | default(false), \
'skipped_files': value_json.skipped_files | default(0), \
'skipped_reasons': value_json.skipped_reasons | default({}), \
'skipped': value_json.skipped | default([])} | tojson }}";

fn component(entity: &str) -> &'static str {
    match entity {
        "run_backup" | "verify_backup" => "button",
        "running" => "binary_sensor",
        _ => "sensor",
    }
}

fn object_id(node: &str, repository: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!("{}_{}", clean(node), clean(repository))
}

fn config_topic(prefix: &str, node: &str, repository: &str, entity: &str) -> String {
    format!(
        "{prefix}/{}/{}/{entity}/config",
        component(entity),
        object_id(node, repository)
    )
}

/// The discovery messages of one repository.
pub fn entities(prefix: &str, node: &str, topics: &Topics, repository: &str) -> Vec<Entity> {
    let device = json!({
        "identifiers": [format!("borgmatic_mqtt_{node}")],
        "name": format!("borgmatic {node}"),
        "manufacturer": "borgmatic-mqtt",
        "model": "borgmatic MQTT worker",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let base_of = |entity: &str, name: &str| {
        json!({
            "name": format!("{repository} {name}"),
            "unique_id": format!("{}_{entity}", object_id(node, repository)),
            "object_id": format!("borgmatic_{}_{entity}", object_id(node, repository)),
            "device": device,
            "availability_topic": topics.status(),
            "payload_available": "online",
            "payload_not_available": "offline",
        })
    };
    let backup = topics.last(repository, "backup");
    let verify = topics.last(repository, "verify");
    ENTITIES
        .iter()
        .map(|entity| {
            let mut p = match *entity {
                "run_backup" => base_of(entity, "Run backup"),
                "verify_backup" => base_of(entity, "Verify backup"),
                "last_backup" => base_of(entity, "last backup"),
                "last_result" => base_of(entity, "last backup result"),
                "last_duration" => base_of(entity, "last backup duration"),
                "last_size" => base_of(entity, "last backup size"),
                "last_verified" => base_of(entity, "last verified"),
                "verify_result" => base_of(entity, "last verification"),
                _ => base_of(entity, "backup running"),
            };
            let extra = match *entity {
                "run_backup" => json!({
                    "command_topic": topics.ha_button(repository, "run"),
                    "payload_press": "PRESS",
                    "icon": "mdi:backup-restore",
                }),
                "verify_backup" => json!({
                    "command_topic": topics.ha_button(repository, "verify"),
                    "payload_press": "PRESS",
                    "icon": "mdi:shield-check",
                }),
                "last_backup" => json!({
                    "state_topic": backup, "device_class": "timestamp",
                    "value_template": "{{ value_json.finished_at }}",
                }),
                // `result` is `partial` for a backup that left files out (its job
                // state is `warning`): never a success-looking value. The
                // attributes say what was left out and why.
                "last_result" => json!({
                    "state_topic": backup,
                    "value_template": "{{ value_json.result | default(value_json.state) }}",
                    "json_attributes_topic": backup,
                    "json_attributes_template": LAST_RESULT_ATTRIBUTES,
                    "icon": "mdi:check-circle-outline",
                }),
                "last_duration" => json!({
                    "state_topic": backup, "device_class": "duration", "unit_of_measurement": "s",
                    "value_template": "{{ value_json.duration_secs }}",
                }),
                "last_size" => json!({
                    "state_topic": backup, "device_class": "data_size", "unit_of_measurement": "B",
                    "value_template": "{{ value_json.stats.original_size }}",
                }),
                "last_verified" => json!({
                    "state_topic": verify, "device_class": "timestamp",
                    "value_template": "{{ value_json.finished_at }}",
                }),
                "verify_result" => json!({
                    "state_topic": verify,
                    "value_template": "{{ 'verified' if value_json.verified else 'failed' }}",
                }),
                _ => json!({
                    "state_topic": topics.running(repository), "device_class": "running",
                    "payload_on": "ON", "payload_off": "OFF",
                }),
            };
            if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
                p.extend(e.clone());
            }
            Entity {
                topic: config_topic(prefix, node, repository, entity),
                payload: Some(p),
            }
        })
        .collect()
}

/// The empty retained messages that remove a repository's entities.
pub fn removals(prefix: &str, node: &str, repository: &str) -> Vec<Entity> {
    ENTITIES
        .iter()
        .map(|e| Entity {
            topic: config_topic(prefix, node, repository, e),
            payload: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entity_has_what_home_assistant_requires() {
        let t = Topics::new("borgmatic/nas");
        let all = entities("homeassistant", "nas", &t, "next.cloud");
        assert_eq!(all.len(), ENTITIES.len());
        for e in &all {
            let p = e.payload.as_ref().unwrap();
            assert!(p["unique_id"].is_string() && p["name"].is_string(), "{p}");
            assert_eq!(p["device"]["identifiers"][0], "borgmatic_mqtt_nas");
            assert_eq!(p["availability_topic"], "borgmatic/nas/status");
            if e.topic.contains("/button/") {
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
        let result = all
            .iter()
            .find(|e| e.topic.ends_with("/last_result/config"))
            .and_then(|e| e.payload.as_ref())
            .unwrap();
        assert!(result["value_template"]
            .as_str()
            .unwrap()
            .contains("value_json.result"));
        assert_eq!(
            result["json_attributes_topic"],
            "borgmatic/nas/last/next.cloud/backup"
        );
        assert!(removals("homeassistant", "nas", "x")
            .iter()
            .all(|e| e.payload.is_none()));
    }
}
