//! Borg lock awareness from the lock files themselves (`lock.exclusive/`,
//! `lock.roster`), never from scraping command output.
//!
//! Imports `borg_config` (where a repository lives) only.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::borg_config::{Location, RepositoryEntry};

/// One process holding (part of) a lock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Holder {
    /// borg's host id, `<hostname>@<node>`.
    pub host: String,
    /// The holder's process id on its host.
    pub pid: u32,
    /// The holder's thread id (borg records one per lock entry).
    pub thread: u32,
    /// `exclusive` or `shared`.
    pub kind: &'static str,
    /// Whether the process still runs; `None` when it runs on another host.
    pub alive: Option<bool>,
}

/// The lock state of one repository.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LockStatus {
    /// `None` when it cannot be known from here (a remote repository).
    pub locked: Option<bool>,
    /// Every process listed in the lock roster.
    pub holders: Vec<Holder>,
    /// When the lock was taken (the lock directory's modification time).
    pub since: Option<DateTime<Utc>>,
    /// Every holder is a dead process on this host: safe to break.
    pub stale: bool,
    /// Why the state cannot be known (a remote repository).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The lock state of a repository entry.
pub fn status(entry: &RepositoryEntry) -> LockStatus {
    match &entry.location {
        Location::Local(path) => local_status(path),
        _ => LockStatus {
            locked: None,
            holders: vec![],
            since: None,
            stale: false,
            note: Some(
                "the lock of a remote repository lives on its server; a job that meets it fails with a clear error".into(),
            ),
        },
    }
}

/// Reads the lock files of a local repository.
pub fn local_status(repo: &Path) -> LockStatus {
    let dir = repo.join("lock.exclusive");
    let meta = std::fs::metadata(&dir).ok();
    let mut holders = Vec::new();
    if let Ok(text) = std::fs::read_to_string(repo.join("lock.roster")) {
        if let Ok(Value::Object(roster)) = serde_json::from_str::<Value>(&text) {
            for (kind, list) in [
                ("exclusive", roster.get("exclusive")),
                ("shared", roster.get("shared")),
            ] {
                for entry in list.and_then(Value::as_array).into_iter().flatten() {
                    if let Some(h) = holder(kind, entry) {
                        holders.push(h);
                    }
                }
            }
        }
    }
    if holders.is_empty() {
        // No roster: the file names in lock.exclusive/ are `<host>.<pid>-<thread>`.
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Some(h) = e.file_name().to_str().and_then(parse_lock_file_name) {
                holders.push(h);
            }
        }
    }
    let locked = meta.is_some() || !holders.is_empty();
    let stale = locked && !holders.is_empty() && holders.iter().all(|h| h.alive == Some(false));
    LockStatus {
        locked: Some(locked),
        holders,
        since: meta
            .and_then(|m| m.modified().ok())
            .map(DateTime::<Utc>::from),
        stale,
        note: None,
    }
}

fn holder(kind: &'static str, entry: &Value) -> Option<Holder> {
    let a = entry.as_array()?;
    let host = a.first()?.as_str()?.to_string();
    let pid = a.get(1)?.as_u64()? as u32;
    let thread = a.get(2).and_then(Value::as_u64).unwrap_or(0) as u32;
    Some(Holder {
        alive: alive(&host, pid),
        host,
        pid,
        thread,
        kind,
    })
}

fn parse_lock_file_name(name: &str) -> Option<Holder> {
    let (host, rest) = name.rsplit_once('.')?;
    let (pid, thread) = rest.split_once('-')?;
    let pid = pid.parse().ok()?;
    Some(Holder {
        alive: alive(host, pid),
        host: host.to_string(),
        pid,
        thread: thread.parse().unwrap_or(0),
        kind: "exclusive",
    })
}

/// A holder on this host is alive when its pid exists; elsewhere we cannot tell.
fn alive(host: &str, pid: u32) -> Option<bool> {
    let ours = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())?;
    let name = host.split('@').next().unwrap_or(host);
    if name != ours {
        return None;
    }
    Some(Path::new(&format!("/proc/{pid}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roster_and_lock_dir_are_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(local_status(dir.path()).locked, Some(false));
        let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
        std::fs::create_dir(dir.path().join("lock.exclusive")).unwrap();
        let me = std::process::id();
        std::fs::write(
            dir.path().join("lock.roster"),
            format!(r#"{{"exclusive": [["{host}@123", {me}, 0]]}}"#),
        )
        .unwrap();
        let s = local_status(dir.path());
        assert_eq!(s.locked, Some(true));
        assert_eq!(s.holders[0].pid, me);
        assert_eq!(s.holders[0].alive, Some(true));
        assert!(!s.stale);
        assert!(s.since.is_some());
        // A dead pid on this host makes the lock stale.
        std::fs::write(
            dir.path().join("lock.roster"),
            format!(r#"{{"exclusive": [["{host}@123", 4194303, 0]]}}"#),
        )
        .unwrap();
        assert!(local_status(dir.path()).stale);
        assert_eq!(
            parse_lock_file_name("vm@3281355014145.22062-0")
                .unwrap()
                .pid,
            22062
        );
    }
}
