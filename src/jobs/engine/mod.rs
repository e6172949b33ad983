//! The job engine: jobs with ids, states, logs and results; what it owns is split
//! by concern — [`submission`] (accepting a job: queue caps, locks, its record),
//! [`run`] (the run loop of one job and its end), [`cancellation`] (cancel and
//! shutdown), [`expiry`] (forgetting finished jobs, retrying unsaved records). This
//! file holds the shared state and the read side.
//! May import: `jobs` (store, events, log, record, slots), `domain`, `config`,
//! `redact`; never the command model.

mod cancellation;
mod expiry;
mod run;
mod submission;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events::{Emitter, JobEvent, PublishedLine, ReliableEvents};
use super::log::{LogBuffer, LogLine};
use super::record::{JobRecord, JobResult, JobState};
use super::slots::Slots;
use super::store::Store;
use super::CancelReason;
use crate::config::JobSettings;
use crate::domain::JobId;
use crate::redact::Redactor;

pub use cancellation::CancelError;
use run::persist;
pub use run::TaskContext;
pub use submission::{repo_lock, JobSpec, SubmitError};

struct Job {
    record: Mutex<JobRecord>,
    /// Background work: its result goes to `report`, never to listeners or the store.
    background: bool,
    report: Mutex<Option<tokio::sync::oneshot::Sender<JobResult>>>,
    /// The engine's redactor, plus this job's own secrets.
    redactor: Redactor,
    /// `None` once the job ended and its lines live in the store.
    log: Mutex<Option<LogBuffer>>,
    cancel: CancellationToken,
    reason: Mutex<Option<CancelReason>>,
    data: Mutex<Option<Value>>,
}

/// Who holds a lock key.
#[derive(Clone)]
struct Holder {
    job_id: JobId,
    /// Background work, which a client's job stops and waits for rather than
    /// meets as `busy`.
    background: bool,
    /// Cancelled when the holder has ended.
    released: CancellationToken,
}

struct Shared {
    jobs: Mutex<BTreeMap<JobId, Arc<Job>>>,
    /// Lock key (`repo:<label>`, `aio`, …) → the job holding it.
    active: Mutex<HashMap<String, Holder>>,
    /// The `max_concurrent` running slots, writes first.
    slots: Arc<Slots>,
    /// Jobs waiting for a slot, by [`Line`]: capped per line, so queued jobs (and
    /// their memory) stay bounded and reads cannot fill the writes' allowance.
    queued: Mutex<[usize; 2]>,
    events: Arc<Emitter>,
    store: Store,
    settings: JobSettings,
    redactor: Redactor,
    tracker: TaskTracker,
    /// The runtime the engine was made on: jobs run there whichever adapter (and
    /// so whichever runtime) submitted them (the MQTT adapter has its own thread).
    runtime: tokio::runtime::Handle,
    closing: CancellationToken,
    /// Jobs found running at start-up (now `interrupted`): their results are
    /// announced once, so clients learn how those jobs ended.
    interrupted: Mutex<Vec<JobId>>,
    /// Jobs whose latest record the store refused (retried until written).
    unsaved: Mutex<std::collections::HashSet<JobId>>,
}

/// Cheap to clone; all clones drive one engine.
#[derive(Clone)]
pub struct JobEngine {
    shared: Arc<Shared>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every
/// critical section here leaves the data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl JobEngine {
    /// Builds the engine on a store: jobs that were running when the worker last
    /// stopped are marked `interrupted`, and the history is loaded.
    pub fn new(
        store: Store,
        settings: JobSettings,
        redactor: Redactor,
    ) -> Result<JobEngine, super::StoreError> {
        let interrupted: Vec<JobId> = store
            .mark_interrupted()?
            .into_iter()
            .map(|r| r.job_id)
            .collect();
        let mut jobs = BTreeMap::new();
        for (record, data) in store.load_all()? {
            jobs.insert(
                record.job_id,
                Arc::new(Job {
                    background: false,
                    report: Mutex::new(None),
                    redactor: redactor.clone(),
                    record: Mutex::new(record),
                    log: Mutex::new(None),
                    cancel: CancellationToken::new(),
                    reason: Mutex::new(None),
                    data: Mutex::new(data),
                }),
            );
        }
        let engine = JobEngine {
            shared: Arc::new(Shared {
                jobs: Mutex::new(jobs),
                active: Mutex::new(HashMap::new()),
                slots: Slots::new(settings.max_concurrent.max(1)),
                queued: Mutex::new([0; 2]),
                events: Arc::new(Emitter::new()),
                store,
                settings,
                redactor,
                tracker: TaskTracker::new(),
                runtime: tokio::runtime::Handle::current(),
                closing: CancellationToken::new(),
                interrupted: Mutex::new(interrupted),
                unsaved: Mutex::new(Default::default()),
            }),
        };
        engine.spawn_expiry();
        Ok(engine)
    }

    /// Listens to every job event from now on; a slow listener lags (SSE).
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.shared.events.subscribe()
    }

    /// Every job event from now on, none ever missed. With `logs`, log lines too,
    /// and the jobs' output is paced to this subscriber (the MQTT publisher).
    pub fn subscribe_reliable(&self, logs: bool) -> ReliableEvents {
        self.shared.events.subscribe_reliable(logs)
    }

    /// Re-announces every known job's state, so a fresh listener (the MQTT publisher
    /// at start-up) can correct retained states left by a previous run.
    pub fn announce_all(&self) {
        for rec in self.list(None, usize::MAX) {
            self.shared.events.emit(JobEvent::State(Arc::new(rec)));
        }
        let interrupted = std::mem::take(&mut *lock(&self.shared.interrupted));
        for id in interrupted {
            if let Some(r) = self.result(id) {
                self.shared.events.emit(JobEvent::Result(Arc::new(r)));
            }
        }
    }

    /// Jobs found running at start-up (now `interrupted`), until announced.
    pub fn interrupted_at_start(&self) -> Vec<JobRecord> {
        let ids = lock(&self.shared.interrupted).clone();
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }

    /// Records that an interrupted backup wrote its archive after all (start-up
    /// reconciliation with the repository): in the record and in the result data.
    pub fn archive_written(&self, job_id: JobId, archive: &str) {
        let Some(job) = self.job(job_id) else { return };
        let record = {
            let mut r = lock(&job.record);
            r.archive_written = Some(archive.to_string());
            r.error = Some(format!(
                "the worker stopped while the job ran; the repository holds its archive {archive}"
            ));
            r.clone()
        };
        let data = {
            let mut d = lock(&job.data);
            let mut v = d.take().unwrap_or_else(|| serde_json::json!({}));
            if let Some(o) = v.as_object_mut() {
                o.insert("archive_written".into(), archive.into());
                o.insert("archive".into(), archive.into());
            }
            *d = Some(v.clone());
            v
        };
        self.persist(&record, Some(&data));
    }

    /// The job's current record, while the engine still knows it.
    pub fn get(&self, job_id: JobId) -> Option<JobRecord> {
        self.job(job_id).map(|j| lock(&j.record).clone())
    }

    /// The final record and data of a finished job.
    pub fn result(&self, job_id: JobId) -> Option<JobResult> {
        let job = self.job(job_id)?;
        let record = lock(&job.record).clone();
        if !record.state.is_final() {
            return None;
        }
        let data = lock(&job.data).clone();
        Some(JobResult { record, data })
    }

    /// Newest first, optionally only one state.
    pub fn list(&self, state: Option<JobState>, limit: usize) -> Vec<JobRecord> {
        let jobs = lock(&self.shared.jobs);
        jobs.values()
            .rev()
            .filter(|j| !j.background)
            .map(|j| lock(&j.record).clone())
            .filter(|r| state.is_none_or(|s| r.state == s))
            .take(limit)
            .collect()
    }

    /// Lines with seq > `after`, from memory while the job runs, else from the store.
    pub fn log(&self, job_id: JobId, after: u64, limit: usize) -> Option<Vec<LogLine>> {
        let lines = self.log_shared(job_id, after, limit)?;
        Some(lines.iter().map(|l| l.line.clone()).collect())
    }

    /// Like [`Self::log`], in the form listeners get live lines (SSE refills).
    pub fn log_shared(
        &self,
        job_id: JobId,
        after: u64,
        limit: usize,
    ) -> Option<Vec<Arc<PublishedLine>>> {
        let job = self.job(job_id)?;
        if let Some(buf) = lock(&job.log).as_ref() {
            return Some(buf.after(after, limit).cloned().collect());
        }
        let stored = self.shared.store.lines(job_id).unwrap_or_default();
        Some(
            stored
                .into_iter()
                .filter(|l| l.seq > after)
                .take(limit)
                .map(|l| PublishedLine::new(job_id, l))
                .collect(),
        )
    }

    /// Number of jobs in a state (metrics and readiness).
    pub fn count(&self, state: JobState) -> usize {
        lock(&self.shared.jobs)
            .values()
            .filter(|j| lock(&j.record).state == state)
            .count()
    }

    /// The job store (the MQTT outbox and request ids live there too).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Whether the store accepts writes (readiness); why not, in words.
    pub fn store_check(&self) -> Result<(), String> {
        self.shared.store.check_writable().map_err(|e| {
            crate::jobs::store_error("the readiness probe", &e);
            self.shared.store.problem(&e)
        })
    }

    fn job(&self, job_id: JobId) -> Option<Arc<Job>> {
        lock(&self.shared.jobs).get(&job_id).cloned()
    }

    fn persist(&self, record: &JobRecord, data: Option<&Value>) {
        persist(&self.shared, record, data);
    }
}
