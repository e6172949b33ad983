//! Seeing and ending a stuck situation: running jobs, borg FUSE mounts (from
//! `/proc/self/mountinfo`, not by scraping `mount`), held borg locks (from the lock
//! files, with whether the holder is a process of this worker), AIO containers.
//!
//! This module holds the views (what is stuck, and how bad); `stop` ends it.
//! Imports: `domain`, `jobs`, `locks`, `docker`, `exec::process` and
//! `exec::docker_exec`; no transport.

use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use crate::locks::LockStatus;

mod stop;

pub use stop::{AioStart, EmergencyStop, LockTarget};

/// One FUSE mount below the mount root.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mount {
    /// Where it is mounted (mountinfo's escapes undone).
    pub mount_point: String,
    /// The file system type (`fuse`, `fuse.borgfs`, …).
    pub fstype: String,
    /// What is mounted, as the kernel names it.
    pub source: String,
}

/// Unescapes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// FUSE mounts whose mount point lies below `root`, from a mountinfo text.
pub fn fuse_mounts_in(mountinfo: &str, root: &Path) -> Vec<Mount> {
    let root = root.to_string_lossy().trim_end_matches('/').to_string();
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = unescape(left.split(' ').nth(4)?);
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = unescape(r.next().unwrap_or(""));
            let below = mount_point == root || mount_point.starts_with(&format!("{root}/"));
            (below && fstype.starts_with("fuse")).then_some(Mount {
                mount_point,
                fstype,
                source,
            })
        })
        .collect()
}

/// FUSE mounts below `root` on this machine.
pub fn fuse_mounts(root: &Path) -> Vec<Mount> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    fuse_mounts_in(&text, &root)
}

/// Whether `pid` is this process or one of its descendants.
pub fn is_ours(pid: u32) -> bool {
    let me = std::process::id();
    let mut current = pid;
    for _ in 0..64 {
        if current == me {
            return true;
        }
        if current <= 1 {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{current}/stat")) else {
            return false;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            return false;
        };
        match after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            Some(ppid) => current = ppid,
            None => return false,
        }
    }
    false
}

/// A held lock as the emergency view reports it.
#[derive(Debug, Clone, Serialize)]
pub struct HeldLock {
    /// The repository's label.
    pub repository: String,
    /// Where the repository lives, without credentials.
    pub location: String,
    /// The lock and its holders, from borg's lock files.
    pub lock: LockStatus,
    /// Some holder is alive and a process of this worker (a job holds it).
    pub held_by_us: bool,
}

/// Levels of the overall verdict, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing is stuck.
    Normal,
    /// Something needs a look (a lock held elsewhere, a mount, queued jobs).
    Warning,
    /// Something blocks backups (a stale lock, AIO's master container down).
    Critical,
}

/// The overall level and the reason for each finding.
pub fn assess(
    locks: &[HeldLock],
    mounts: &[Mount],
    queued: usize,
    aio: &Value,
) -> (Level, Vec<Value>) {
    let mut reasons = Vec::new();
    for l in locks {
        if l.lock.stale {
            reasons.push(json!({ "level": Level::Critical, "reason": format!(
                "repository {} has a stale lock: every holder is gone (repo/break-lock or emergency/stop)", l.repository) }));
        } else if !l.held_by_us {
            let holders: Vec<String> = l
                .lock
                .holders
                .iter()
                .map(|h| format!("pid {} on {}", h.pid, h.host))
                .collect();
            reasons.push(json!({ "level": Level::Warning, "reason": format!(
                "repository {} is locked by {} (not a job of this worker)",
                l.repository,
                if holders.is_empty() { "an unknown process".to_string() } else { holders.join(", ") }) }));
        }
    }
    for m in mounts {
        reasons.push(json!({ "level": Level::Warning, "reason": format!(
            "{} is mounted ({}); unmount it before maintenance", m.mount_point, m.fstype) }));
    }
    if queued > 0 {
        reasons.push(json!({ "level": Level::Warning, "reason": format!("{queued} job(s) wait in the queue") }));
    }
    if aio.get("available") == Some(&json!(false)) {
        reasons.push(json!({ "level": Level::Warning, "reason": format!(
            "the Docker engine does not answer: {}", aio["reason"].as_str().unwrap_or("")) }));
    }
    if let Some(containers) = aio.get("containers").and_then(Value::as_array) {
        for c in containers {
            let name = c["name"].as_str().unwrap_or("");
            if name.ends_with("mastercontainer") && c["state"] != "running" {
                reasons.push(json!({ "level": Level::Critical, "reason": format!(
                    "{name} is {} (aio/start)", c["state"].as_str().unwrap_or("not running")) }));
            }
            if c["health"] == "unhealthy" {
                reasons.push(
                    json!({ "level": Level::Warning, "reason": format!("{name} is unhealthy") }),
                );
            }
        }
    }
    let level = reasons
        .iter()
        .filter_map(|r| serde_json::from_value::<String>(r["level"].clone()).ok())
        .map(|l| match l.as_str() {
            "critical" => Level::Critical,
            "warning" => Level::Warning,
            _ => Level::Normal,
        })
        .max()
        .unwrap_or(Level::Normal);
    (level, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_is_parsed_and_limited_to_the_root() {
        let text = "36 35 98:0 / /mnt/borgmatic/nc\\040x rw,nosuid - fuse borgfs rw,user_id=0\n\
                    37 35 98:0 / /mnt/other rw - fuse.sshfs host: rw\n\
                    38 35 8:1 / /mnt/borgmatic/disk rw - ext4 /dev/sda1 rw\n";
        let m = fuse_mounts_in(text, Path::new("/mnt/borgmatic"));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, "/mnt/borgmatic/nc x");
        assert_eq!(m[0].fstype, "fuse");
    }

    #[test]
    fn this_process_is_ours_and_init_is_not() {
        assert!(is_ours(std::process::id()));
        assert!(!is_ours(1));
    }
}
