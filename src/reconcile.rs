//! Start-up reconciliation, before the worker accepts work: processes a killed
//! worker left behind are ended ([`crate::jobs::supervise`]), and each backup that
//! was interrupted is compared with its repository: when the repository holds an
//! archive started during that run (borg's archive time between the job's start and
//! now), the job record and the `last/<repository>/backup` summary say so
//! (`archive_written`) — the record never says one thing and the repository another.
//! May import: `jobs`, `service`, `exec`, `command`, `config`.

use std::time::Duration;

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

use crate::command::{CommandName, RepositoryLabel};
use crate::config::Settings;
use crate::jobs::{JobRecord, JobState};
use crate::service::Service;

/// Runs both reconciliations; failures are logged (the worker still starts).
pub async fn at_start(settings: &Settings, service: &Service) {
    let grace = Duration::from_secs(settings.jobs.kill_grace_secs.max(1));
    match crate::jobs::supervise::end_orphans(service.engine().store(), grace).await {
        Ok(found) if !found.is_empty() => {
            tracing::warn!(
                jobs = found.len(),
                "ended processes left behind by a killed worker"
            )
        }
        Ok(_) => {}
        Err(e) => crate::jobs::store_error("reading the recorded job processes", &e),
    }
    for rec in service.engine().interrupted_at_start() {
        if rec.command == CommandName::BackupRun.as_str() {
            if let Some(archive) = archive_of(service, &rec).await {
                tracing::warn!(job_id = %rec.job_id, archive, "an interrupted backup wrote its archive");
                service.engine().archive_written(rec.job_id, &archive);
            }
        }
    }
}

/// The archive an interrupted backup wrote, if the repository holds one.
async fn archive_of(service: &Service, rec: &JobRecord) -> Option<String> {
    let started = rec.started_at?;
    let label = RepositoryLabel::parse(rec.repository.as_deref()?).ok()?;
    let done = match service.list_archives_in_background(&label, 5) {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(error = %e, "could not list archives to reconcile an interrupted backup");
            return None;
        }
    };
    let r = done.await.ok()?;
    if !matches!(r.record.state, JobState::Succeeded | JobState::Warning) {
        tracing::warn!(error = ?r.record.error, "listing archives to reconcile an interrupted backup failed");
        return None;
    }
    written_since(r.data.as_ref()?, started, Utc::now())
}

/// The newest archive whose start time lies in `from..=to` (borg's time is local
/// without an offset; a little slack for clocks rounding to the second).
fn written_since(data: &Value, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<String> {
    let slack = chrono::Duration::seconds(2);
    data["archives"]
        .as_array()?
        .iter()
        .filter_map(|a| Some((a["name"].as_str()?, archive_time(a["time"].as_str()?)?)))
        .filter(|(_, t)| *t + slack >= from && *t <= to + slack)
        .max_by_key(|(_, t)| *t)
        .map(|(n, _)| n.to_string())
}

fn archive_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_archive_started_during_the_run_counts() {
        let from = Utc::now() - chrono::Duration::seconds(60);
        let local = |d: chrono::Duration| {
            (Utc::now() + d)
                .with_timezone(&Local)
                .naive_local()
                .format("%Y-%m-%dT%H:%M:%S%.6f")
                .to_string()
        };
        let data = serde_json::json!({"archives": [
            {"name": "before", "time": local(-chrono::Duration::seconds(3600))},
            {"name": "during", "time": local(-chrono::Duration::seconds(30))},
        ]});
        assert_eq!(
            written_since(&data, from, Utc::now()).as_deref(),
            Some("during")
        );
        let later = Utc::now() - chrono::Duration::seconds(10);
        assert_eq!(written_since(&data, later, Utc::now()), None);
    }
}
