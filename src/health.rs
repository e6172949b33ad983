//! Backup health that cannot lie: per repository, whether there is a problem and
//! when the last successful backup was, read from the **repository itself** (its
//! newest archive), so archives made by borgmatic's own schedule or by Nextcloud
//! AIO count too, and a worker that never ran a backup still notices a stale
//! repository.
//!
//! Each repository is probed with `repo-list --last 1 --json` (one cheap borg
//! call) at start-up and every `health.probe_interval_secs`; every finished
//! backup and verification updates the health at once (a backup's archive is
//! the newest). A probe is an ordinary `archive/list` job: it holds the
//! repository for its second or so like any job, so it never runs beside a
//! backup (a probe meeting a busy repository is skipped until the next one).
//!
//! `problem` is on when the newest archive is older than `health.max_age_secs`,
//! when the repository has no archive or cannot be read, when the last backup
//! failed, was interrupted or left files out, or when the last verification
//! failed. The reasons travel with it. Published as retained
//! `repos/<repository>/health` and as Prometheus gauges.
//!
//! Imports `command` (command names, labels), `config`, `exec::borgmatic` (the
//! probe), `jobs`, `service` (to submit probes), `metrics` and `mqtt::summary` (the
//! summary a result gives).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::command::RepositoryLabel;
use crate::config::Settings;
use crate::jobs::{JobEvent, JobResult, JobState};
use crate::mqtt::summary;
use crate::service::Service;

/// What a job told about a repository.
#[derive(Debug, Clone, Default)]
struct Outcome {
    result: String,
    archive: Option<String>,
    finished_at: Option<DateTime<Utc>>,
    error: Option<String>,
}

/// What is known about one repository.
#[derive(Debug, Clone, Default)]
pub struct RepoHealth {
    newest_archive: Option<String>,
    newest_time: Option<DateTime<Utc>>,
    probed_at: Option<DateTime<Utc>>,
    probe_error: Option<String>,
    backup: Option<Outcome>,
    verify: Option<Outcome>,
}

impl RepoHealth {
    /// The last successful backup: the newest archive, unless this worker knows
    /// it is the incomplete archive of a partial backup.
    fn last_success(&self) -> Option<DateTime<Utc>> {
        let partial_newest = self.backup.as_ref().is_some_and(|b| {
            b.result == "partial" && b.archive.is_some() && b.archive == self.newest_archive
        });
        if partial_newest {
            None
        } else {
            self.newest_time
        }
    }

    /// Why the repository needs attention (empty: it does not).
    fn reasons(&self, max_age: Duration, now: DateTime<Utc>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.probe_error {
            out.push(format!("the repository could not be read: {e}"));
        } else if self.probed_at.is_some() {
            match self.newest_time {
                None => out.push("the repository has no archive".into()),
                // Compared at full precision: a probe a fraction of a second past
                // max_age already sees a stale archive.
                Some(t) => {
                    if (now - t).to_std().is_ok_and(|age| age > max_age) {
                        out.push(format!(
                            "the newest archive is {} old (more than {})",
                            span((now - t).num_seconds().max(0) as u64),
                            span(max_age.as_secs())
                        ));
                    }
                }
            }
        }
        if let Some(b) = &self.backup {
            if matches!(b.result.as_str(), "partial" | "failed" | "interrupted") {
                let why = b.error.as_deref().unwrap_or("no reason given");
                out.push(format!("the last backup is {}: {why}", b.result));
            }
        }
        if let Some(v) = &self.verify {
            if matches!(v.result.as_str(), "failed" | "warning") {
                let why = v.error.as_deref().unwrap_or("no reason given");
                out.push(format!("the last verification failed: {why}"));
            }
        }
        out
    }

    /// The retained `repos/<repository>/health` document.
    pub fn report(&self, max_age: Duration, now: DateTime<Utc>) -> Value {
        let reasons = self.reasons(max_age, now);
        json!({
            "problem": !reasons.is_empty(),
            "reason": reasons.first(),
            "reasons": reasons,
            "last_success": self.last_success(),
            "newest_archive": self.newest_archive,
            "newest_archive_time": self.newest_time,
            "max_age_secs": max_age.as_secs(),
            "probed_at": self.probed_at,
            "last_backup_result": self.backup.as_ref().map(|b| b.result.clone()),
            "last_verify_result": self.verify.as_ref().map(|v| v.result.clone()),
        })
    }

    /// Takes in a finished backup or verification.
    fn record(&mut self, r: &JobResult) {
        let Some((_, kind, s)) = summary::last_summary(r) else {
            return;
        };
        let outcome = Outcome {
            result: s["result"].as_str().unwrap_or("failed").to_string(),
            archive: s["archive"].as_str().map(str::to_string),
            finished_at: r.record.finished_at,
            error: s["reason"]
                .as_str()
                .or(s["error"].as_str())
                .map(str::to_string),
        };
        // A backup's archive is the repository's newest: no probe needed (a probe
        // right after a job would hold the repository when a client chains its
        // next command on the result).
        let made_archive = matches!(outcome.result.as_str(), "succeeded" | "warning" | "partial");
        if kind == "backup"
            && made_archive
            && outcome.archive.is_some()
            && self
                .newest_time
                .is_none_or(|t| Some(t) <= outcome.finished_at)
        {
            self.newest_archive = outcome.archive.clone();
            self.newest_time = outcome.finished_at;
        }
        let slot = if kind == "backup" {
            &mut self.backup
        } else {
            &mut self.verify
        };
        // A result older than the one known changes nothing (start-up history).
        if slot
            .as_ref()
            .is_none_or(|o| o.finished_at <= outcome.finished_at)
        {
            *slot = Some(outcome);
        }
    }

    /// Takes in a probe's `archive/list` result.
    fn probed(&mut self, r: &JobResult, now: DateTime<Utc>) {
        self.probed_at = Some(now);
        if !matches!(r.record.state, JobState::Succeeded | JobState::Warning) {
            self.probe_error = Some(
                r.record
                    .error
                    .clone()
                    .unwrap_or_else(|| r.record.state.as_str().to_string()),
            );
            return;
        }
        self.probe_error = None;
        let newest = r
            .data
            .as_ref()
            .and_then(|d| d["archives"].as_array())
            .and_then(|a| {
                a.iter()
                    .filter_map(|a| Some((a["name"].as_str()?, archive_time(&a["time"])?)))
                    .max_by_key(|(_, t)| *t)
            });
        self.newest_archive = newest.map(|(n, _)| n.to_string());
        self.newest_time = newest.map(|(_, t)| t);
    }
}

/// An age for a reason: whole hours, or minutes / seconds below an hour (a
/// `max_age_secs` of minutes must not read "0 h old (more than 0 h)").
fn span(secs: u64) -> String {
    match secs {
        3600.. => format!("{} h", secs / 3600),
        60.. => format!("{} min", secs / 60),
        s => format!("{s} s"),
    }
}

/// borg prints archive times in the local time zone without an offset.
fn archive_time(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?;
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Where reports go (MQTT; `None` when only the metrics are wanted).
pub type Sink = Arc<dyn Fn(&str, &Value) + Send + Sync>;

/// Starts the prober; it ends when `stop` fires.
pub fn spawn(settings: Arc<Settings>, service: Arc<Service>, sink: Sink, stop: CancellationToken) {
    let mut events = service.engine().subscribe_reliable(false);
    tokio::spawn(async move {
        let max_age = Duration::from_secs(settings.health.max_age_secs);
        let mut repos: HashMap<String, RepoHealth> = HashMap::new();
        // What the history still knows (newest first: the first of each wins).
        for rec in service.engine().list(None, usize::MAX).into_iter().rev() {
            if let Some(r) = service.engine().result(rec.job_id) {
                if let Some(repo) = &rec.repository {
                    repos.entry(repo.clone()).or_default().record(&r);
                }
            }
        }
        // Probe results, private to the prober (see `JobSpec::background`).
        let (probed_tx, mut probed) = tokio::sync::mpsc::channel::<(String, JobResult)>(64);
        let every = match settings.health.probe_interval_secs {
            0 => Duration::from_secs(365 * 24 * 3600),
            s => Duration::from_secs(s),
        };
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    for label in service.borgmatic().labels() {
                        probe(&service, &label, &probed_tx);
                    }
                }
                Some((repo, r)) = probed.recv() => {
                    // Stopped for a client's job, or at shutdown: it says nothing.
                    if r.record.state == JobState::Cancelled
                        || r.record.state == JobState::Interrupted
                    {
                        continue;
                    }
                    let health = repos.entry(repo.clone()).or_default();
                    health.probed(&r, Utc::now());
                    publish(&sink, &repo, health, max_age);
                }
                e = events.recv() => {
                    let Some(JobEvent::Result(r)) = e else {
                        if e.is_none() { return; }
                        continue;
                    };
                    let Some(repo) = r.record.repository.clone() else { continue };
                    let health = repos.entry(repo.clone()).or_default();
                    if matches!(r.record.command.as_str(), "backup/run" | "backup/verify") {
                        health.record(&r);
                    } else {
                        continue;
                    }
                    publish(&sink, &repo, health, max_age);
                }
            }
        }
    });
}

fn publish(sink: &Sink, repo: &str, health: &RepoHealth, max_age: Duration) {
    let report = health.report(max_age, Utc::now());
    crate::metrics::health(repo, &report);
    sink(repo, &report);
}

/// Submits a probe unless the repository is busy; its result reaches `probed`.
fn probe(service: &Service, label: &str, probed: &tokio::sync::mpsc::Sender<(String, JobResult)>) {
    let Ok(parsed) = RepositoryLabel::parse(label) else {
        return;
    };
    match service.list_archives_in_background(&parsed, 1) {
        Ok(done) => {
            let probed = probed.clone();
            let label = label.to_string();
            tokio::spawn(async move {
                if let Ok(result) = done.await {
                    let _ = probed.send((label, result)).await;
                }
            });
        }
        Err(e) => tracing::debug!(repository = label, error = %e, "health probe skipped"),
    }
}

#[cfg(test)]
mod tests;
