//! The retained `last/<repository>/backup|verify` summaries: what dashboards, Home
//! Assistant and Node-RED read to know how the last backup went.
//!
//! A summary carries a `result` word besides the job's `state`, so that a backup
//! that left files out (`partial`) can never read as a success to a client that
//! only looks at one field.
//!
//! May import: `jobs`.

use serde_json::{json, Value};

use crate::jobs::{JobResult, JobState};

/// The one-word outcome of a backup: the job state, except that a backup which
/// left files out is `partial` (its archive exists but is incomplete).
pub fn backup_result(state: JobState, data: Option<&Value>) -> &'static str {
    let partial = data.and_then(|d| d.get("partial")).and_then(Value::as_bool) == Some(true);
    match state {
        JobState::Succeeded | JobState::Warning if partial => "partial",
        s => s.as_str(),
    }
}

/// The summary a result gives, if any, with its repository and kind (`backup`,
/// `verify`). Dry runs leave the last real backup in place.
pub fn last_summary(r: &JobResult) -> Option<(String, &'static str, Value)> {
    let rec = &r.record;
    let repo = rec.repository.clone()?;
    let data = r.data.clone().unwrap_or(Value::Null);
    let duration = match (rec.started_at, rec.finished_at) {
        (Some(s), Some(f)) => Some((f - s).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    let mut summary = json!({
        "job_id": rec.job_id,
        "state": rec.state,
        "finished_at": rec.finished_at,
        "duration_secs": duration,
        "error": rec.error,
    });
    match rec.command.as_str() {
        "backup/run" if data["dry_run"] != true => {
            summary["result"] = json!(backup_result(rec.state, r.data.as_ref()));
            summary["partial"] = json!(data["partial"] == true);
            summary["skipped_files"] = json!(data["skipped_files"].as_u64().unwrap_or(0));
            for k in [
                "archive",
                "stats",
                "skipped_reasons",
                "skipped",
                "changed_files",
                "reason",
                "archive_written",
            ] {
                summary[k] = data[k].clone();
            }
            Some((repo, "backup", summary))
        }
        "backup/verify" => {
            summary["result"] = json!(rec.state.as_str());
            for k in [
                "verified",
                "archive",
                "sampled",
                "matched",
                "mismatched",
                "changed",
                "missing",
            ] {
                summary[k] = data[k].clone();
            }
            Some((repo, "verify", summary))
        }
        _ => None,
    }
}

/// Commands whose job makes the repository's "backup running" sensor ON: those
/// that write to the repository (a backup, or the maintenance that rewrites it).
/// Reads (listings, verification, checks, mounts) leave it OFF.
pub fn marks_running(command: &str) -> bool {
    matches!(
        command,
        "backup/run" | "aio/backup" | "repo/prune" | "repo/compact"
    )
}

/// Every `event_type` the per-repository event entity can carry.
pub const EVENT_TYPES: &[&str] = &[
    "backup_succeeded",
    "backup_partial",
    "backup_warning",
    "backup_failed",
    "backup_cancelled",
    "backup_interrupted",
    "verify_succeeded",
    "verify_failed",
    "verify_cancelled",
    "verify_interrupted",
    "press_refused",
];

/// The non-retained event a finished backup or verification gives (published on
/// `repos/<repository>/event` so that every occurrence reaches Home Assistant,
/// two failures in a row included), built from the summary.
pub fn event(kind: &str, summary: &Value) -> Value {
    let result = summary["result"].as_str().unwrap_or("failed");
    let word = match (kind, result) {
        ("verify", "warning") => "failed",
        ("verify", r) => r,
        (_, r) => r,
    };
    let mut e = json!({
        "event_type": format!("{kind}_{word}"),
        "job_id": summary["job_id"],
        "archive": summary["archive"],
        "error": summary["error"],
        "finished_at": summary["finished_at"],
    });
    if kind == "backup" {
        e["skipped_files"] = summary["skipped_files"].clone();
    }
    e
}

/// The event of a Home Assistant button press the worker refused (`busy`, rate
/// limited, ...): the user pressed, nothing ran, and they must learn why.
pub fn press_refused(action: &str, code: &str, message: &str) -> Value {
    json!({
        "event_type": "press_refused",
        "action": action,
        "code": code,
        "error": message,
    })
}

/// What `repos/<repository>/progress` carries while a writing job runs: the bytes
/// and files borg went through so far (and a percent when borg gives one).
pub fn progress(job_id: &str, command: &str, progress: Option<&Value>) -> Value {
    let p = progress.cloned().unwrap_or(Value::Null);
    json!({
        "active": true,
        "job_id": job_id,
        "command": command,
        "bytes": p.get("original_size").cloned().unwrap_or(Value::Null),
        "files": p.get("nfiles").cloned().unwrap_or(Value::Null),
        "percent": p.get("percent").cloned().unwrap_or(Value::Null),
    })
}

/// `repos/<repository>/progress` when nothing writes to the repository.
pub fn idle_progress() -> Value {
    json!({ "active": false, "bytes": null, "files": null, "percent": null })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobRecord;

    fn result(state: JobState, data: Value) -> JobResult {
        let mut record = JobRecord::queued("backup/run", Some("nas".into()), None);
        record.state = state;
        JobResult {
            record,
            data: Some(data),
        }
    }

    #[test]
    fn a_partial_backup_says_so_in_every_field_a_client_reads() {
        let r = result(
            JobState::Warning,
            json!({"archive": "nas-1", "partial": true, "skipped_files": 3,
                   "skipped_reasons": {"permission_denied": 3},
                   "skipped": [{"path": "/s/a", "reason": "permission_denied"}],
                   "reason": "borg could not read 3 file(s)"}),
        );
        let (repo, kind, s) = last_summary(&r).unwrap();
        assert_eq!((repo.as_str(), kind), ("nas", "backup"));
        assert_eq!(s["result"], "partial");
        assert_eq!(s["state"], "warning");
        assert_eq!(s["partial"], true);
        assert_eq!(s["skipped_files"], 3);
        assert_eq!(s["skipped"][0]["path"], "/s/a");
        assert_eq!(s["archive"], "nas-1");

        let ok = result(
            JobState::Succeeded,
            json!({"archive": "nas-2", "partial": false, "skipped_files": 0}),
        );
        let (_, _, s) = last_summary(&ok).unwrap();
        assert_eq!(
            (s["result"].as_str(), s["skipped_files"].as_u64()),
            (Some("succeeded"), Some(0))
        );
        // A failure without data still has a result and no skipped files claimed.
        let mut failed = result(JobState::Failed, Value::Null);
        failed.data = None;
        let (_, _, s) = last_summary(&failed).unwrap();
        assert_eq!(
            (s["result"].as_str(), s["partial"].as_bool()),
            (Some("failed"), Some(false))
        );
        // Dry runs leave the summary alone.
        assert!(last_summary(&result(JobState::Succeeded, json!({"dry_run": true}))).is_none());
    }

    #[test]
    fn every_result_gives_an_event_of_a_declared_type() {
        for (kind, result) in [
            ("backup", "succeeded"),
            ("backup", "partial"),
            ("backup", "warning"),
            ("backup", "failed"),
            ("backup", "cancelled"),
            ("backup", "interrupted"),
            ("verify", "succeeded"),
            ("verify", "warning"),
            ("verify", "failed"),
            ("verify", "cancelled"),
            ("verify", "interrupted"),
        ] {
            let e = event(kind, &json!({"result": result, "job_id": "j"}));
            let t = e["event_type"].as_str().unwrap();
            assert!(EVENT_TYPES.contains(&t), "{t}");
        }
        assert!(EVENT_TYPES.contains(&"press_refused"));
        assert!(marks_running("backup/run") && !marks_running("archive/list"));
        assert!(!marks_running("backup/verify") && !marks_running("repo/check"));
    }
}
