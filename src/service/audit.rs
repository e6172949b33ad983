//! The append-only audit trail: one JSON line per request under `state_dir`,
//! refusals included, never a secret (only the fields below are written).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub transport: String,
    /// `null` when the request was not authenticated.
    pub role: Option<String>,
    pub client: Option<String>,
    pub command: String,
    pub repository: Option<String>,
    /// `ok` or the error code.
    pub outcome: String,
    pub job_id: Option<String>,
    pub request_id: Option<String>,
}

pub struct Audit {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Audit {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("audit.jsonl"),
            lock: Mutex::new(()),
        }
    }

    pub fn append(&self, record: &AuditRecord) {
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&line));
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.path.display(), "could not write the audit trail");
        }
    }

    /// The newest `limit` records, newest first.
    pub fn last(&self, limit: usize) -> Vec<AuditRecord> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str(l).ok())
            .take(limit)
            .collect()
    }
}
