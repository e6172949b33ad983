//! The job record: what clients see of a job on `jobs/<id>/state`, in `job/get` and
//! in the store.
//!
//! May import: `domain`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{JobId, RequestId};

pub use crate::domain::JobState;

/// One job as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job's id (UUID v7: ids sort by creation time).
    pub job_id: JobId,
    /// The command's wire name (`backup/run`, …).
    pub command: String,
    /// The repository label it works on, if any.
    pub repository: Option<String>,
    /// The `request_id` of the request that started it, if it had one.
    pub request_id: Option<RequestId>,
    /// Where the job is in its life (`queued` … `succeeded`, `failed`, …).
    pub state: JobState,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When its task started; `None` while queued.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The process's exit code, where one process decides the outcome.
    pub exit_code: Option<i32>,
    /// Log lines produced so far (the last seq).
    pub lines: u64,
    /// Why the job failed, was cancelled or interrupted, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Live progress, where the executor reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    /// An interrupted backup whose archive the repository holds anyway (found at
    /// the next start): the archive's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_written: Option<String>,
}

impl JobRecord {
    /// A new job, as it is when submitted.
    pub fn queued(
        command: &str,
        repository: Option<String>,
        request_id: Option<RequestId>,
    ) -> Self {
        JobRecord {
            job_id: JobId::new(),
            command: command.to_string(),
            repository,
            request_id,
            state: JobState::Queued,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            lines: 0,
            error: None,
            progress: None,
            archive_written: None,
        }
    }
}

/// The `result` message: the final record plus the job's output data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The final record.
    #[serde(flatten)]
    pub record: JobRecord,
    /// What the job produced (the command's result), if anything.
    pub data: Option<Value>,
}
