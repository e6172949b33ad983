//! The append-only audit trail: one JSON line per request under `state_dir`,
//! refusals included, never a secret (only the fields below are written).
//!
//! Bounded, because anyone who can reach a transport can make refusals: the first
//! few unauthenticated refusals of each window are written one by one, the rest as
//! one line per transport, client and outcome with their `count`; the file is
//! rotated by size (`audit.jsonl.1` … `.N`); `audit/list` reads the files' tails,
//! never a whole file.
//!
//! Imports `config::AuditSettings` only.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::AuditSettings;

/// One request as the audit trail keeps it: who asked what, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the request was answered.
    pub at: DateTime<Utc>,
    /// `mqtt` or `http`.
    pub transport: String,
    /// `null` when the request was not authenticated.
    pub role: Option<String>,
    /// The sender as the transport knows it (the HTTP peer; a fixed name for Home
    /// Assistant buttons).
    pub client: Option<String>,
    /// The command's wire name, or a shortened copy of an unknown one.
    pub command: String,
    /// The repository the request named, scrubbed of secrets.
    pub repository: Option<String>,
    /// `ok` or the error code.
    pub outcome: String,
    /// The job the request started, if any.
    pub job_id: Option<String>,
    /// The request's own id, if it had one.
    pub request_id: Option<String>,
}

/// One line of the file: a record, or (with `count`) that many unauthenticated
/// refusals from one transport and client summed up over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditLine {
    /// The request, or the last of the requests summed up.
    #[serde(flatten)]
    pub record: AuditRecord,
    /// How many refusals this line stands for; absent for a single request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// Unauthenticated refusals written one by one per window (what was tried).
const ITEMISED_PER_WINDOW: u32 = 10;
/// Distinct (transport, client, outcome) counted per window; more clients are
/// counted together under a `null` client.
const KEYS_PER_WINDOW: usize = 64;
/// `audit/list` reads at most this much per record asked for (records are small).
const READ_PER_RECORD: u64 = 4096;
/// Block size of reading a file backwards.
const CHUNK: u64 = 64 * 1024;

type Key = (String, Option<String>, String);

/// The audit trail of this worker: appends, bounds and rotates `audit.jsonl`.
pub struct Audit {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    window: Duration,
    state: Mutex<Window>,
}

struct Window {
    started: Instant,
    itemised: u32,
    counts: BTreeMap<Key, u64>,
}

impl Audit {
    /// The trail in `<state_dir>/audit.jsonl`; inside a runtime it also starts the task
    /// that writes a window's counts when it ends.
    pub fn new(state_dir: &Path, settings: &AuditSettings) -> Self {
        let window = Duration::from_secs(settings.refusal_window_secs.max(1));
        let shared = Arc::new(Shared {
            path: state_dir.join("audit.jsonl"),
            max_bytes: settings.max_bytes.max(4096),
            keep: settings.keep_files,
            window,
            state: Mutex::new(Window {
                started: Instant::now(),
                itemised: 0,
                counts: BTreeMap::new(),
            }),
        });
        // Counts are written when their window ends even if nothing else comes.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak: Weak<Shared> = Arc::downgrade(&shared);
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(window).await;
                    let Some(shared) = weak.upgrade() else { return };
                    let mut w = shared.lock();
                    shared.end_window_if_due(&mut w);
                }
            });
        }
        Self { shared }
    }

    /// Records one request: written at once, or counted when it is one of many
    /// unauthenticated refusals.
    pub fn append(&self, record: &AuditRecord) {
        let s = &self.shared;
        let mut w = s.lock();
        s.end_window_if_due(&mut w);
        if record.role.is_none() {
            if w.itemised >= ITEMISED_PER_WINDOW {
                let mut key = (
                    record.transport.clone(),
                    record.client.clone(),
                    record.outcome.clone(),
                );
                if !w.counts.contains_key(&key) && w.counts.len() >= KEYS_PER_WINDOW {
                    key.1 = None;
                }
                *w.counts.entry(key).or_default() += 1;
                return;
            }
            w.itemised += 1;
        }
        s.write(&AuditLine {
            record: record.clone(),
            count: None,
        });
    }

    /// The newest `limit` lines, newest first, read from the end of the files.
    pub fn last(&self, limit: usize) -> Vec<AuditLine> {
        let s = &self.shared;
        let _w = s.lock();
        let mut out = Vec::new();
        let mut budget = (limit as u64).saturating_mul(READ_PER_RECORD) + CHUNK;
        for i in 0..=s.keep {
            if out.len() >= limit || budget == 0 {
                break;
            }
            let path = s.numbered(i);
            match tail(&path, limit - out.len(), &mut budget) {
                Ok(lines) => out.extend(lines),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), "could not read the audit trail");
                }
            }
        }
        out
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the window's counts and starts a new window, once it is over.
    fn end_window_if_due(&self, w: &mut Window) {
        if w.started.elapsed() >= self.window {
            self.end_window(w);
        }
    }

    fn end_window(&self, w: &mut Window) {
        let now = Utc::now();
        for ((transport, client, outcome), n) in std::mem::take(&mut w.counts) {
            self.write(&AuditLine {
                record: AuditRecord {
                    at: now,
                    transport,
                    role: None,
                    client,
                    command: "*".into(),
                    repository: None,
                    outcome,
                    job_id: None,
                    request_id: None,
                },
                count: Some(n),
            });
        }
        w.started = Instant::now();
        w.itemised = 0;
    }

    /// `audit.jsonl` for 0, else `audit.jsonl.<n>`.
    fn numbered(&self, n: u32) -> PathBuf {
        if n == 0 {
            return self.path.clone();
        }
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn write(&self, line: &AuditLine) {
        let Ok(mut bytes) = serde_json::to_vec(line) else {
            return;
        };
        bytes.push(b'\n');
        let written = self.rotate_for(bytes.len() as u64).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
                .and_then(|mut f| f.write_all(&bytes))
        });
        if let Err(e) = written {
            metrics::counter!("bmqtt_audit_write_errors_total").increment(1);
            tracing::error!(error = %e, path = %self.path.display(), "could not write the audit trail");
        }
    }

    /// Rotates when `more` bytes would take the file past `max_bytes`.
    fn rotate_for(&self, more: u64) -> std::io::Result<()> {
        let size = match std::fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if size == 0 || size + more <= self.max_bytes {
            return Ok(());
        }
        if self.keep == 0 {
            return std::fs::remove_file(&self.path);
        }
        for n in (1..self.keep).rev() {
            match std::fs::rename(self.numbered(n), self.numbered(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.numbered(1))
    }
}

/// Up to `limit` records from the end of `path`, newest first, reading backwards
/// and at most `budget` bytes (what is read is taken off it).
fn tail(path: &Path, limit: usize, budget: &mut u64) -> std::io::Result<Vec<AuditLine>> {
    let mut f = File::open(path)?;
    let mut pos = f.metadata()?.len();
    let mut out = Vec::new();
    // The bytes from `pos` up to the first line already taken: a line's end.
    let mut carry: Vec<u8> = Vec::new();
    while pos > 0 && out.len() < limit && *budget > 0 {
        let n = CHUNK.min(pos).min(*budget);
        pos -= n;
        *budget -= n;
        let mut chunk = vec![0u8; n as usize];
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&carry);
        carry = chunk;
        while let Some(i) = carry.iter().rposition(|&b| b == b'\n') {
            let line = carry.split_off(i + 1);
            carry.truncate(i);
            push_line(&line, &mut out);
            if out.len() >= limit {
                return Ok(out);
            }
        }
    }
    if pos == 0 {
        push_line(&carry, &mut out);
    }
    Ok(out)
}

fn push_line(line: &[u8], out: &mut Vec<AuditLine>) {
    if let Ok(l) = serde_json::from_slice(line) {
        out.push(l);
    }
}

#[cfg(test)]
mod tests;
