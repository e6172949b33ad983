//! Accepting a job: the per-line queue caps, the exclusive locks (one active job
//! per repository), and the record that must be stored before anyone hears of it.
//! May import: the engine's state, `domain`, `config` (never the command model).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument;

use super::super::events::JobEvent;
use super::super::log::LogBuffer;
use super::super::record::JobRecord;
use super::super::record::JobResult;
use super::super::slots::Priority;
use super::super::Task;
use super::{lock, Holder, Job, JobEngine};
use crate::config::JobSettings;
use crate::domain::Role;
use crate::domain::{JobId, RepositoryLabel, RequestId};
use tokio_util::sync::CancellationToken;

/// What the service asks the engine to run.
pub struct JobSpec {
    /// The command's wire name (`backup/run`), for its record and logs.
    pub command: &'static str,
    /// The least role of the command: read-role jobs queue behind write-role ones.
    pub role: Role,
    /// The repository the job works on (shown in its record).
    pub repository: Option<RepositoryLabel>,
    /// What the job holds exclusively while it is queued or running (`repo:<label>`,
    /// `aio`, `container:<name>`): a second job wanting any of them is `busy`.
    pub locks: Vec<String>,
    /// The client's request id, kept in the record (a retry finds its job).
    pub request_id: Option<RequestId>,
    /// Past this the job is cancelled as timed out.
    pub timeout: Duration,
    /// What the job does once it holds its locks and a running place.
    pub task: Box<dyn Task>,
    /// Secrets of this job alone (from the request) to scrub from its output.
    pub secrets: Vec<String>,
    /// Runs at once even when `jobs.max_concurrent` jobs run (emergency stop).
    pub bypass_limit: bool,
    /// The worker's own background work (repository health probes), submitted with
    /// [`JobEngine::submit_background`]: refused (`busy`) when anything holds its
    /// locks, while a client's job that finds only background work holding them
    /// stops that work and waits for its process to end instead — a probe never
    /// makes a client's request `busy` nor holds it up. It is private to its
    /// submitter: never listed, published, stored or counted.
    pub background: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
/// Why a job was not started (the service maps each to a wire code).
pub enum SubmitError {
    #[error("{what} already has an active job {job_id}")]
    /// A lock the job needs is held by another job.
    Busy {
        /// What is held (`repository nc`, `Nextcloud AIO`).
        what: String,
        /// The job that holds it.
        job_id: JobId,
    },
    #[error(
        "{queued} {class} jobs are already queued (the most allowed); retry when some have run"
    )]
    /// The job's queue line is full.
    QueueFull {
        /// Which line (`read-role`, `write- and admin-role`).
        class: &'static str,
        /// How many wait in it.
        queued: usize,
    },
    #[error("the worker is shutting down")]
    /// The worker is stopping and takes no new work.
    ShuttingDown,
    /// The job's record could not be written: the job was not started.
    #[error("the job was not started: its record cannot be stored ({0})")]
    Storage(String),
}

impl JobEngine {
    /// Starts a job, or refuses when its repository is busy.
    pub fn submit(&self, mut spec: JobSpec) -> Result<JobRecord, SubmitError> {
        spec.background = false;
        self.start(spec, None)
    }

    /// Starts the worker's own background work (see [`JobSpec::background`]); its
    /// result arrives on the receiver only.
    pub fn submit_background(
        &self,
        mut spec: JobSpec,
    ) -> Result<tokio::sync::oneshot::Receiver<JobResult>, SubmitError> {
        spec.background = true;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.start(spec, Some(tx))?;
        Ok(rx)
    }

    fn start(
        &self,
        spec: JobSpec,
        report: Option<tokio::sync::oneshot::Sender<JobResult>>,
    ) -> Result<JobRecord, SubmitError> {
        if self.shared.closing.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        let record = JobRecord::queued(
            spec.command,
            spec.repository.as_ref().map(|r| r.as_str().to_string()),
            spec.request_id.clone(),
        );
        let job_id = record.job_id;
        // Emergency stop never waits, so it never queues.
        let line = (!spec.bypass_limit).then(|| Line::of(spec.role));
        let released = CancellationToken::new();
        let wait_for = self.reserve(line, &spec.locks, job_id, spec.background, &released)?;
        if let Err(e) = self.save_new(&record, spec.background) {
            self.release(line, &spec.locks, job_id);
            return Err(e);
        }
        let redactor = if spec.secrets.is_empty() {
            self.shared.redactor.clone()
        } else {
            self.shared.redactor.with(spec.secrets)
        };
        let wait_for = self.stop_background_holders(wait_for);
        let job = Arc::new(Job {
            background: spec.background,
            report: Mutex::new(report),
            redactor,
            record: Mutex::new(record.clone()),
            log: Mutex::new(Some(LogBuffer::new(
                job_id,
                self.shared.settings.log_lines_kept,
            ))),
            cancel: CancellationToken::new(),
            reason: Mutex::new(None),
            data: Mutex::new(None),
        });
        lock(&self.shared.jobs).insert(job_id, job.clone());
        if !spec.background {
            self.shared
                .events
                .emit(JobEvent::State(Arc::new(record.clone())));
        }

        let span = tracing::info_span!(
            "job",
            job_id = %job_id,
            command = spec.command,
            request_id = spec.request_id.as_ref().map(|r| r.as_str()),
        );
        let shared = self.shared.clone();
        let runtime = self.shared.runtime.clone();
        self.shared.tracker.spawn_on(
            super::run::run_job(
                shared,
                job,
                spec.task,
                (spec.timeout, spec.locks, released),
                wait_for,
                line,
            )
            .instrument(span),
            &runtime,
        );
        Ok(record)
    }

    /// No record, no job: a job clients were told about must survive a restart.
    /// (Background work is never stored.)
    fn save_new(&self, record: &JobRecord, background: bool) -> Result<(), SubmitError> {
        let saved = match self.shared.store.disk_problem() {
            _ if background => Ok(()),
            Some(p) => Err(crate::jobs::StoreError::Disk(p.to_string())),
            None => self.shared.store.save(record, None),
        };
        saved.map_err(|e| {
            crate::jobs::store_error("storing a new job", &e);
            SubmitError::Storage(self.shared.store.problem(&e))
        })
    }

    /// Background work this job took its locks over from yields: it is asked to
    /// stop, and this job starts once its process has ended (the tokens returned).
    fn stop_background_holders(
        &self,
        holders: Vec<(JobId, CancellationToken)>,
    ) -> Vec<CancellationToken> {
        for (holder, _) in &holders {
            if let Some(j) = lock(&self.shared.jobs).get(holder).cloned() {
                lock(&j.reason).get_or_insert(crate::jobs::CancelReason::User);
                j.cancel.cancel();
            }
        }
        holders.into_iter().map(|(_, r)| r).collect()
    }

    /// Takes a place in the job's queue line and its locks, or says why not.
    /// Returns the background holders this job takes its locks over from.
    fn reserve(
        &self,
        line: Option<Line>,
        locks: &[String],
        job_id: JobId,
        background: bool,
        released: &CancellationToken,
    ) -> Result<Vec<(JobId, CancellationToken)>, SubmitError> {
        if let Some(line) = line {
            let mut queued = lock(&self.shared.queued);
            let cap = line.cap(&self.shared.settings);
            if queued[line as usize] >= cap {
                return Err(SubmitError::QueueFull {
                    class: line.name(),
                    queued: queued[line as usize],
                });
            }
            queued[line as usize] += 1;
        }
        let mut active = lock(&self.shared.active);
        let blocking = locks.iter().find_map(|k| {
            active
                .get(k)
                .filter(|h| background || !h.background)
                .map(|h| (k, h.job_id))
        });
        if let Some((key, holder)) = blocking {
            if let Some(line) = line {
                lock(&self.shared.queued)[line as usize] -= 1;
            }
            return Err(SubmitError::Busy {
                what: describe_lock(key),
                job_id: holder,
            });
        }
        let mut taken_over = Vec::new();
        for key in locks {
            let holder = Holder {
                job_id,
                background,
                released: released.clone(),
            };
            if let Some(previous) = active.insert(key.clone(), holder) {
                taken_over.push((previous.job_id, previous.released));
            }
        }
        Ok(taken_over)
    }

    /// Gives back what [`Self::reserve`] took (the job was not started).
    fn release(&self, line: Option<Line>, locks: &[String], job_id: JobId) {
        if let Some(line) = line {
            lock(&self.shared.queued)[line as usize] -= 1;
        }
        let mut active = lock(&self.shared.active);
        for key in locks {
            if active.get(key).is_some_and(|h| h.job_id == job_id) {
                active.remove(key);
            }
        }
    }
}

/// The queue a job waits in: read-role commands, or write- and admin-role ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Line {
    Read = 0,
    Write = 1,
}

impl Line {
    pub(super) fn of(role: Role) -> Line {
        match role {
            Role::Read => Line::Read,
            Role::Write | Role::Admin => Line::Write,
        }
    }
    fn cap(self, s: &JobSettings) -> usize {
        match self {
            Line::Read => s.max_queued_read,
            Line::Write => s.max_queued_write,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Line::Read => "read-role",
            Line::Write => "write- and admin-role",
        }
    }
    pub(super) fn priority(self) -> Priority {
        match self {
            Line::Read => Priority::Low,
            Line::Write => Priority::High,
        }
    }
}

/// `repo:nc` → `repository nc`, for messages.
fn describe_lock(key: &str) -> String {
    match key.split_once(':') {
        Some(("repo", l)) => format!("repository {l}"),
        Some(("container", c)) => format!("container {c}"),
        _ if key == "aio" => "Nextcloud AIO".into(),
        _ => key.to_string(),
    }
}

/// The lock key of a repository.
pub fn repo_lock(label: &RepositoryLabel) -> String {
    format!("repo:{label}")
}
