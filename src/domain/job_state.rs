//! The spec's job states.

use serde::{Deserialize, Serialize};

/// Where a job is in its life; the final ones are never left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Warning,
    Failed,
    Cancelled,
    Interrupted,
}

impl JobState {
    /// Whether the job has ended (no further state follows).
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
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
