//! The spec's job states.
//!
//! Imports nothing outside `domain`.

use serde::{Deserialize, Serialize};

/// Where a job is in its life; the final ones are never left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted, waiting for a free slot and its locks.
    Queued,
    /// Its task runs.
    Running,
    /// Done, and everything asked was done.
    Succeeded,
    /// Done, but borg warned or part of the work was left out (`error` says what); never a success.
    Warning,
    /// A non-zero exit, an error, or the timeout passed.
    Failed,
    /// Ended by `job/cancel` (or `emergency/stop`).
    Cancelled,
    /// The worker stopped or died while it ran; set at the next start.
    Interrupted,
}

impl JobState {
    /// Whether the job has ended (no further state follows).
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
    /// The wire name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Warning => "warning",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde() {
        for s in [JobState::Queued, JobState::Warning, JobState::Interrupted] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(JobState::Failed.is_final() && !JobState::Running.is_final());
    }
}
