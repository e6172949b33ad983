//! `repo/create`: the job that makes sure no repository is there, then creates one.
//!
//! borgmatic's `repo-create` skips an existing repository and reports success;
//! the worker refuses instead, so a client never believes it made a repository
//! that was already there (with other archives, another key).
//!
//! May import: `exec::borgmatic`, `jobs`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::exec::borgmatic::BorgmaticTask;
use crate::jobs::{BoxFuture, Task, TaskContext, TaskOutcome};

/// The first local path that already holds a borg repository (its `config` file).
pub fn existing(local: &[PathBuf]) -> Option<&Path> {
    local
        .iter()
        .map(PathBuf::as_path)
        .find(|p| p.join("config").exists())
}

/// Checks again when the job starts, then creates the repository.
pub struct CreateTask {
    /// Local repository paths, re-checked when the job starts (it may have queued).
    pub local: Vec<PathBuf>,
    /// `repo-info` when a repository is remote: success means it exists.
    pub probe: Option<BorgmaticTask>,
    /// `repo-create`.
    pub create: BorgmaticTask,
}

impl Task for CreateTask {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            let CreateTask {
                local,
                probe,
                create,
            } = *self;
            if let Some(p) = existing(&local) {
                return TaskOutcome::failed(format!(
                    "a repository already exists at {}; nothing was changed",
                    p.display()
                ));
            }
            if let Some(probe) = probe {
                match probe.run_inline(&ctx).await {
                    Ok(r) if r.exit_code == 0 => return TaskOutcome::failed(
                        "the repository already exists (repo-info opened it); nothing was changed",
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "repo/create: borgmatic did not run");
                        return TaskOutcome::failed(
                            "borgmatic could not be run (see the worker's log)",
                        );
                    }
                }
            }
            let mut outcome = Box::new(create).run(ctx).await;
            if let Some(Value::Object(d)) = &mut outcome.data {
                d.insert("created".into(), json!(outcome.exit_code == Some(0)));
                d.insert(
                    "next_step".into(),
                    json!("for a repokey repository, run key/export once and keep the file: losing the key loses every archive"),
                );
            }
            outcome
        })
    }
}
