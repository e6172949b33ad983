//! `archive/delete`: the job that checks the archive exists, then deletes it.
//!
//! borgmatic hands borg 1.2 the name as `--glob-archives NAME`; a name that
//! matches nothing deletes nothing and exits 0, so the existence check is ours.
//!
//! May import: `domain`, `exec::borgmatic`, `jobs`.

use serde_json::Value;

use crate::domain::ArchiveName;
use crate::exec::borgmatic::{first_json, BorgmaticTask};
use crate::jobs::{BoxFuture, Stream, Task, TaskContext, TaskOutcome};

/// Lists the repository, then deletes the archive when it is there.
pub struct DeleteTask {
    /// `repo-list --json` of the repository.
    pub list: BorgmaticTask,
    /// `delete --archive NAME`.
    pub delete: BorgmaticTask,
    /// The archive to delete.
    pub archive: ArchiveName,
}

impl Task for DeleteTask {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            let DeleteTask {
                list,
                delete,
                archive,
            } = *self;
            let listed = match list.run_inline(&ctx).await {
                Ok(r) if r.exit_code == 0 => r,
                Ok(r) => {
                    return TaskOutcome::failed(format!(
                        "the archives could not be listed, nothing was deleted: {}",
                        r.failure()
                    ))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "archive/delete: borgmatic did not run");
                    return TaskOutcome::failed(
                        "borgmatic could not be run (see the worker's log)",
                    );
                }
            };
            if !names(first_json(&listed.stdout)).any(|n| n == archive.as_str()) {
                return TaskOutcome::failed(format!(
                    "no archive named {} in this repository; nothing was deleted",
                    archive.as_str()
                ));
            }
            ctx.line(
                Stream::Stdout,
                &format!("deleting archive {}", archive.as_str()),
            );
            Box::new(delete).run(ctx).await
        })
    }
}

/// Archive names in borgmatic's `repo-list --json` output (one run per repository).
fn names(listing: Option<Value>) -> impl Iterator<Item = String> {
    listing
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .flat_map(|run| {
            run.get("archives")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|a| {
            a.get("name")
                .or_else(|| a.get("archive"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_every_repository_run() {
        let v = serde_json::json!([
            {"archives": [{"name": "a1"}, {"archive": "a2"}]},
            {"archives": [{"name": "b1"}]},
            {"repository": {}}
        ]);
        assert_eq!(names(Some(v)).collect::<Vec<_>>(), ["a1", "a2", "b1"]);
        assert_eq!(names(None).count(), 0);
    }
}
