//! `key/export`: the key directory (0700), the file's name (the worker's own) and
//! the job that makes the exported file 0600 and checks it is there.
//!
//! The key never passes through the worker: borg writes it to the file, and the
//! job's log holds borgmatic's messages only.
//!
//! May import: `domain`, `exec::borgmatic`, `jobs`.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::domain::RepositoryLabel;
use crate::exec::borgmatic::BorgmaticTask;
use crate::jobs::{BoxFuture, JobState, Task, TaskContext, TaskOutcome};

/// Creates `dir` (and its parents) with mode 0700, and narrows an existing one to
/// 0700: key files are read by the operator, nobody else.
pub fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other(
            "not a directory (or a symbolic link)",
        ));
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// `<dir>/<label>-<UTC time to the millisecond>.key` (`.txt` for paper). A label
/// is `[A-Za-z0-9_][A-Za-z0-9._-]*`: a file name, never a path.
pub fn file_path(dir: &Path, label: &RepositoryLabel, paper: bool, now: DateTime<Utc>) -> PathBuf {
    let ext = if paper { "txt" } else { "key" };
    let stamp = now.format("%Y%m%dT%H%M%S%.3fZ");
    dir.join(format!("{}-{stamp}.{ext}", label.as_str()))
}

/// Runs `key export`, then makes the file 0600 (borg writes it with the umask).
pub struct ExportTask {
    /// borgmatic `key export --path=…`.
    pub export: BorgmaticTask,
    /// The file borg writes.
    pub path: PathBuf,
}

impl Task for ExportTask {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            let ExportTask { export, path } = *self;
            let mut outcome = Box::new(export).run(ctx).await;
            if !matches!(outcome.state, JobState::Succeeded | JobState::Warning) {
                return outcome;
            }
            let secured = std::fs::symlink_metadata(&path).and_then(|m| {
                if m.is_file() && m.len() > 0 {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                } else {
                    Err(std::io::Error::other("not a non-empty regular file"))
                }
            });
            if let Err(e) = secured {
                tracing::error!(error = %e, path = %path.display(), "key/export: the exported key file is not usable");
                outcome.state = JobState::Failed;
                outcome.error = Some(
                    "borgmatic reported success but the key file is missing or could not be made private (the worker's log says why)".into(),
                );
            }
            outcome
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_is_the_workers() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z")
            .unwrap()
            .with_timezone(&Utc);
        let label = RepositoryLabel::parse("nc").unwrap();
        let p = file_path(Path::new("/k"), &label, false, now);
        assert_eq!(p, Path::new("/k/nc-20260102T030405.678Z.key"));
        let p = file_path(Path::new("/k"), &label, true, now);
        assert_eq!(p, Path::new("/k/nc-20260102T030405.678Z.txt"));
    }

    #[test]
    fn the_directory_is_private() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/keys");
        prepare_dir(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_dir(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
