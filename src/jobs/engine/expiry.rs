//! Expiry: finished jobs are forgotten after `jobs.ttl_secs` (their retained state
//! cleared through a `Forgotten` event), and records the disk refused are written
//! again, on one periodic loop.
//! May import: the engine's state, the store, `domain`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::super::events::JobEvent;
use super::run::retry_unsaved;
use super::{lock, JobEngine, Shared};
use crate::domain::JobId;

impl JobEngine {
    pub(super) fn spawn_expiry(&self) {
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
        let Some(job) = lock(&shared.jobs).remove(&id) else {
            continue;
        };
        if job.background {
            continue;
        }
        if let Err(e) = shared.store.delete(id) {
            crate::jobs::store_error("forgetting a job", &e);
        }
        shared.events.emit(JobEvent::Forgotten(id));
    }
}
