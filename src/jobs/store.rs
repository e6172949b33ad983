//! Durable job records in SQLite under `state_dir`, so that a restart keeps the job
//! history and can mark what was running as `interrupted`.
//!
//! Calls are blocking and short; the engine runs them on the blocking pool.
//!
//! May import: `domain`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use rusqlite::{params, Connection};
use serde_json::Value;

use super::log::LogLine;
use super::record::{JobRecord, JobState};
use crate::domain::JobId;

/// Why the job store could not read or write; every one is logged and counted.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused (locked, corrupt, I/O).
    #[error("job store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record or result is not the JSON it should be.
    #[error("job store: bad record: {0}")]
    Json(#[from] serde_json::Error),
    /// A thread panicked while holding the connection.
    #[error("job store: lock poisoned")]
    Poisoned,
    /// The disk holding `state_dir` is full or read-only, in words an operator acts on.
    #[error("job store: {0}")]
    Disk(String),
}

/// What is wrong with the disk holding `dir`, in words an operator acts on: full
/// (no block left for unprivileged writers) or mounted read-only.
pub fn disk_problem(dir: &Path) -> Option<&'static str> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let st = statvfs(dir).ok()?;
    if st.flags().contains(FsFlags::ST_RDONLY) {
        return Some("state_dir is on a read-only file system");
    }
    if st.blocks_available() == 0 {
        return Some("the disk holding state_dir is full");
    }
    None
}

/// Logs and counts a failed store operation (`bmqtt_store_errors_total`): none is
/// ever silent.
pub fn store_error(what: &str, e: &StoreError) {
    metrics::counter!("bmqtt_store_errors_total").increment(1);
    tracing::error!(error = %e, "job store: {what} failed");
}

/// A handle to the store; clones share one connection.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    dir: std::path::PathBuf,
}

impl Store {
    /// Opens (creating) `<state_dir>/jobs.sqlite3`; a full or read-only disk is
    /// named as such (SQLite alone says "disk I/O error").
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        Self::open_inner(state_dir).map_err(|e| match disk_problem(state_dir) {
            Some(problem) => StoreError::Disk(format!("{problem} ({e})")),
            None => e,
        })
    }

    fn open_inner(state_dir: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(state_dir.join("jobs.sqlite3"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                 job_id TEXT PRIMARY KEY,
                 record TEXT NOT NULL,
                 data TEXT
             );
             CREATE TABLE IF NOT EXISTS lines (
                 job_id TEXT NOT NULL,
                 seq INTEGER NOT NULL,
                 line TEXT NOT NULL,
                 PRIMARY KEY (job_id, seq)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS outbox (
                 topic TEXT PRIMARY KEY,
                 payload BLOB NOT NULL,
                 retain INTEGER NOT NULL,
                 version INTEGER NOT NULL,
                 acked INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS processes (
                 job_id TEXT NOT NULL,
                 pgid INTEGER NOT NULL,
                 start_ticks INTEGER NOT NULL,
                 PRIMARY KEY (job_id, pgid)
             );
             CREATE TABLE IF NOT EXISTS requests (
                 key TEXT PRIMARY KEY,
                 body TEXT NOT NULL,
                 answer TEXT,
                 at INTEGER NOT NULL
             );",
        )?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            dir: state_dir.to_path_buf(),
        })
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut c)
    }

    /// Writes a record (and its result data, once known).
    pub fn save(&self, record: &JobRecord, data: Option<&Value>) -> Result<(), StoreError> {
        let rec = serde_json::to_string(record)?;
        let data = data.map(serde_json::to_string).transpose()?;
        self.with(|c| {
            c.execute(
                "INSERT INTO jobs (job_id, record, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT(job_id) DO UPDATE SET record = excluded.record,
                     data = COALESCE(excluded.data, jobs.data)",
                params![record.job_id.to_string(), rec, data],
            )?;
            Ok(())
        })
    }

    /// Keeps a finished job's last lines.
    pub fn save_lines(&self, job_id: JobId, lines: &[LogLine]) -> Result<(), StoreError> {
        let id = job_id.to_string();
        let encoded = lines
            .iter()
            .map(|l| Ok((l.seq as i64, serde_json::to_string(l)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO lines (job_id, seq, line) VALUES (?1, ?2, ?3)",
                )?;
                for (seq, line) in &encoded {
                    stmt.execute(params![id, seq, line])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Every stored record with its data, oldest first.
    pub fn load_all(&self) -> Result<Vec<(JobRecord, Option<Value>)>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT record, data FROM jobs ORDER BY job_id")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (rec, data) = row?;
                let rec: JobRecord = serde_json::from_str(&rec)?;
                let data = data.map(|d| serde_json::from_str(&d)).transpose()?;
                out.push((rec, data));
            }
            Ok(out)
        })
    }

    /// The stored lines of one job, in seq order.
    pub fn lines(&self, job_id: JobId) -> Result<Vec<LogLine>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT line FROM lines WHERE job_id = ?1 ORDER BY seq")?;
            let rows = stmt.query_map(params![job_id.to_string()], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(serde_json::from_str(&row?)?);
            }
            Ok(out)
        })
    }

    /// Marks every job that was queued or running as `interrupted`; returns them.
    pub fn mark_interrupted(&self) -> Result<Vec<JobRecord>, StoreError> {
        let all = self.load_all()?;
        let mut changed = Vec::new();
        for (mut rec, _) in all {
            if !rec.state.is_final() {
                rec.state = JobState::Interrupted;
                rec.finished_at = Some(Utc::now());
                rec.error = Some("the worker stopped while the job ran".into());
                self.save(&rec, None)?;
                changed.push(rec);
            }
        }
        Ok(changed)
    }

    /// Forgets a job: its record, result and log lines.
    pub fn delete(&self, job_id: JobId) -> Result<(), StoreError> {
        let id = job_id.to_string();
        self.with(|c| {
            c.execute("DELETE FROM jobs WHERE job_id = ?1", params![id])?;
            c.execute("DELETE FROM lines WHERE job_id = ?1", params![id])?;
            Ok(())
        })
    }

    /// Whether a write goes through (readiness): a row written to the store and a
    /// small file written and synced in `state_dir` (SQLite may still have room in
    /// its write-ahead log on a full disk, so the file tells the truth).
    pub fn check_writable(&self) -> Result<(), StoreError> {
        let fail = |e: StoreError| match disk_problem(&self.dir) {
            Some(p) => StoreError::Disk(p.to_string()),
            None => e,
        };
        self.with(|c| {
            c.execute(
                "CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at INTEGER NOT NULL)",
                [],
            )?;
            c.execute(
                "INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?1)",
                params![Utc::now().timestamp_micros()],
            )?;
            Ok(())
        })
        .map_err(fail)?;
        let probe = self.dir.join(".write-probe");
        let written = std::fs::write(&probe, [0u8; 4096])
            .and_then(|()| std::fs::File::open(&probe)?.sync_all());
        let _ = std::fs::remove_file(&probe);
        written.map_err(|e| fail(StoreError::Disk(format!("state_dir: {e}"))))
    }

    /// What is wrong with the store's disk right now, if anything (a cheap
    /// `statvfs`): checked before a job is accepted, because SQLite may still have
    /// room in its write-ahead log on a disk that is full.
    pub fn disk_problem(&self) -> Option<&'static str> {
        disk_problem(&self.dir)
    }

    /// The disk problem behind a failed write, for a client's message.
    pub fn problem(&self, e: &StoreError) -> String {
        match (disk_problem(&self.dir), e) {
            (Some(p), _) => p.to_string(),
            (None, StoreError::Disk(m)) => m.clone(),
            _ => "the job store in state_dir cannot be written".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::log::Stream;

    fn record(state: JobState) -> JobRecord {
        JobRecord {
            state,
            ..JobRecord::queued("backup/run", Some("nc".into()), None)
        }
    }

    #[test]
    fn records_lines_and_interruption_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let running = record(JobState::Running);
        let done = record(JobState::Succeeded);
        {
            let s = Store::open(dir.path()).unwrap();
            s.save(&running, None).unwrap();
            s.save(&done, Some(&serde_json::json!({"n": 1}))).unwrap();
            let line = LogLine {
                seq: 1,
                ts: Utc::now(),
                stream: Stream::Stderr,
                line: "hello".into(),
            };
            s.save_lines(done.job_id, &[line]).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let marked = s.mark_interrupted().unwrap();
        assert_eq!(marked.len(), 1);
        assert_eq!(marked[0].job_id, running.job_id);
        let all = s.load_all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].0.state, JobState::Interrupted);
        assert_eq!(all[1].1, Some(serde_json::json!({"n": 1})));
        assert_eq!(s.lines(done.job_id).unwrap()[0].line, "hello");
        s.delete(done.job_id).unwrap();
        assert_eq!(s.load_all().unwrap().len(), 1);
        assert!(s.lines(done.job_id).unwrap().is_empty());
        s.check_writable().unwrap();
    }
}
