//! The retained `last/<repository>/backup|verify` summaries: what dashboards, Home
//! Assistant and Node-RED read to know how the last backup went.
//!
//! A summary carries a `result` word besides the job's `state`, so that a backup
//! that left files out (`partial`) can never read as a success to a client that
//! only looks at one field.

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
}
