//! The run loop of one job: wait for a running slot, run the task (with its
//! process groups recorded, see `jobs::supervise`), enforce the timeout, and end
//! the job: final state, stored record and lines, locks freed, then the events.
//! May import: the engine's state, `jobs` (store, events, log, record, supervise),
//! `domain`, `redact`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::super::events::{JobEvent, Pace};
use super::super::log::Stream;
use super::super::record::{JobRecord, JobResult, JobState};
use super::super::{CancelReason, Task, TaskOutcome};
use super::submission::Line;
use super::{lock, Job, Shared};
use crate::domain::JobId;
use crate::redact::Redactor;

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
        if !self.job.background {
            self.shared.events.emit(JobEvent::Log(line));
        }
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
        if !self.job.background {
            self.shared.events.emit(JobEvent::State(Arc::new(record)));
        }
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

pub(super) async fn run_job(
    shared: Arc<Shared>,
    job: Arc<Job>,
    task: Box<dyn Task>,
    (timeout, locks, released): (Duration, Vec<String>, CancellationToken),
    wait_for: Vec<CancellationToken>,
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
    // Then the background work this job took its locks over from (asked to stop at
    // submission). The place is taken first so queue priority holds; waiting even
    // when this job is cancelled keeps two jobs from ever running on one
    // repository at once.
    for holder in wait_for {
        holder.cancelled().await;
    }
    let outcome = match permit {
        None => None,
        Some(permit) => {
            let record = {
                let mut r = lock(&job.record);
                r.state = JobState::Running;
                r.started_at = Some(Utc::now());
                r.clone()
            };
            if !job.background {
                persist(&shared, &record, None);
                shared.events.emit(JobEvent::State(Arc::new(record)));
            }
            tracing::info!("job started");

            let ctx = TaskContext {
                job: job.clone(),
                shared: shared.clone(),
                cancel: job.cancel.clone(),
            };
            let job_id = ctx.job_id();
            let mut fut = Box::pin(crate::jobs::supervise::scope(
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
    released.cancel();
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
            .as_ref()
            .map(|b| b.tail(shared.settings.stored_lines))
            .unwrap_or_default();
        (r.clone(), outcome.data, tail)
    };
    if !job.background {
        persist(shared, &record, data.as_ref());
        if let Err(e) = shared.store.save_lines(record.job_id, &tail) {
            crate::jobs::store_error("storing a job's lines", &e);
        }
    }
    // Only now that the store has the lines does the buffer go: a reader between
    // the two (an event stream refilling) always finds them in one or the other.
    lock(&job.log).take();
    // Free what the job held before anyone hears it ended: a client that chains
    // its next command on the result must not meet `busy`.
    {
        let mut active = lock(&shared.active);
        for key in locks {
            if active.get(key).is_some_and(|h| h.job_id == record.job_id) {
                active.remove(key);
            }
        }
    }
    tracing::info!(state = record.state.as_str(), exit_code = ?record.exit_code, "job ended");
    if job.background {
        if let Some(report) = lock(&job.report).take() {
            let _ = report.send(JobResult { record, data });
        }
        return;
    }
    shared
        .events
        .emit(JobEvent::State(Arc::new(record.clone())));
    shared
        .events
        .emit(JobEvent::Result(Arc::new(JobResult { record, data })));
}

/// Writes a record; when the disk refuses, the job is remembered as unsaved and
/// written again by the expiry loop once it can be (the disk filled mid-job: the
/// job's result is still published from memory meanwhile).
pub(super) fn persist(shared: &Shared, record: &JobRecord, data: Option<&Value>) {
    if let Err(e) = shared.store.save(record, data) {
        crate::jobs::store_error("storing a job record", &e);
        lock(&shared.unsaved).insert(record.job_id);
    }
}

/// Writes the records that could not be written before (see [`persist`]).
pub(super) fn retry_unsaved(shared: &Shared) {
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
