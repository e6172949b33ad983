//! Cancellation: `job/cancel` (a queued job ends at once, a running one when its
//! task has ended its process) and shutdown (every running job interrupted, then
//! waited for within the grace period).
//! May import: the engine's state, `domain`.

use std::sync::Arc;
use std::time::Duration;

use super::super::record::JobRecord;
use super::super::CancelReason;
use super::{lock, Job, JobEngine};
use crate::domain::JobId;

/// Why a job could not be cancelled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CancelError {
    /// No job of that id (never was, or already forgotten).
    #[error("no job {0}")]
    NotFound(JobId),
}

impl JobEngine {
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
}
