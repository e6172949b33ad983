//! The job engine: runs [`Task`]s as jobs with ids, states, logs and results, and
//! tells whoever listens through [`JobEvent`]s (see [`events`]).
//!
//! It knows nothing about MQTT or HTTP (they subscribe to events) nor about
//! borgmatic or Docker (they are tasks). Rules it enforces: one active job per
//! repository, at most `jobs.max_concurrent` running (the rest queue), a timeout per
//! job, cancellation that lets the task end its process cleanly, durable records.
//!
//! Imports of the crate: `domain`, `config` and `redact` only.

mod engine;
pub mod events;
pub mod log;
pub mod outbox;
pub mod record;
pub mod requests;
mod slots;
pub mod store;
pub mod supervise;

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

pub use engine::{repo_lock, CancelError, JobEngine, JobSpec, SubmitError, TaskContext};
pub use events::{JobEvent, Pace, PublishedLine, ReliableEvents};
pub use log::{LogLine, Stream};
pub use outbox::OutboxRow;
pub use record::{JobRecord, JobResult, JobState};
pub use store::{store_error, Store, StoreError};

/// A boxed, sendable future: what a task's `run` returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Work the engine can run as a job. The task reports lines through the context and
/// must end soon after the context's cancellation token fires.
pub trait Task: Send + 'static {
    /// Does the work, reporting lines and progress through `ctx`; returns how it ended.
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome>;
}

/// How a task ended, before cancellation is taken into account.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    /// `Succeeded`, `Warning` or `Failed`.
    pub state: JobState,
    /// The exit code of the process that decided the outcome, if one did.
    pub exit_code: Option<i32>,
    /// The job's result data (the `data` of its result message).
    pub data: Option<Value>,
    /// Why it failed, in words a user can act on.
    pub error: Option<String>,
}

impl TaskOutcome {
    /// A failure whose reason is `error` (no exit code, no data).
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            state: JobState::Failed,
            exit_code: None,
            data: None,
            error: Some(error.into()),
        }
    }
}

/// Why a job was asked to stop; decides its final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// `job/cancel`: ends `cancelled`.
    User,
    /// The job's timeout passed: ends `failed`.
    Timeout,
    /// The worker is stopping: ends `interrupted`.
    Shutdown,
}
