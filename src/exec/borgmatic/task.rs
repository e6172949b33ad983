//! Running one borgmatic invocation as a job task: re-checking a client-named
//! directory when the job starts, a private runtime directory per job, log lines
//! rendered and progress published while it runs, then [`super::outcome`] judges
//! it and an extract is compared with the archive (see `restored`).
//!
//! May import: `domain`, `config::Secret`, `jobs` (the `Task` interface), the
//! siblings `process`, `roots`, `skipped`, `restored`, `borgmatic_log`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::argv::eq_path;
use super::outcome::{
    is_error_summary, is_warning, judge, looks_like_error, parse_output, Output, RunResult,
};
use crate::config::Secret;
use crate::domain::ArchivePath;
use crate::exec::borgmatic_log;
use crate::exec::process::{self, ProcessSpec};
use crate::exec::restored;
use crate::exec::roots::{Confined, RootError};
use crate::exec::skipped::{self, Skipped};
use crate::jobs::{BoxFuture, JobState, Stream, Task, TaskContext, TaskOutcome};

/// One borgmatic invocation as a job task.
pub struct BorgmaticTask {
    pub(super) spec: ProcessSpec,
    pub(super) output: Output,
    pub(super) runtime_root: PathBuf,
    /// The name prefix of the job's private runtime directory (see
    /// [`RESTORE_RUNTIME_PREFIX`]).
    pub(super) runtime_prefix: &'static str,
    pub(super) log_json: bool,
    /// For a job that extracts: compare owners and modes afterwards.
    pub(super) restore_check: Option<Box<RestoreCheck>>,
    pub(super) confine: Option<Confinement>,
}

/// What an extract job compares after borg is done.
pub(super) struct RestoreCheck {
    pub(super) listing: BorgmaticTask,
    pub(super) destination: PathBuf,
    pub(super) paths: Vec<ArchivePath>,
}

/// A client-named directory in the argv, checked again when the job starts.
pub(super) struct Confinement {
    pub(super) index: usize,
    pub(super) flag: &'static str,
    pub(super) dir: Confined,
    /// Pass the directory held open (`/proc/<pid>/fd/<n>`) rather than its name.
    pub(super) pin: bool,
    /// A new file of this name in the directory: created (only if nothing of that
    /// name exists) when the job starts and passed held open instead of the
    /// directory; removed again when borgmatic fails.
    pub(super) create_file: Option<String>,
}

/// Why a borgmatic run could not happen or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The process could not be started or waited for.
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    /// The confined directory failed its re-check when the job started.
    #[error("refused when the job started: {0}")]
    Confinement(#[from] RootError),
}

impl BorgmaticTask {
    /// The argv it will run (tests and logs; holds no secret by construction).
    pub fn args(&self) -> &[OsString] {
        &self.spec.args
    }

    /// The process alone, for callers that run it inside a task of their own (only
    /// actions without a client-named directory: nothing re-checks one here).
    pub fn into_spec(self) -> ProcessSpec {
        debug_assert!(self.confine.is_none());
        self.spec
    }
}

/// Shortest gap between two published progress updates.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What the line handler learns while the process runs.
#[derive(Default)]
struct Observed {
    warned: bool,
    first_error: Option<String>,
    lock_held: bool,
    progress: serde_json::Map<String, Value>,
    last_progress: Option<std::time::Instant>,
    skipped: Skipped,
}

impl Observed {
    /// Takes in one rendered line; returns the progress to publish, when due.
    fn see(
        &mut self,
        stream: Stream,
        issue: Option<skipped::FileIssue>,
        rendered: &mut borgmatic_log::Rendered,
    ) -> Option<Value> {
        if let Some(issue) = issue {
            self.skipped.add(issue);
        }
        if let Some(text) = &rendered.text {
            self.warned |= is_warning(text);
            if text.contains("Failed to create/acquire the lock") {
                self.lock_held = true;
            }
            if stream == Stream::Stderr
                && self.first_error.is_none()
                && is_error_summary(text)
                && looks_like_error(text)
            {
                self.first_error = Some(text.clone());
            }
        }
        let p = rendered.progress.take()?;
        self.progress.extend(p);
        let due = self
            .last_progress
            .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
        if !due {
            return None;
        }
        self.last_progress = Some(std::time::Instant::now());
        Some(Value::Object(self.progress.clone()))
    }
}

impl BorgmaticTask {
    /// Runs borgmatic inside a task of the caller's (several steps in one job):
    /// lines rendered into `ctx`'s log, progress published, nothing judged yet.
    pub async fn run_inline(self, ctx: &TaskContext) -> Result<RunResult, RunError> {
        let mut spec = self.spec;
        // A queued job's directory may have been swapped for a link while it
        // waited: check it again now, and hold it open while borgmatic runs.
        let mut made: Option<(&str, cap_std::fs::File)> = None;
        let pinned = match &self.confine {
            Some(c) => {
                let pinned = c.dir.reopen()?;
                if let Some(name) = &c.create_file {
                    let file = pinned.create_new(name)?;
                    let path = crate::exec::roots::fd_path(&file)
                        .unwrap_or_else(|| c.dir.path().join(name));
                    spec.args[c.index] = eq_path(c.flag, &path);
                    made = Some((name.as_str(), file));
                } else if c.pin {
                    spec.args[c.index] = eq_path(c.flag, &pinned.arg_path());
                }
                Some(pinned)
            }
            None => None,
        };
        // borgmatic cleans up `<runtime base>/borgmatic-*/borgmatic/bootstrap` with a
        // glob, deleting the manifest of any other borgmatic running at the same
        // time (a spurious borg warning). A private base per job keeps concurrent
        // jobs apart; it is removed when the job ends.
        let runtime = private_runtime_dir(&self.runtime_root, self.runtime_prefix);
        if let Some(dir) = &runtime {
            let path = dir.path().display().to_string();
            spec.env
                .push(("XDG_RUNTIME_DIR".into(), Secret::new(path.clone())));
            spec.env.push(("TMPDIR".into(), Secret::new(path)));
        }
        let observed = std::sync::Mutex::new(Observed::default());
        let log_json = self.log_json;
        let creates = matches!(self.output, Output::Create { .. });
        let on_line = |stream: Stream, raw: &str| {
            // borg's per-file warnings arrive on stderr (stdout is the JSON result).
            let issue = (creates && stream == Stream::Stderr)
                .then(|| skipped::classify(raw, log_json))
                .flatten();
            let mut rendered = if log_json {
                borgmatic_log::render(raw)
            } else {
                borgmatic_log::Rendered {
                    text: Some(raw.to_string()),
                    progress: None,
                }
            };
            let publish = match observed.lock() {
                Ok(mut o) => o.see(stream, issue, &mut rendered),
                Err(_) => None,
            };
            if let Some(text) = rendered.text {
                ctx.line(stream, &text);
            }
            if let Some(p) = publish {
                ctx.progress(p);
            }
        };
        let out = process::run(&spec, &ctx.cancel, &ctx.pace(), &on_line).await;
        if let (Some(p), Some((name, _))) = (&pinned, &made) {
            if !matches!(&out, Ok(o) if o.exit_code == 0) {
                // A failed or cancelled export leaves no partial file behind.
                p.remove(name);
            }
        }
        drop(made);
        let out = out?;
        drop(runtime);
        let o = observed.into_inner().unwrap_or_default();
        Ok(RunResult {
            exit_code: out.exit_code,
            stdout: out.stdout,
            warned: o.warned,
            first_error: o.first_error,
            lock_held: o.lock_held,
            skipped: o.skipped,
        })
    }
}

impl Task for BorgmaticTask {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            let output = self.output.clone();
            let mut task = *self;
            let restore_check = task.restore_check.take();
            let run = match task.run_inline(&ctx).await {
                Ok(r) => r,
                Err(e) => return TaskOutcome::failed(e.to_string()),
            };
            let data = parse_output(&output, &run.stdout);
            let mut outcome = judge(&output, &run, data);
            if let (Some(check), JobState::Succeeded | JobState::Warning) =
                (restore_check, outcome.state)
            {
                check_restore(*check, &ctx, &mut outcome).await;
            }
            outcome
        })
    }
}

/// Lists the archive and compares owners and modes of what was extracted; any
/// difference, or a comparison that could not be made, turns the job into a
/// `warning` with the reason.
async fn check_restore(check: RestoreCheck, ctx: &TaskContext, outcome: &mut TaskOutcome) {
    ctx.line(
        Stream::Stdout,
        "comparing restored owners and modes with the archive",
    );
    let listing = check.listing.run_inline(ctx).await;
    let mut data = match outcome.data.take() {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let reason = match listing {
        Ok(l) if l.exit_code == 0 => {
            let destination = check.destination.clone();
            let paths = check.paths.clone();
            let stdout = l.stdout;
            match tokio::task::spawn_blocking(move || {
                restored::compare(&destination, &paths, &stdout)
            })
            .await
            {
                Ok(compared) => {
                    data.extend(compared.fields());
                    compared.reason()
                }
                Err(e) => Some(format!(
                    "extracted, but owners and modes could not be compared with the archive: {e}"
                )),
            }
        }
        Ok(l) => Some(format!(
            "extracted, but owners and modes could not be compared with the archive: {}",
            l.failure()
        )),
        Err(e) => Some(format!(
            "extracted, but owners and modes could not be compared with the archive: {e}"
        )),
    };
    if let Some(r) = reason {
        data.insert("partial".into(), json!(true));
        data.insert("reason".into(), json!(r));
        outcome.state = JobState::Warning;
        outcome.error = Some(r);
    }
    outcome.data = Some(Value::Object(data));
}

/// The private runtime directory prefix of every job but a dump restore.
pub(super) const JOB_RUNTIME_PREFIX: &str = "job-";

/// The private runtime directory prefix of a dump restore. Under borg 1.2 an
/// archive holds a dump at its full path, `<run>/job-…/borgmatic-…/borgmatic/…`, and
/// `borgmatic restore` looks for it with its own runtime path in which only
/// components starting with `borgmatic-` become `*`: this prefix makes the restore's
/// `<run>/borgmatic-restore-…/borgmatic-…` match any backup job's directory. Only
/// restores use it (borgmatic's clean-up globs the same way), and they run one at a
/// time.
pub(super) const RESTORE_RUNTIME_PREFIX: &str = "borgmatic-restore-";

fn private_runtime_dir(root: &Path, prefix: &str) -> Option<tempfile::TempDir> {
    let made = std::fs::create_dir_all(root)
        .and_then(|()| tempfile::Builder::new().prefix(prefix).tempdir_in(root));
    match made {
        Ok(dir) => Some(dir),
        Err(e) => {
            tracing::warn!(error = %e, root = %root.display(), "no private runtime directory; borgmatic uses the shared one");
            None
        }
    }
}
