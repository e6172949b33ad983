//! The engine proper: submission, the run loop of one job, cancellation, expiry.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::broadcast;

use super::slots::{Priority, Slots};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::events::{Emitter, JobEvent, Pace, PublishedLine, ReliableEvents};
use super::log::{LogBuffer, LogLine, Stream};
use super::record::{JobRecord, JobResult, JobState};
use super::store::Store;
use super::{CancelReason, Task, TaskOutcome};
use crate::auth::Role;
use crate::command::{CommandName, JobId, RepositoryLabel, RequestId};
use crate::config::JobSettings;
use crate::redact::Redactor;

/// What the service asks the engine to run.
pub struct JobSpec {
    pub command: CommandName,
    /// The repository the job works on (shown in its record).
    pub repository: Option<RepositoryLabel>,
    /// What the job holds exclusively while it is queued or running (`repo:<label>`,
    /// `aio`, `container:<name>`): a second job wanting any of them is `busy`.
    pub locks: Vec<String>,
    pub request_id: Option<RequestId>,
    pub timeout: Duration,
    pub task: Box<dyn Task>,
    /// Secrets of this job alone (from the request) to scrub from its output.
    pub secrets: Vec<String>,
    /// Runs at once even when `jobs.max_concurrent` jobs run (emergency stop).
    pub bypass_limit: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("{what} already has an active job {job_id}")]
    Busy { what: String, job_id: JobId },
    #[error(
        "{queued} {class} jobs are already queued (the most allowed); retry when some have run"
    )]
    QueueFull { class: &'static str, queued: usize },
    #[error("the worker is shutting down")]
    ShuttingDown,
    /// The job's record could not be written: the job was not started.
    #[error("the job was not started: its record cannot be stored ({0})")]
    Storage(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CancelError {
    #[error("no job {0}")]
    NotFound(JobId),
}

struct Job {
    record: Mutex<JobRecord>,
    /// The engine's redactor, plus this job's own secrets.
    redactor: Redactor,
    /// `None` once the job ended and its lines live in the store.
    log: Mutex<Option<LogBuffer>>,
    cancel: CancellationToken,
    reason: Mutex<Option<CancelReason>>,
    data: Mutex<Option<Value>>,
}

struct Shared {
    jobs: Mutex<BTreeMap<JobId, Arc<Job>>>,
    /// Repository label → the job holding it.
    active: Mutex<HashMap<String, JobId>>,
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

    /// Starts a job, or refuses when its repository is busy.
    pub fn submit(&self, spec: JobSpec) -> Result<JobRecord, SubmitError> {
        if self.shared.closing.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        let record = JobRecord::queued(
            spec.command.as_str(),
            spec.repository.as_ref().map(|r| r.as_str().to_string()),
            spec.request_id.clone(),
        );
        let job_id = record.job_id;
        // Emergency stop never waits, so it never queues.
        let line = (!spec.bypass_limit).then(|| Line::of(spec.command));
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
        {
            let mut active = lock(&self.shared.active);
            if let Some((key, holder)) = spec
                .locks
                .iter()
                .find_map(|k| active.get(k).map(|h| (k, *h)))
            {
                if let Some(line) = line {
                    lock(&self.shared.queued)[line as usize] -= 1;
                }
                return Err(SubmitError::Busy {
                    what: describe_lock(key),
                    job_id: holder,
                });
            }
            for key in &spec.locks {
                active.insert(key.clone(), job_id);
            }
        }
        let redactor = if spec.secrets.is_empty() {
            self.shared.redactor.clone()
        } else {
            self.shared.redactor.with(spec.secrets)
        };
        let job = Arc::new(Job {
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
        // No record, no job: a job clients were told about must survive a restart.
        let saved = match self.shared.store.disk_problem() {
            Some(p) => Err(super::StoreError::Disk(p.to_string())),
            None => self.shared.store.save(&record, None),
        };
        if let Err(e) = saved {
            super::store_error("storing a new job", &e);
            if let Some(line) = line {
                lock(&self.shared.queued)[line as usize] -= 1;
            }
            let mut active = lock(&self.shared.active);
            for key in &spec.locks {
                if active.get(key) == Some(&job_id) {
                    active.remove(key);
                }
            }
            return Err(SubmitError::Storage(self.shared.store.problem(&e)));
        }
        lock(&self.shared.jobs).insert(job_id, job.clone());
        self.shared
            .events
            .emit(JobEvent::State(Arc::new(record.clone())));

        let span = tracing::info_span!(
            "job",
            job_id = %job_id,
            command = spec.command.as_str(),
            request_id = spec.request_id.as_ref().map(|r| r.as_str()),
        );
        let shared = self.shared.clone();
        self.shared.tracker.spawn(
            run_job(shared, job, spec.task, spec.timeout, spec.locks, line).instrument(span),
        );
        Ok(record)
    }

    /// Asks a job to stop. A queued job ends at once; a running one when its task
    /// has ended its process. Cancelling a finished job changes nothing.
    pub fn cancel(&self, job_id: JobId, reason: CancelReason) -> Result<JobRecord, CancelError> {
        let job = self.job(job_id).ok_or(CancelError::NotFound(job_id))?;
        let record = lock(&job.record).clone();
        if !record.state.is_final() {
            lock(&job.reason).get_or_insert(reason);
            job.cancel.cancel();
        }
        Ok(record)
    }

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
            super::store_error("the readiness probe", &e);
            self.shared.store.problem(&e)
        })
    }

    /// Stops accepting jobs, interrupts the running ones and waits for them to end
    /// (each task's own grace period applies).
    pub async fn shutdown(&self) {
        self.shared.closing.cancel();
        let jobs: Vec<Arc<Job>> = lock(&self.shared.jobs).values().cloned().collect();
        for job in jobs {
            if !lock(&job.record).state.is_final() {
                lock(&job.reason).get_or_insert(CancelReason::Shutdown);
                job.cancel.cancel();
            }
        }
        self.shared.tracker.close();
        let grace = Duration::from_secs(self.shared.settings.kill_grace_secs + 5);
        if tokio::time::timeout(grace, self.shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("jobs did not end within the grace period");
        }
    }

    fn job(&self, job_id: JobId) -> Option<Arc<Job>> {
        lock(&self.shared.jobs).get(&job_id).cloned()
    }

    fn persist(&self, record: &JobRecord, data: Option<&Value>) {
        persist(&self.shared, record, data);
    }

    fn spawn_expiry(&self) {
        let weak = Arc::downgrade(&self.shared);
        let ttl = Duration::from_secs(self.shared.settings.ttl_secs);
        let every = ttl.clamp(Duration::from_millis(200), Duration::from_secs(60));
        let closing = self.shared.closing.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = closing.cancelled() => return,
                }
                let Some(shared) = weak.upgrade() else { return };
                retry_unsaved(&shared);
                expire(&shared, ttl);
            }
        });
    }
}

/// The queue a job waits in: read-role commands, or write- and admin-role ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Read = 0,
    Write = 1,
}

impl Line {
    fn of(command: CommandName) -> Line {
        match command.role() {
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
    fn priority(self) -> Priority {
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

/// Writes a record; when the disk refuses, the job is remembered as unsaved and
/// written again by the expiry loop once it can be (the disk filled mid-job: the
/// job's result is still published from memory meanwhile).
fn persist(shared: &Shared, record: &JobRecord, data: Option<&Value>) {
    if let Err(e) = shared.store.save(record, data) {
        super::store_error("storing a job record", &e);
        lock(&shared.unsaved).insert(record.job_id);
    }
}

/// Writes the records that could not be written before (see [`persist`]).
fn retry_unsaved(shared: &Shared) {
    let ids: Vec<JobId> = lock(&shared.unsaved).iter().copied().collect();
    for id in ids {
        let Some(job) = lock(&shared.jobs).get(&id).cloned() else {
            lock(&shared.unsaved).remove(&id);
            continue;
        };
        let record = lock(&job.record).clone();
        let data = lock(&job.data).clone();
        if shared.store.save(&record, data.as_ref()).is_ok() {
            lock(&shared.unsaved).remove(&id);
            tracing::info!(job_id = %id, "a job record that could not be written is stored now");
        }
    }
}

fn expire(shared: &Shared, ttl: Duration) {
    let Ok(ttl) = chrono::Duration::from_std(ttl) else {
        return;
    };
    let now = Utc::now();
    let expired: Vec<JobId> = lock(&shared.jobs)
        .values()
        .filter_map(|j| {
            let r = lock(&j.record);
            let done = r.finished_at?;
            (r.state.is_final() && done + ttl <= now).then_some(r.job_id)
        })
        .collect();
    for id in expired {
        lock(&shared.jobs).remove(&id);
        if let Err(e) = shared.store.delete(id) {
            super::store_error("forgetting a job", &e);
        }
        shared.events.emit(JobEvent::Forgotten(id));
    }
}

/// What a task uses to report: lines (scrubbed of secrets) and progress.
pub struct TaskContext {
    job: Arc<Job>,
    shared: Arc<Shared>,
    /// Fires when the job must stop; the task ends its process and returns.
    pub cancel: CancellationToken,
}

impl TaskContext {
    /// Appends one output line to the job's log and publishes it.
    pub fn line(&self, stream: Stream, text: &str) {
        let text = self.job.redactor.redact(text).into_owned();
        let line = {
            let mut log = lock(&self.job.log);
            let Some(buf) = log.as_mut() else { return };
            buf.push(stream, text)
        };
        lock(&self.job.record).lines = line.line.seq;
        self.shared.events.emit(JobEvent::Log(line));
    }

    /// The pause point a task reading a child's output awaits between reads.
    pub fn pace(&self) -> Pace {
        Pace::of(&self.shared.events)
    }

    /// Replaces the job's `progress` object and publishes the record.
    pub fn progress(&self, progress: Value) {
        let record = {
            let mut r = lock(&self.job.record);
            r.progress = Some(progress);
            r.clone()
        };
        self.shared.events.emit(JobEvent::State(Arc::new(record)));
    }

    /// The id of the job this task runs as.
    pub fn job_id(&self) -> JobId {
        lock(&self.job.record).job_id
    }

    /// The secret scrubber, for tasks that build messages from output.
    pub fn redactor(&self) -> &Redactor {
        &self.job.redactor
    }
}

async fn run_job(
    shared: Arc<Shared>,
    job: Arc<Job>,
    task: Box<dyn Task>,
    timeout: Duration,
    locks: Vec<String>,
    line: Option<Line>,
) {
    // `None`: cancelled while queued; `Some(None)`: runs without a slot.
    let permit = match line {
        // Emergency stop: never waits behind the jobs it may have to stop.
        None => Some(None),
        Some(line) => {
            let slot = tokio::select! {
                s = shared.slots.acquire(line.priority()) => Some(Some(s)),
                _ = job.cancel.cancelled() => None,
            };
            lock(&shared.queued)[line as usize] -= 1;
            slot
        }
    };
    let outcome = match permit {
        None => None,
        Some(permit) => {
            let record = {
                let mut r = lock(&job.record);
                r.state = JobState::Running;
                r.started_at = Some(Utc::now());
                r.clone()
            };
            persist(&shared, &record, None);
            shared.events.emit(JobEvent::State(Arc::new(record)));
            tracing::info!("job started");

            let ctx = TaskContext {
                job: job.clone(),
                shared: shared.clone(),
                cancel: job.cancel.clone(),
            };
            let job_id = ctx.job_id();
            let mut fut = Box::pin(super::supervise::scope(
                job_id,
                shared.store.clone(),
                task.run(ctx),
            ));
            let outcome = tokio::select! {
                o = &mut fut => o,
                _ = tokio::time::sleep(timeout) => {
                    lock(&job.reason).get_or_insert(CancelReason::Timeout);
                    job.cancel.cancel();
                    fut.await
                }
            };
            drop(permit);
            Some(outcome)
        }
    };
    finish(&shared, &job, outcome, timeout, &locks);
}

fn finish(
    shared: &Shared,
    job: &Job,
    outcome: Option<TaskOutcome>,
    timeout: Duration,
    locks: &[String],
) {
    let reason = *lock(&job.reason);
    let (record, data, tail) = {
        let mut r = lock(&job.record);
        let outcome = outcome.unwrap_or_else(|| TaskOutcome::failed("cancelled before it started"));
        r.exit_code = outcome.exit_code;
        r.finished_at = Some(Utc::now());
        r.progress = None;
        match reason {
            Some(CancelReason::User) => {
                r.state = JobState::Cancelled;
                r.error = Some("cancelled on request".into());
            }
            Some(CancelReason::Timeout) => {
                r.state = JobState::Failed;
                r.error = Some(format!("timed out after {}s", timeout.as_secs()));
            }
            Some(CancelReason::Shutdown) => {
                r.state = JobState::Interrupted;
                r.error = Some("the worker stopped while the job ran".into());
            }
            None => {
                r.state = outcome.state;
                r.error = outcome.error.map(|e| job.redactor.redact(&e).into_owned());
            }
        }
        *lock(&job.data) = outcome.data.clone();
        let tail = lock(&job.log)
            .take()
            .map(|b| b.tail(shared.settings.stored_lines))
            .unwrap_or_default();
        (r.clone(), outcome.data, tail)
    };
    persist(shared, &record, data.as_ref());
    if let Err(e) = shared.store.save_lines(record.job_id, &tail) {
        super::store_error("storing a job's lines", &e);
    }
    // Free what the job held before anyone hears it ended: a client that chains
    // its next command on the result must not meet `busy`.
    {
        let mut active = lock(&shared.active);
        for key in locks {
            if active.get(key) == Some(&record.job_id) {
                active.remove(key);
            }
        }
    }
    tracing::info!(state = record.state.as_str(), exit_code = ?record.exit_code, "job ended");
    shared
        .events
        .emit(JobEvent::State(Arc::new(record.clone())));
    shared
        .events
        .emit(JobEvent::Result(Arc::new(JobResult { record, data })));
}

#[cfg(test)]
mod tests {
    //! The engine's state machine with scripted tasks (no processes involved).
    use super::*;
    use crate::jobs::BoxFuture;

    struct Scripted {
        lines: usize,
        wait_for_cancel: bool,
        state: JobState,
    }

    impl Task for Scripted {
        fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
            Box::pin(async move {
                for i in 0..self.lines {
                    ctx.line(Stream::Stdout, &format!("line {i} secret-value-123"));
                }
                if self.wait_for_cancel {
                    ctx.cancel.cancelled().await;
                }
                TaskOutcome {
                    state: self.state,
                    exit_code: Some(0),
                    data: None,
                    error: None,
                }
            })
        }
    }

    fn engine(dir: &std::path::Path, max: usize) -> JobEngine {
        let settings = JobSettings {
            max_concurrent: max,
            ..JobSettings::default()
        };
        JobEngine::new(
            Store::open(dir).unwrap(),
            settings,
            Redactor::new(vec!["secret-value-123".into()]),
        )
        .unwrap()
    }

    fn spec(repo: &str, task: Scripted, timeout: Duration) -> JobSpec {
        let label = RepositoryLabel::parse(repo).unwrap();
        JobSpec {
            command: CommandName::BackupRun,
            locks: vec![repo_lock(&label)],
            repository: Some(label),
            request_id: None,
            timeout,
            task: Box::new(task),
            secrets: vec![],
            bypass_limit: false,
        }
    }

    async fn until_final(rx: &mut broadcast::Receiver<JobEvent>, id: JobId) -> JobResult {
        loop {
            if let JobEvent::Result(r) = rx.recv().await.unwrap() {
                if r.record.job_id == id {
                    return (*r).clone();
                }
            }
        }
    }

    #[tokio::test]
    async fn lines_are_contiguous_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), 1);
        let mut rx = e.subscribe();
        let task = Scripted {
            lines: 5,
            wait_for_cancel: false,
            state: JobState::Succeeded,
        };
        let rec = e.submit(spec("a", task, Duration::from_secs(5))).unwrap();
        let res = until_final(&mut rx, rec.job_id).await;
        assert_eq!(res.record.state, JobState::Succeeded);
        assert_eq!(res.record.lines, 5);
        let lines = e.log(rec.job_id, 0, 100).unwrap();
        assert_eq!(
            lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert!(lines.iter().all(|l| !l.line.contains("secret-value-123")));
    }

    #[tokio::test]
    async fn busy_queue_cancel_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), 1);
        let mut rx = e.subscribe();
        let hold = |s| Scripted {
            lines: 0,
            wait_for_cancel: true,
            state: s,
        };
        let a = e
            .submit(spec(
                "a",
                hold(JobState::Succeeded),
                Duration::from_secs(60),
            ))
            .unwrap();
        let busy = e
            .submit(spec(
                "a",
                hold(JobState::Succeeded),
                Duration::from_secs(60),
            ))
            .unwrap_err();
        assert_eq!(
            busy,
            SubmitError::Busy {
                what: "repository a".into(),
                job_id: a.job_id
            }
        );
        // Global limit 1: b waits queued; cancelling it ends it without running.
        let b = e
            .submit(spec(
                "b",
                hold(JobState::Succeeded),
                Duration::from_secs(60),
            ))
            .unwrap();
        e.cancel(b.job_id, CancelReason::User).unwrap();
        let rb = until_final(&mut rx, b.job_id).await;
        assert_eq!(rb.record.state, JobState::Cancelled);
        assert!(rb.record.started_at.is_none());
        e.cancel(a.job_id, CancelReason::User).unwrap();
        assert_eq!(
            until_final(&mut rx, a.job_id).await.record.state,
            JobState::Cancelled
        );
        // The repository is free again; a timeout ends the job failed.
        let c = e
            .submit(spec(
                "a",
                hold(JobState::Succeeded),
                Duration::from_millis(50),
            ))
            .unwrap();
        let rc = until_final(&mut rx, c.job_id).await;
        assert_eq!(rc.record.state, JobState::Failed);
        assert!(rc.record.error.unwrap().contains("timed out"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_repository_is_free_when_the_result_is_announced() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), 1);
        let mut rx = e.subscribe();
        let quick = || Scripted {
            lines: 0,
            wait_for_cancel: false,
            state: JobState::Succeeded,
        };
        let mut id = e
            .submit(spec("a", quick(), Duration::from_secs(5)))
            .unwrap()
            .job_id;
        for _ in 0..300 {
            until_final(&mut rx, id).await;
            // The very moment the result is out, the next job on the repository starts.
            id = e
                .submit(spec("a", quick(), Duration::from_secs(5)))
                .expect("busy right after the result")
                .job_id;
        }
    }

    #[tokio::test]
    async fn queued_jobs_are_capped_per_line_and_writes_start_first() {
        let dir = tempfile::tempdir().unwrap();
        let settings = JobSettings {
            max_concurrent: 1,
            max_queued_read: 2,
            max_queued_write: 1,
            ..JobSettings::default()
        };
        let e = JobEngine::new(
            Store::open(dir.path()).unwrap(),
            settings,
            Redactor::default(),
        )
        .unwrap();
        let mut rx = e.subscribe();
        let hold = || Scripted {
            lines: 0,
            wait_for_cancel: true,
            state: JobState::Succeeded,
        };
        let quick = || Scripted {
            lines: 0,
            wait_for_cancel: false,
            state: JobState::Succeeded,
        };
        let read = |task| JobSpec {
            command: CommandName::ConfigValidate,
            locks: vec![],
            repository: None,
            request_id: None,
            timeout: Duration::from_secs(60),
            task: Box::new(task),
            secrets: vec![],
            bypass_limit: false,
        };
        let holder = e
            .submit(spec("a", hold(), Duration::from_secs(60)))
            .unwrap();
        // The holder runs; wait until it left the queue.
        loop {
            if let JobEvent::State(r) = rx.recv().await.unwrap() {
                if r.job_id == holder.job_id && r.state == JobState::Running {
                    break;
                }
            }
        }
        let r1 = e.submit(read(quick())).unwrap();
        let r2 = e.submit(read(quick())).unwrap();
        let full = e.submit(read(quick())).unwrap_err();
        assert!(
            matches!(full, SubmitError::QueueFull { queued: 2, .. }),
            "{full}"
        );
        // Writes have their own allowance, and start before the queued reads.
        let w = e
            .submit(spec("b", quick(), Duration::from_secs(60)))
            .unwrap();
        assert!(matches!(
            e.submit(spec("c", quick(), Duration::from_secs(60))),
            Err(SubmitError::QueueFull { .. })
        ));
        e.cancel(holder.job_id, CancelReason::User).unwrap();
        let mut started = Vec::new();
        while started.len() < 3 {
            if let JobEvent::State(r) = rx.recv().await.unwrap() {
                if r.state == JobState::Running {
                    started.push(r.job_id);
                }
            }
        }
        assert_eq!(started, vec![w.job_id, r1.job_id, r2.job_id]);
        // Queues drained: reads are accepted again.
        until_final(&mut rx, r2.job_id).await;
        e.submit(read(quick())).unwrap();
    }

    #[tokio::test]
    async fn shutdown_interrupts_and_restart_keeps_history() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let e = engine(dir.path(), 2);
            let mut rx = e.subscribe();
            let rec = e
                .submit(spec(
                    "a",
                    Scripted {
                        lines: 2,
                        wait_for_cancel: true,
                        state: JobState::Succeeded,
                    },
                    Duration::from_secs(60),
                ))
                .unwrap();
            // Shut down only once the task has produced both lines.
            loop {
                if let JobEvent::Log(l) = rx.recv().await.unwrap() {
                    if l.line.seq == 2 {
                        break;
                    }
                }
            }
            e.shutdown().await;
            assert_eq!(e.get(rec.job_id).unwrap().state, JobState::Interrupted);
            assert!(e
                .submit(spec(
                    "b",
                    Scripted {
                        lines: 0,
                        wait_for_cancel: false,
                        state: JobState::Succeeded
                    },
                    Duration::from_secs(1)
                ))
                .is_err());
            rec.job_id
        };
        let e = engine(dir.path(), 2);
        let rec = e.get(id).unwrap();
        assert_eq!(rec.state, JobState::Interrupted);
        assert_eq!(e.log(id, 0, 10).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn finished_jobs_expire() {
        let dir = tempfile::tempdir().unwrap();
        let settings = JobSettings {
            ttl_secs: 0,
            ..JobSettings::default()
        };
        let e = JobEngine::new(
            Store::open(dir.path()).unwrap(),
            settings,
            Redactor::default(),
        )
        .unwrap();
        let mut rx = e.subscribe();
        let rec = e
            .submit(spec(
                "a",
                Scripted {
                    lines: 0,
                    wait_for_cancel: false,
                    state: JobState::Succeeded,
                },
                Duration::from_secs(5),
            ))
            .unwrap();
        loop {
            if let JobEvent::Forgotten(id) = rx.recv().await.unwrap() {
                assert_eq!(id, rec.job_id);
                break;
            }
        }
        assert!(e.get(rec.job_id).is_none());
    }
}
