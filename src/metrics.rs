//! Prometheus metrics. Job and repository figures are taken from job results as
//! they happen, never by running borg at scrape time (what makes borgmatic
//! exporters fight over the repository lock); gauges of live state are read from
//! memory when scraped.
//!
//! Imports `jobs` (results and counts) and `commands` (command names) only: the
//! MQTT link's state arrives as a value ([`LinkStatus`]), so this module depends on
//! no transport (and the transports, which count requests here, form no cycle with
//! it).

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::commands::CommandName;
use crate::jobs::{JobEngine, JobEvent, JobResult, JobState, ReliableEvents};

/// The broker link's state at scrape time, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Connected to the broker now.
    pub connected: bool,
    /// Reconnects since start.
    pub reconnects: u64,
}

/// Installs the process-wide recorder once and returns its handle (the same one on
/// every call: several in-process test workers share it); `None` if another
/// recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE.get_or_init(build_and_install).clone()
}

fn build_and_install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("bmqtt_job_duration_seconds".into()),
            &[
                1.0,
                5.0,
                15.0,
                60.0,
                300.0,
                900.0,
                3600.0,
                4.0 * 3600.0,
                12.0 * 3600.0,
            ],
        )
        .ok()?
        .install_recorder()
        .ok()
}

/// One answered request.
pub fn request(transport: &'static str, outcome: &str) {
    metrics::counter!("bmqtt_requests_total", "transport" => transport, "code" => outcome.to_string())
        .increment(1);
}

/// One request refused by a rate limit.
pub fn rate_limited(transport: &'static str) {
    metrics::counter!("bmqtt_rate_limited_total", "transport" => transport).increment(1);
}

/// Follows job results for the job and repository metrics.
pub fn spawn_job_metrics(mut events: ReliableEvents) {
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let JobEvent::Result(r) = e {
                record_result(&r);
            }
        }
    });
}

fn record_result(r: &JobResult) {
    let rec = &r.record;
    let command = rec.command.clone();
    // A backup that left files out counts as `partial`, never among the warnings
    // an alert may tolerate.
    let outcome = job_outcome(&command, rec.state, r.data.as_ref());
    metrics::counter!("bmqtt_jobs_total", "command" => command.clone(), "outcome" => outcome)
        .increment(1);
    let duration = match (rec.started_at, rec.finished_at) {
        (Some(s), Some(f)) => (f - s).num_milliseconds().max(0) as f64 / 1000.0,
        _ => 0.0,
    };
    metrics::histogram!("bmqtt_job_duration_seconds", "command" => command.clone())
        .record(duration);
    let Some(repo) = rec.repository.clone() else {
        return;
    };
    let data = r.data.as_ref();
    let flag = |key: &str| data.and_then(|d| d.get(key)).and_then(|v| v.as_bool()) == Some(true);
    let ok = matches!(rec.state, JobState::Succeeded | JobState::Warning) && !flag("partial");
    match CommandName::parse(&command) {
        Some(name) if name.is_backup() && !flag("dry_run") => {
            record_skipped(&repo, data);
            // A partial backup is not a success: the success timestamp stays where it was.
            if ok {
                record_backup(&repo, rec.finished_at, duration, data);
            }
        }
        Some(CommandName::ArchiveExtract) => {
            let unrestored = data
                .and_then(|d| d.get("unrestored_files"))
                .and_then(|v| v.as_u64());
            if let Some(n) = unrestored {
                metrics::gauge!("bmqtt_last_extract_unrestored_files", "repository" => repo)
                    .set(n as f64);
            }
        }
        Some(CommandName::BackupVerify) => {
            if let Some(done) = rec.finished_at {
                metrics::gauge!("bmqtt_last_verify_timestamp_seconds", "repository" => repo.clone())
                    .set(done.timestamp() as f64);
            }
            metrics::gauge!("bmqtt_last_verify_success", "repository" => repo)
                .set(if flag("verified") { 1.0 } else { 0.0 });
        }
        Some(CommandName::ArchiveList) if ok => {
            if let Some(n) = data
                .and_then(|d| d.get("archives"))
                .and_then(|a| a.as_array())
            {
                metrics::gauge!("bmqtt_archives", "repository" => repo).set(n.len() as f64);
            }
        }
        _ => {}
    }
}

/// The figures of a complete backup.
fn record_backup(
    repo: &str,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    duration: f64,
    data: Option<&serde_json::Value>,
) {
    let repo = repo.to_string();
    if let Some(done) = finished_at {
        metrics::gauge!("bmqtt_last_backup_success_timestamp_seconds", "repository" => repo.clone())
            .set(done.timestamp() as f64);
    }
    metrics::gauge!("bmqtt_last_backup_duration_seconds", "repository" => repo.clone())
        .set(duration);
    let stat = |k: &str| {
        data.and_then(|d| d.pointer(&format!("/stats/{k}")))
            .and_then(|v| v.as_f64())
    };
    if let Some(size) = stat("original_size") {
        metrics::gauge!("bmqtt_last_backup_size_bytes", "repository" => repo.clone()).set(size);
    }
    if let Some(size) = stat("deduplicated_size") {
        metrics::gauge!("bmqtt_last_backup_deduplicated_bytes", "repository" => repo).set(size);
    }
}

/// The `outcome` label of a finished job: its state, except that a backup which
/// left files out (`partial`) is `partial` (the same word `mqtt::summary` uses).
fn job_outcome(command: &str, state: JobState, data: Option<&serde_json::Value>) -> &'static str {
    let partial = data
        .and_then(|d| d.get("partial"))
        .and_then(serde_json::Value::as_bool)
        == Some(true);
    match state {
        JobState::Succeeded | JobState::Warning
            if partial && CommandName::parse(command).is_some_and(CommandName::is_backup) =>
        {
            "partial"
        }
        s => s.as_str(),
    }
}

/// What a backup left out: the last backup's count (0 after a complete one; alert
/// on `> 0`) and a running total per reason.
fn record_skipped(repo: &str, data: Option<&serde_json::Value>) {
    let Some(d) = data else { return };
    let Some(n) = d.get("skipped_files").and_then(|v| v.as_u64()) else {
        return;
    };
    metrics::gauge!("bmqtt_last_backup_skipped_files", "repository" => repo.to_string())
        .set(n as f64);
    for (reason, count) in d
        .get("skipped_reasons")
        .and_then(|v| v.as_object())
        .into_iter()
        .flatten()
    {
        if let Some(c) = count.as_u64() {
            metrics::counter!("bmqtt_backup_skipped_files_total",
                "repository" => repo.to_string(), "reason" => reason.clone())
            .increment(c);
        }
    }
}

/// A repository's health (see `health`): when its newest complete archive was
/// made, read from the repository, and whether it needs attention (alert on
/// `bmqtt_repository_problem == 1`).
pub fn health(repo: &str, report: &serde_json::Value) {
    let problem = report["problem"].as_bool() == Some(true);
    metrics::gauge!("bmqtt_repository_problem", "repository" => repo.to_string()).set(if problem {
        1.0
    } else {
        0.0
    });
    let success = report["last_success"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    if let Some(t) = success {
        metrics::gauge!("bmqtt_repository_last_success_timestamp_seconds", "repository" => repo.to_string())
            .set(t.timestamp() as f64);
    }
}

/// The text exposition, with live gauges refreshed first.
pub fn render(handle: &PrometheusHandle, engine: &JobEngine, mqtt: Option<LinkStatus>) -> String {
    metrics::gauge!("bmqtt_jobs_running").set(engine.count(JobState::Running) as f64);
    metrics::gauge!("bmqtt_jobs_queued").set(engine.count(JobState::Queued) as f64);
    if let Some(m) = mqtt {
        metrics::gauge!("bmqtt_mqtt_connected").set(if m.connected { 1.0 } else { 0.0 });
        metrics::gauge!("bmqtt_mqtt_reconnects").set(m.reconnects as f64);
    }
    handle.render()
}
