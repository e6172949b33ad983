//! Settings of the worker's own resources: `[jobs]`, `[limits]`, `[audit]`,
//! `[health]` and `[log]`. Plain data with defaults; imports nothing of the crate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Requests per minute per principal, by command class, and the bounds that keep
/// one client from exhausting the worker's memory or its request handling.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Read-role requests a principal may make per minute.
    pub read_per_minute: u32,
    /// Write-role requests a principal may make per minute.
    pub write_per_minute: u32,
    /// Admin-role requests a principal may make per minute.
    pub admin_per_minute: u32,
    /// Largest request body, checked before it is parsed (both transports).
    pub max_request_bytes: usize,
    /// Deepest nesting of arrays and objects in a request, checked before parsing.
    pub max_request_depth: usize,
    /// Memory for remembered answers to `request_id`s (oldest forgotten first).
    pub dedup_cache_bytes: usize,
    /// MQTT requests handled at once; more wait in a short queue, then are `busy`.
    pub max_in_flight: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            read_per_minute: 600,
            write_per_minute: 60,
            admin_per_minute: 20,
            max_request_bytes: 64 * 1024,
            max_request_depth: 16,
            dedup_cache_bytes: 8 * 1024 * 1024,
            max_in_flight: 32,
        }
    }
}

/// The audit trail's size bounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// `audit.jsonl` is rotated to `audit.jsonl.1` when it would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` … `.N`); older ones are deleted.
    pub keep_files: u32,
    /// Unauthenticated refusals are written one by one up to a few per window, the
    /// rest as one line per transport and client with their count.
    pub refusal_window_secs: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024 * 1024,
            keep_files: 4,
            refusal_window_secs: 60,
        }
    }
}

/// How the worker's own log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `[log]`: the worker's own log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `borgmatic_mqtt=debug`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `[jobs]`: how many jobs run and wait, how long they may take and are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// Jobs running at once across all repositories; the rest wait as `queued`.
    pub max_concurrent: usize,
    /// Log lines kept in memory per job (the seq count never resets).
    pub log_lines_kept: usize,
    /// Log lines of a finished job kept in the store.
    pub stored_lines: usize,
    /// QoS of `jobs/<id>/log` messages (0 or 1).
    pub log_qos: u8,
    /// Seconds a finished job is kept before it is forgotten.
    pub ttl_secs: u64,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled.
    pub kill_grace_secs: u64,
    /// Default timeout of a job, in seconds.
    pub default_timeout_secs: u64,
    /// Per-command timeouts in seconds, keyed `backup/run` (or `backup_run`).
    pub timeouts: BTreeMap<String, u64>,
    /// Jobs of read-role commands that may wait `queued` at once; more are `busy`.
    pub max_queued_read: usize,
    /// The same for write-role and admin-role commands (a separate allowance, and
    /// they start before any queued read job, so reads cannot starve them).
    pub max_queued_write: usize,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            max_concurrent: 2,
            log_lines_kept: 10_000,
            stored_lines: 1_000,
            log_qos: 0,
            ttl_secs: 7 * 24 * 3600,
            kill_grace_secs: 30,
            default_timeout_secs: 24 * 3600,
            timeouts: BTreeMap::new(),
            max_queued_read: 8,
            max_queued_write: 32,
        }
    }
}

impl JobSettings {
    /// The timeout of one command, `archive/list` or its environment form `archive_list`.
    pub fn timeout_for(&self, command: &str) -> std::time::Duration {
        let secs = self
            .timeouts
            .iter()
            .find(|(k, _)| normalise_command_key(k) == command)
            .map(|(_, v)| *v)
            .unwrap_or(self.default_timeout_secs);
        std::time::Duration::from_secs(secs)
    }
}

fn normalise_command_key(key: &str) -> String {
    if key.contains('/') {
        key.to_string()
    } else {
        key.replacen('_', "/", 1)
    }
}

/// `[health]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSettings {
    /// Seconds between two probes of a repository's newest archive (0: only
    /// after jobs).
    pub probe_interval_secs: u64,
    /// A newest archive older than this is a problem (default 26 h: a nightly
    /// backup plus slack).
    pub max_age_secs: u64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            probe_interval_secs: 3600,
            max_age_secs: 26 * 3600,
        }
    }
}
