//! The configs of one repository's entities, one function per kind (buttons, the
//! last backup, the last verification, health and activity), keyed by the entity
//! names of [`super::ENTITIES`]. What every entity shares (ids, device,
//! availability) is added by [`super::Discovery::entities`].

use serde_json::{json, Value};

use super::super::summary::EVENT_TYPES;
use super::super::Topics;
use super::templates::{
    BACKUP_RESULTS, LAST_RESULT_ATTRIBUTES, VERIFY_ATTRIBUTES, VERIFY_RESULT, VERIFY_RESULTS,
};

/// The topics a repository's entities read or write.
pub(super) struct RepoTopics<'a> {
    topics: &'a Topics,
    repository: &'a str,
    backup: String,
    verify: String,
    health: String,
    progress: String,
}

impl<'a> RepoTopics<'a> {
    pub(super) fn new(topics: &'a Topics, repository: &'a str) -> Self {
        RepoTopics {
            topics,
            repository,
            backup: topics.last(repository, "backup"),
            verify: topics.last(repository, "verify"),
            health: topics.repo_health(repository),
            progress: topics.repo_progress(repository),
        }
    }
}

/// The name and the kind-specific config of `entity`.
pub(super) fn config(entity: &str, t: &RepoTopics<'_>) -> (&'static str, Value) {
    button(entity, t)
        .or_else(|| last_backup(entity, t))
        .or_else(|| last_verification(entity, t))
        .or_else(|| activity(entity, t))
        .unwrap_or_else(|| {
            (
                "Backup events",
                json!({
                    "state_topic": t.topics.repo_event(t.repository),
                    "event_types": EVENT_TYPES,
                    "icon": "mdi:bell-outline",
                }),
            )
        })
}

/// A button publishes `PRESS` to `<base>/ha/<repository>/<action>` (no token: the
/// discovery payload is retained and readable).
fn button(entity: &str, t: &RepoTopics<'_>) -> Option<(&'static str, Value)> {
    let (name, action, icon) = match entity {
        "run_backup" => ("Run backup", "run", "mdi:backup-restore"),
        "verify_backup" => ("Verify backup", "verify", "mdi:shield-check"),
        "check_repository" => ("Check repository", "check", "mdi:database-check-outline"),
        "prune" => ("Prune archives", "prune", "mdi:content-cut"),
        "cancel" => ("Cancel job", "cancel", "mdi:cancel"),
        _ => return None,
    };
    let config = json!({
        "command_topic": t.topics.ha_button(t.repository, action),
        "payload_press": "PRESS",
        "icon": icon,
    });
    Some((name, config))
}

/// Sensors of `last/<repository>/backup`.
fn last_backup(entity: &str, t: &RepoTopics<'_>) -> Option<(&'static str, Value)> {
    let backup = &t.backup;
    Some(match entity {
        "last_backup" => (
            "Last backup",
            json!({
                "state_topic": backup, "device_class": "timestamp",
                "value_template": "{{ value_json.finished_at }}",
            }),
        ),
        // `result` is `partial` for a backup that left files out: never a
        // success-looking value. The attributes say what and why.
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
        // Unknown after a failed backup, never the last success's size next to
        // the failure's time.
        "last_size" => (
            "Last backup size",
            json!({
                "state_topic": backup, "device_class": "data_size",
                "unit_of_measurement": "B", "state_class": "measurement",
                "value_template": "{{ value_json.stats.original_size \
                    if value_json.stats else None }}",
            }),
        ),
        _ => return None,
    })
}

/// Sensors of `last/<repository>/verify`.
fn last_verification(entity: &str, t: &RepoTopics<'_>) -> Option<(&'static str, Value)> {
    let verify = &t.verify;
    Some(match entity {
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
        _ => return None,
    })
}

/// What the repository is doing and how it is: progress, running, health.
fn activity(entity: &str, t: &RepoTopics<'_>) -> Option<(&'static str, Value)> {
    let (progress, health) = (&t.progress, &t.health);
    Some(match entity {
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
                "state_topic": t.topics.running(t.repository),
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
        _ => return None,
    })
}
