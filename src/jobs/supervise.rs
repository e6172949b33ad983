//! No unsupervised jobs: each process group a job starts is recorded in the store
//! (job, group id, the leader's start time from `/proc/<pid>/stat`) while it runs,
//! so that a worker killed without a chance to end its children finds them at the
//! next start ([`end_orphans`]) and ends them before it accepts work. The start
//! time is checked before any signal: a reused process id is never signalled.
//! May import: the store, `domain`; `nix` for signals.

use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use rusqlite::params;

use super::store::{store_error, Store, StoreError};
use crate::domain::JobId;

tokio::task_local! {
    /// The job the current task runs for (set by the engine around each task).
    static JOB: (JobId, Store);
}

/// Runs a job's task with its identity known to [`process_started`].
pub(super) async fn scope<F: std::future::Future>(
    job_id: JobId,
    store: Store,
    fut: F,
) -> F::Output {
    JOB.scope((job_id, store), fut).await
}

/// A job's child started as the leader of process group `pid`: record it.
pub fn process_started(pid: u32) {
    let _ = JOB.try_with(|(job_id, store)| {
        let Some(ticks) = start_ticks(pid as i32) else {
            return;
        };
        if let Err(e) = store.process_put(*job_id, pid as i32, ticks) {
            store_error("recording a job's process group", &e);
        }
    });
}

/// The group `pid` ended (its leader was reaped): forget it.
pub fn process_ended(pid: u32) {
    let _ = JOB.try_with(|(job_id, store)| {
        if let Err(e) = store.process_delete(*job_id, pid as i32) {
            store_error("forgetting a job's process group", &e);
        }
    });
}

/// `/proc/<pid>/stat`: (state, process group, start time in clock ticks since boot).
fn stat(pid: i32) -> Option<(char, i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past its end.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field 5 is the group, field 22 the start.
    let state = fields.first()?.chars().next()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, pgrp, start))
}

fn start_ticks(pid: i32) -> Option<u64> {
    stat(pid).map(|(_, _, t)| t)
}

/// Live (not zombie) members of group `pgid` that started no earlier than its
/// recorded leader: the leader itself, or the children it left behind.
fn members(pgid: i32, since: u64) -> Vec<i32> {
    if let Some((state, pgrp, start)) = stat(pgid) {
        // A live leader started at another time is another group (a reused id).
        if state != 'Z' && pgrp == pgid && start != since {
            return Vec::new();
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            stat(pid).is_some_and(|(state, pgrp, start)| {
                pgrp == pgid && state != 'Z' && start >= since && (pid != pgid || start == since)
            })
        })
        .collect()
}

/// Ends every recorded process group still alive (SIGTERM, then SIGKILL after
/// `grace`) and forgets the records; returns the jobs whose processes were found.
/// A group whose leader is gone but whose members live is still ours: Linux does not
/// give a live group's id to a new process.
pub async fn end_orphans(store: &Store, grace: Duration) -> Result<Vec<JobId>, StoreError> {
    let mut found = Vec::new();
    for (job_id, pgid, ticks) in store.processes()? {
        if !members(pgid, ticks).is_empty() {
            tracing::warn!(%job_id, pgid, "ending processes a previous run left behind");
            found.push(job_id);
            signal(pgid, ticks, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace;
            while !members(pgid, ticks).is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !members(pgid, ticks).is_empty() {
                signal(pgid, ticks, Signal::SIGKILL);
                while !members(pgid, ticks).is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        store.process_delete(job_id, pgid)?;
    }
    Ok(found)
}

/// Signals the group only if its members still are the recorded ones.
fn signal(pgid: i32, ticks: u64, sig: Signal) {
    if members(pgid, ticks).is_empty() {
        return;
    }
    if let Err(e) = killpg(Pid::from_raw(pgid), sig) {
        tracing::debug!(error = %e, pgid, ?sig, "signalling a left-behind group failed");
    }
}

impl Store {
    fn process_put(&self, job_id: JobId, pgid: i32, ticks: u64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO processes (job_id, pgid, start_ticks) VALUES (?1, ?2, ?3)",
                params![job_id.to_string(), pgid, ticks as i64],
            )?;
            Ok(())
        })
    }

    fn process_delete(&self, job_id: JobId, pgid: i32) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM processes WHERE job_id = ?1 AND pgid = ?2",
                params![job_id.to_string(), pgid],
            )?;
            Ok(())
        })
    }

    fn processes(&self) -> Result<Vec<(JobId, i32, u64)>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT job_id, pgid, start_ticks FROM processes")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i32>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, pgid, ticks) = row?;
                if let Ok(id) = JobId::try_from(id) {
                    out.push((id, pgid, ticks as u64));
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> std::process::Child {
        use std::os::unix::process::CommandExt;
        // A group leader that ignores SIGTERM, with a child in its group.
        std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 60 & wait"])
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[tokio::test]
    async fn a_recorded_group_left_behind_is_ended_and_a_reused_id_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (mut ours, mut other) = (group(), group());
        let job = JobId::new();
        scope(job, store.clone(), async { process_started(ours.id()) }).await;
        // The same id started at another time (a reused id): never signalled.
        let ticks = start_ticks(other.id() as i32).unwrap();
        store
            .process_put(JobId::new(), other.id() as i32, ticks - 1)
            .unwrap();
        let found = end_orphans(&store, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(found, vec![job]);
        assert!(!ours.wait().unwrap().success());
        assert!(members(ours.id() as i32, 0).is_empty());
        assert!(store.processes().unwrap().is_empty());
        assert!(
            other.try_wait().unwrap().is_none(),
            "another group was signalled"
        );
        killpg(Pid::from_raw(other.id() as i32), Signal::SIGKILL).unwrap();
        other.wait().unwrap();
    }
}
