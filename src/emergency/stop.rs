//! `emergency/stop` as a job: cancel every other job, unmount borg's FUSE mounts,
//! break locks no live process of this worker holds, and start Nextcloud AIO
//! again when asked; every step reported, safe to run twice.
//!
//! May import: `domain`, `jobs`, `locks`, `docker`, `exec` (`process`, `docker_exec`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::{fuse_mounts, is_ours};
use crate::domain::JobId;
use crate::exec::process::{self, ProcessSpec};
use crate::jobs::{
    BoxFuture, CancelReason, JobEngine, JobState, Stream, Task, TaskContext, TaskOutcome,
};

/// One repository whose lock `emergency/stop` may break.
pub struct LockTarget {
    /// The repository's label, as reported.
    pub repository: String,
    /// The `borgmatic break-lock` run for it.
    pub break_lock: ProcessSpec,
    /// The repository's local path, whose lock files tell who holds the lock.
    pub repo_path: PathBuf,
}

/// An exec that starts Nextcloud AIO again (already allowed by the policy).
pub struct AioStart {
    /// The Docker engine the exec goes through.
    pub engine: crate::docker::Engine,
    /// The AIO master container.
    pub container: String,
    /// The command run in it.
    pub argv: Vec<String>,
    /// Its environment, as the policy allowed it.
    pub env: Vec<(String, String)>,
}

/// `emergency/stop` as a job: every step reported, safe to run twice.
pub struct EmergencyStop {
    /// The engine whose other jobs are cancelled.
    pub engine: JobEngine,
    /// Every FUSE mount below it is unmounted.
    pub mount_root: PathBuf,
    /// The repositories whose locks may be broken.
    pub locks: Vec<LockTarget>,
    /// The AIO start, when asked for.
    pub restart_aio: Option<AioStart>,
    /// How long cancelled jobs get to end before the stop goes on.
    pub grace: Duration,
}

impl Task for EmergencyStop {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            let mut steps = Vec::new();
            let mut all_ok = true;
            let mut step = |name: &str, (ok, detail): (bool, Value), ctx: &TaskContext| {
                ctx.line(
                    Stream::Stdout,
                    &format!("{name}: {}", if ok { "ok" } else { "FAILED" }),
                );
                all_ok &= ok;
                steps.push(json!({ "step": name, "ok": ok, "detail": detail }));
            };
            step("cancel jobs", self.cancel_jobs(&ctx).await, &ctx);
            step("unmount", self.unmount_all(&ctx).await, &ctx);
            step("break locks", self.break_locks(&ctx).await, &ctx);
            if let Some(a) = &self.restart_aio {
                step("restart aio", restart_aio(a, &ctx).await, &ctx);
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

impl EmergencyStop {
    /// Cancels every other job and waits (up to the grace) for them to end.
    async fn cancel_jobs(&self, ctx: &TaskContext) -> (bool, Value) {
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
        (
            left.is_empty(),
            json!({ "cancelled": active, "still_running": left }),
        )
    }

    /// Unmounts every FUSE mount below the mount root.
    async fn unmount_all(&self, ctx: &TaskContext) -> (bool, Value) {
        let mut unmounted = Vec::new();
        let mut failed = Vec::new();
        for m in fuse_mounts(&self.mount_root) {
            if unmount(&m.mount_point, ctx).await {
                unmounted.push(m.mount_point);
            } else {
                failed.push(m.mount_point);
            }
        }
        (
            failed.is_empty(),
            json!({ "unmounted": unmounted, "failed": failed }),
        )
    }

    /// Breaks the locks no live process of this worker holds.
    async fn break_locks(&self, ctx: &TaskContext) -> (bool, Value) {
        let mut broken = Vec::new();
        let mut kept = Vec::new();
        let mut failures = Vec::new();
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
                Ok(o) => failures
                    .push(json!({ "repository": target.repository, "exit_code": o.exit_code })),
                Err(e) => failures
                    .push(json!({ "repository": target.repository, "error": e.to_string() })),
            }
        }
        (
            failures.is_empty(),
            json!({ "broken": broken, "kept": kept, "failed": failures }),
        )
    }
}

/// Starts Nextcloud AIO again.
async fn restart_aio(a: &AioStart, ctx: &TaskContext) -> (bool, Value) {
    let r = crate::exec::docker_exec::exec_streaming(&a.engine, &a.container, &a.argv, &a.env, ctx)
        .await;
    match r {
        Ok(Some(code)) => (code == 0, json!({ "exit_code": code })),
        Ok(None) => (false, json!({ "error": "cancelled" })),
        Err(e) => (false, json!({ "error": e.to_string() })),
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
