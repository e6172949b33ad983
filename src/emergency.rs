//! Seeing and ending a stuck situation: running jobs, borg FUSE mounts (from
//! `/proc/self/mountinfo`, not by scraping `mount`), held borg locks (from the lock
//! files, with whether the holder is a process of this worker), AIO containers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::command::JobId;
use crate::exec::process::{self, ProcessSpec};
use crate::jobs::{
    BoxFuture, CancelReason, JobEngine, JobState, Stream, Task, TaskContext, TaskOutcome,
};
use crate::locks::LockStatus;

/// One FUSE mount below the mount root.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mount {
    pub mount_point: String,
    pub fstype: String,
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
    pub repository: String,
    pub location: String,
    pub lock: LockStatus,
    /// Some holder is alive and a process of this worker (a job holds it).
    pub held_by_us: bool,
}

/// Levels of the overall verdict, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Normal,
    Warning,
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

/// One repository whose lock `emergency/stop` may break.
pub struct LockTarget {
    pub repository: String,
    pub break_lock: ProcessSpec,
    pub repo_path: PathBuf,
}

/// An exec that starts Nextcloud AIO again (already allowed by the policy).
pub struct AioStart {
    pub engine: crate::docker::Engine,
    pub container: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// `emergency/stop` as a job: every step reported, safe to run twice.
pub struct EmergencyStop {
    pub engine: JobEngine,
    pub mount_root: PathBuf,
    pub locks: Vec<LockTarget>,
    /// The AIO start, when asked for.
    pub restart_aio: Option<AioStart>,
    pub grace: Duration,
}

impl Task for EmergencyStop {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            let mut steps = Vec::new();
            let mut all_ok = true;
            let mut step = |name: &str, ok: bool, detail: Value, ctx: &TaskContext| {
                ctx.line(
                    Stream::Stdout,
                    &format!("{name}: {}", if ok { "ok" } else { "FAILED" }),
                );
                all_ok &= ok;
                steps.push(json!({ "step": name, "ok": ok, "detail": detail }));
            };

            // 1. Cancel every other job and wait for them to end.
            let me = ctx.job_id();
            let active: Vec<JobId> = self
                .engine
                .list(None, usize::MAX)
                .into_iter()
                .filter(|r| !r.state.is_final() && r.job_id != me)
                .map(|r| r.job_id)
                .collect();
            for id in &active {
                let _ = self.engine.cancel(*id, CancelReason::User);
            }
            let deadline = tokio::time::Instant::now() + self.grace;
            let mut left: Vec<JobId> = active.clone();
            while !left.is_empty() && tokio::time::Instant::now() < deadline {
                left.retain(|id| self.engine.get(*id).is_some_and(|r| !r.state.is_final()));
                if !left.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            step(
                "cancel jobs",
                left.is_empty(),
                json!({ "cancelled": active, "still_running": left }),
                &ctx,
            );

            // 2. Unmount every FUSE mount below the mount root.
            let mut unmounted = Vec::new();
            let mut failed = Vec::new();
            for m in fuse_mounts(&self.mount_root) {
                let ok = unmount(&m.mount_point, &ctx).await;
                if ok {
                    unmounted.push(m.mount_point);
                } else {
                    failed.push(m.mount_point);
                }
            }
            step(
                "unmount",
                failed.is_empty(),
                json!({ "unmounted": unmounted, "failed": failed }),
                &ctx,
            );

            // 3. Break locks no live process of ours holds.
            let mut broken = Vec::new();
            let mut kept = Vec::new();
            let mut lock_failures = Vec::new();
            for target in &self.locks {
                let status = crate::locks::local_status(&target.repo_path);
                if status.locked != Some(true) {
                    continue;
                }
                let ours = status
                    .holders
                    .iter()
                    .any(|h| h.alive == Some(true) && is_ours(h.pid));
                if ours {
                    kept.push(json!({ "repository": target.repository, "reason": "held by a job of this worker" }));
                    continue;
                }
                let out = process::run(&target.break_lock, &ctx.cancel, &ctx.pace(), &|s, l| {
                    ctx.line(s, l)
                })
                .await;
                match out {
                    Ok(o) if o.exit_code == 0 => broken.push(json!({
                        "repository": target.repository,
                        "holders": status.holders,
                    })),
                    Ok(o) => lock_failures
                        .push(json!({ "repository": target.repository, "exit_code": o.exit_code })),
                    Err(e) => lock_failures
                        .push(json!({ "repository": target.repository, "error": e.to_string() })),
                }
            }
            step(
                "break locks",
                lock_failures.is_empty(),
                json!({ "broken": broken, "kept": kept, "failed": lock_failures }),
                &ctx,
            );

            // 4. Start Nextcloud AIO again, when asked.
            if let Some(a) = &self.restart_aio {
                let r = crate::exec::docker_exec::exec_streaming(
                    &a.engine,
                    &a.container,
                    &a.argv,
                    &a.env,
                    &ctx,
                )
                .await;
                let (ok, detail) = match r {
                    Ok(Some(code)) => (code == 0, json!({ "exit_code": code })),
                    Ok(None) => (false, json!({ "error": "cancelled" })),
                    Err(e) => (false, json!({ "error": e.to_string() })),
                };
                step("restart aio", ok, detail, &ctx);
            }

            TaskOutcome {
                state: if all_ok {
                    JobState::Succeeded
                } else {
                    JobState::Failed
                },
                exit_code: None,
                data: Some(json!({ "steps": steps })),
                error: (!all_ok).then(|| "some steps failed (see data.steps)".to_string()),
            }
        })
    }
}

async fn unmount(mount_point: &str, ctx: &TaskContext) -> bool {
    // Read from /proc/self/mountinfo below the mount root: absolute, and after `--`
    // in any case, so it is never an option.
    if !mount_point.starts_with('/') || mount_point.contains(['\n', '\0']) {
        return false;
    }
    for (program, args) in [
        ("fusermount", vec!["-u", "--", mount_point]),
        ("fusermount3", vec!["-u", "--", mount_point]),
        ("umount", vec!["--", mount_point]),
    ] {
        let spec = ProcessSpec {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: vec![],
            capture_stdout: false,
            kill_grace: Duration::from_secs(5),
        };
        if let Ok(o) = process::run(&spec, &ctx.cancel, &ctx.pace(), &|s, l| ctx.line(s, l)).await {
            if o.exit_code == 0 {
                return true;
            }
        }
    }
    false
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
