//! The borgmatic executor: turns typed commands into borgmatic argv, runs them as
//! tasks, and reads the outcome (exit code, warnings, JSON output).
//!
//! Argv is built here and nowhere else, from typed fields only, and the
//! configuration file is always `<config_dir>/<label>.yaml`; a passphrase reaches
//! borg only through the environment.
//!
//! Every value that came from a client is passed as `--flag=value`, one argv
//! element, so borgmatic can never read it as an option of its own. borgmatic then
//! hands some of them to borg as separate elements, after `REPO::ARCHIVE` and with
//! no `--` (it offers no way to add one): an archive path is therefore passed as
//! `pp:<path>`, borg's explicit path-prefix pattern, which can neither start with
//! `-` nor be read as another pattern style (`re:`, `sh:`). The newtypes in
//! [`crate::command`] hold the final form of each value, so what was checked is what
//! is passed. See [`client_args`] and the property test below.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::borgmatic_log;
use super::process::{self, ProcessSpec};
use super::restored;
use super::roots::{Confined, RootError};
use super::skipped::{self, Skipped};
use crate::command::{ArchiveName, ArchivePath, RepositoryLabel};
use crate::config::{Secret, Settings};
use crate::jobs::{BoxFuture, JobState, Stream, Task, TaskContext, TaskOutcome};

/// Oldest borgmatic whose commands and JSON output this worker relies on.
pub const MIN_VERSION: Version = Version(1, 9, 0);

/// A borgmatic version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// Reads the first `N.N[.N]` in `borgmatic --version` output.
    pub fn parse(text: &str) -> Option<Version> {
        let word = text
            .split_whitespace()
            .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
        let mut parts = word
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = parts.next().and_then(|p| p.ok()).unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("{binary} cannot be run ({reason}); install borgmatic 1.9 or newer (e.g. `pip install borgmatic`) or set borgmatic.binary")]
    Missing { binary: String, reason: String },
    #[error("{binary} is borgmatic {found}, older than {MIN_VERSION}; upgrade it (`pip install -U borgmatic`)")]
    TooOld { binary: String, found: Version },
    #[error("could not read a version from `{binary} --version`: {output:?}")]
    Unreadable { binary: String, output: String },
}

/// Runs `<binary> --version` and checks it against [`MIN_VERSION`].
pub async fn check_version(binary: &Path) -> Result<Version, VersionError> {
    let name = binary.display().to_string();
    let run = tokio::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(30), run).await {
        Err(_) => {
            return Err(VersionError::Missing {
                binary: name,
                reason: "`--version` did not answer within 30s".into(),
            })
        }
        Ok(Err(e)) => {
            return Err(VersionError::Missing {
                binary: name,
                reason: e.to_string(),
            })
        }
        Ok(Ok(out)) => out,
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(VersionError::Missing {
            binary: name,
            reason: format!("`--version` exited with {}", out.status),
        });
    }
    let version = Version::parse(&text).ok_or_else(|| VersionError::Unreadable {
        binary: name.clone(),
        output: text.chars().take(80).collect(),
    })?;
    if version < MIN_VERSION {
        return Err(VersionError::TooOld {
            binary: name,
            found: version,
        });
    }
    Ok(version)
}

/// A repository label resolved to its existing configuration file.
#[derive(Debug, Clone)]
pub struct Repository {
    pub label: RepositoryLabel,
    pub config: PathBuf,
}

/// The secrets one job may use: the configured ones, or a request's own.
#[derive(Debug, Clone, Default)]
pub struct JobSecrets {
    pub borg: Option<Secret>,
    pub ssh: Option<Secret>,
}

/// One borgmatic operation, with its arguments already validated and resolved.
#[derive(Debug, Clone)]
pub enum Action {
    /// `check --only archives` of one archive (plus `spot` when asked).
    CheckArchive {
        archive: ArchiveName,
        spot: bool,
    },
    /// The archive's files as JSON lines on stdout.
    ListFiles {
        archive: ArchiveName,
    },
    Create {
        dry_run: bool,
        stats: bool,
        progress: bool,
    },
    RepoList {
        last: Option<u32>,
    },
    Info {
        archive: ArchiveName,
    },
    LatestStats,
    RepoInfo,
    Extract {
        archive: ArchiveName,
        paths: Vec<ArchivePath>,
        destination: Confined,
    },
    Mount {
        archive: Option<ArchiveName>,
        mount_point: Confined,
    },
    Umount {
        mount_point: Confined,
    },
    Check {
        repair: bool,
    },
    Prune {
        dry_run: bool,
    },
    Compact {
        dry_run: bool,
    },
    BreakLock,
    ChangePassphrase {
        new: Secret,
    },
    ValidateConfig,
}

/// Builds borgmatic tasks for the configured binary and config directory.
#[derive(Clone)]
pub struct Borgmatic {
    binary: PathBuf,
    config_dir: PathBuf,
    kill_grace: Duration,
    /// Parent of each job's private runtime directory.
    runtime_root: PathBuf,
    /// borgmatic 2.1+ writes `--log-json`, which carries structured progress.
    log_json: bool,
}

impl Borgmatic {
    pub fn new(settings: &Settings, version: Version) -> Self {
        Self {
            binary: settings.borgmatic.binary.clone(),
            config_dir: settings.borgmatic.config_dir.clone(),
            kill_grace: Duration::from_secs(settings.jobs.kill_grace_secs),
            runtime_root: settings.state_dir.join("run"),
            log_json: version >= Version(2, 1, 0),
        }
    }

    /// A builder for tests of the argv alone (nothing is run).
    #[cfg(test)]
    pub(crate) fn for_tests(config_dir: &Path) -> Self {
        Self {
            binary: "borgmatic".into(),
            config_dir: config_dir.to_path_buf(),
            kill_grace: Duration::from_secs(1),
            runtime_root: config_dir.join("run"),
            log_json: true,
        }
    }

    /// `<config_dir>/<label>.yaml` (or `.yml`), when it exists.
    pub fn repository(&self, label: &RepositoryLabel) -> Option<Repository> {
        ["yaml", "yml"].iter().find_map(|ext| {
            let path = self.config_dir.join(format!("{}.{ext}", label.as_str()));
            path.is_file().then(|| Repository {
                label: label.clone(),
                config: path,
            })
        })
    }

    /// Every label with a configuration file, sorted.
    pub fn labels(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.config_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name
                    .strip_suffix(".yaml")
                    .or_else(|| name.strip_suffix(".yml"))?;
                RepositoryLabel::parse(stem).ok()?;
                e.path().is_file().then(|| stem.to_string())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The task that runs `action` on one repository's configuration.
    pub fn task(&self, repo: &Repository, secrets: &JobSecrets, action: Action) -> BorgmaticTask {
        // An extract is followed by a comparison with the archive's listing (see
        // `restored`): borg does not report owners it could not restore.
        let restore_check = match &action {
            Action::Extract {
                archive,
                paths,
                destination,
            } => Some(Box::new(RestoreCheck {
                listing: self.task_for(
                    repo.config.clone(),
                    secrets,
                    Action::ListFiles {
                        archive: archive.clone(),
                    },
                ),
                destination: destination.path().to_path_buf(),
                paths: paths.clone(),
            })),
            _ => None,
        };
        let mut task = self.task_for(repo.config.clone(), secrets, action);
        task.restore_check = restore_check;
        task
    }

    /// `config validate` of every configuration in the config directory.
    pub fn validate_all(&self) -> BorgmaticTask {
        self.task_for(
            self.config_dir.clone(),
            &JobSecrets::default(),
            Action::ValidateConfig,
        )
    }

    fn task_for(&self, config: PathBuf, secrets: &JobSecrets, action: Action) -> BorgmaticTask {
        let mut global: Vec<OsString> = vec![eq_path("--config", &config)];
        // The directory re-checked when the job starts: (its argv index, flag, dir).
        let mut confine: Option<(usize, &'static str, Confined, bool)> = None;
        let mut env: Vec<(String, Secret)> = Vec::new();
        if let Some(p) = &secrets.borg {
            env.push(("BORG_PASSPHRASE".into(), p.clone()));
        }
        if let Some(p) = &secrets.ssh {
            let keys = crate::borg_config::ssh_identity_files(&config);
            env.extend(crate::askpass::env(p, &keys));
        }
        let (args, output): (Vec<OsString>, Output) = match action {
            Action::Create {
                dry_run,
                stats,
                progress,
            } => {
                if dry_run {
                    global.push("--dry-run".into());
                }
                let mut a = args(&["create", "--json"]);
                if stats {
                    a.push("--stats".into());
                }
                if progress {
                    a.push("--progress".into());
                }
                (a, Output::Create { dry_run })
            }
            Action::RepoList { last } => {
                let mut a = args(&["repo-list", "--json"]);
                if let Some(n) = last {
                    a.push(format!("--last={n}").into());
                }
                (a, Output::RepoList)
            }
            Action::Info { archive } => (
                vec![
                    "info".into(),
                    "--json".into(),
                    client_args::archive(&archive),
                ],
                Output::Json,
            ),
            Action::LatestStats => (
                args(&["info", "--json", "--archive=latest"]),
                Output::LatestStats,
            ),
            Action::RepoInfo => (args(&["repo-info", "--json"]), Output::Json),
            Action::Extract {
                archive,
                paths,
                destination,
            } => {
                let mut a = vec!["extract".into(), client_args::archive(&archive)];
                a.push(eq_path("--destination", destination.path()));
                confine = Some((a.len() - 1, "--destination", destination.clone(), true));
                for p in &paths {
                    a.push(client_args::path(p));
                }
                let data = json!({
                    "archive": archive.as_str(),
                    "destination": destination.path(),
                    "paths": paths.iter().map(ArchivePath::as_str).collect::<Vec<_>>(),
                });
                (a, Output::Static(data))
            }
            Action::Mount {
                archive,
                mount_point,
            } => {
                let mut a: Vec<OsString> = vec!["mount".into()];
                if let Some(archive) = &archive {
                    a.push(client_args::archive(archive));
                }
                a.push(eq_path("--mount-point", mount_point.path()));
                // A mount point is passed by name: fusermount resolves it itself.
                confine = Some((a.len() - 1, "--mount-point", mount_point.clone(), false));
                let data = json!({
                    "archive": archive.as_ref().map(ArchiveName::as_str),
                    "mount_point": mount_point.path(),
                });
                (a, Output::Static(data))
            }
            Action::Umount { mount_point } => {
                let data = json!({ "mount_point": mount_point.path() });
                let a = vec![
                    "umount".into(),
                    eq_path("--mount-point", mount_point.path()),
                ];
                confine = Some((1, "--mount-point", mount_point, false));
                (a, Output::Static(data))
            }
            Action::Check { repair } => {
                let mut a = args(&["check", "--force"]);
                if repair {
                    a.push("--repair".into());
                    // borg asks for confirmation of a repair; the admin role is ours.
                    env.push((
                        "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING".into(),
                        Secret::new("YES"),
                    ));
                }
                (a, Output::Static(json!({ "repair": repair })))
            }
            Action::Prune { dry_run } => {
                if dry_run {
                    global.push("--dry-run".into());
                }
                (
                    args(&["prune", "--list"]),
                    Output::Static(json!({ "dry_run": dry_run })),
                )
            }
            Action::Compact { dry_run } => {
                if dry_run {
                    global.push("--dry-run".into());
                }
                (
                    args(&["compact"]),
                    Output::Static(json!({ "dry_run": dry_run })),
                )
            }
            Action::BreakLock => (args(&["break-lock"]), Output::Static(json!({}))),
            Action::ChangePassphrase { new } => {
                env.push(("BORG_NEW_PASSPHRASE".into(), new));
                (
                    args(&["key", "change-passphrase"]),
                    Output::Static(json!({
                        "next_step": "update the passphrase the worker uses for this repository (repositories.<label>.passphrase or encryption_passphrase), or the next job fails"
                    })),
                )
            }
            Action::ValidateConfig => (args(&["config", "validate"]), Output::Static(json!({}))),
            Action::CheckArchive { archive, spot } => {
                let mut a = args(&["check", "--force", "--only", "archives"]);
                if spot {
                    a.extend(args(&["--only", "spot"]));
                }
                a.push(client_args::match_archive(&archive));
                (a, Output::Static(json!({})))
            }
            Action::ListFiles { archive } => (
                vec![
                    "list".into(),
                    client_args::archive(&archive),
                    "--json".into(),
                ],
                Output::Json,
            ),
        };
        if self.log_json {
            global.push("--log-json".into());
        }
        let confine = confine.map(|(i, flag, dir, pin)| Confinement {
            index: global.len() + i,
            flag,
            dir,
            pin,
        });
        global.extend(args);
        BorgmaticTask {
            spec: ProcessSpec {
                program: self.binary.clone(),
                args: global,
                env,
                capture_stdout: output.captures_stdout(),
                kill_grace: self.kill_grace,
            },
            output,
            runtime_root: self.runtime_root.clone(),
            log_json: self.log_json,
            restore_check: None,
            confine,
        }
    }
}

/// The argv elements that carry a client's value: the only place one is quoted.
/// Each is a single `--flag=value` element whose value is a newtype's final form.
pub(crate) mod client_args {
    use std::ffi::OsString;

    use crate::command::{ArchiveName, ArchivePath};

    /// `--archive=NAME` (borgmatic passes `REPO::NAME` to borg).
    pub fn archive(a: &ArchiveName) -> OsString {
        format!("--archive={}", a.as_str()).into()
    }
    /// `--match-archives=NAME` (borgmatic passes `--glob-archives NAME`; a name
    /// holds no glob character).
    pub fn match_archive(a: &ArchiveName) -> OsString {
        format!("--match-archives={}", a.as_str()).into()
    }
    /// `--path=pp:PATH`: borg receives `pp:PATH`, a literal path prefix.
    pub fn path(p: &ArchivePath) -> OsString {
        format!("--path=pp:{}", p.as_str()).into()
    }
}

fn args(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

/// `--flag=<path>`: a path can never be taken for an option.
fn eq_path(flag: &str, value: &Path) -> OsString {
    let mut s = OsString::from(format!("{flag}="));
    s.push(value.as_os_str());
    s
}

/// How to read a borgmatic run's stdout.
#[derive(Debug, Clone)]
enum Output {
    Create {
        dry_run: bool,
    },
    RepoList,
    /// The first JSON value, per repository.
    Json,
    /// The newest archive of `info --json`.
    LatestStats,
    /// No parsed output; this summary is the result data.
    Static(Value),
}

impl Output {
    fn captures_stdout(&self) -> bool {
        matches!(
            self,
            Output::Create { .. } | Output::RepoList | Output::Json | Output::LatestStats
        )
    }
}

/// One borgmatic invocation as a job task.
pub struct BorgmaticTask {
    spec: ProcessSpec,
    output: Output,
    runtime_root: PathBuf,
    log_json: bool,
    /// For a job that extracts: compare owners and modes afterwards.
    restore_check: Option<Box<RestoreCheck>>,
    confine: Option<Confinement>,
}

/// What an extract job compares after borg is done.
struct RestoreCheck {
    listing: BorgmaticTask,
    destination: PathBuf,
    paths: Vec<ArchivePath>,
}

/// A client-named directory in the argv, checked again when the job starts.
struct Confinement {
    index: usize,
    flag: &'static str,
    dir: Confined,
    /// Pass the directory held open (`/proc/<pid>/fd/<n>`) rather than its name.
    pin: bool,
}

/// Why a borgmatic run could not happen or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Process(#[from] process::ProcessError),
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

/// What one borgmatic run left behind, before it is judged.
pub struct RunResult {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    /// borgmatic treated borg's exit code as a warning.
    pub warned: bool,
    /// The first line that names an error.
    pub first_error: Option<String>,
    /// borg met a lock held by another process.
    pub lock_held: bool,
    /// Files a `create` left out (empty for other actions).
    pub skipped: Skipped,
}

impl BorgmaticTask {
    /// Runs borgmatic inside a task of the caller's (several steps in one job):
    /// lines rendered into `ctx`'s log, progress published, nothing judged yet.
    pub async fn run_inline(self, ctx: &TaskContext) -> Result<RunResult, RunError> {
        let mut spec = self.spec;
        // A queued job's directory may have been swapped for a link while it
        // waited: check it again now, and hold it open while borgmatic runs.
        let _pinned = match &self.confine {
            Some(c) => {
                let pinned = c.dir.reopen()?;
                if c.pin {
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
        let runtime = private_runtime_dir(&self.runtime_root);
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
            let rendered = if log_json {
                borgmatic_log::render(raw)
            } else {
                borgmatic_log::Rendered {
                    text: Some(raw.to_string()),
                    progress: None,
                }
            };
            let mut publish = None;
            if let Ok(mut o) = observed.lock() {
                if let Some(issue) = issue {
                    o.skipped.add(issue);
                }
                if let Some(text) = &rendered.text {
                    o.warned |= is_warning(text);
                    if text.contains("Failed to create/acquire the lock") {
                        o.lock_held = true;
                    }
                    if stream == Stream::Stderr
                        && o.first_error.is_none()
                        && is_error_summary(text)
                        && looks_like_error(text)
                    {
                        o.first_error = Some(text.clone());
                    }
                }
                if let Some(p) = rendered.progress {
                    o.progress.extend(p);
                    let due = o
                        .last_progress
                        .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
                    if due {
                        o.last_progress = Some(std::time::Instant::now());
                        publish = Some(Value::Object(o.progress.clone()));
                    }
                }
            }
            if let Some(text) = rendered.text {
                ctx.line(stream, &text);
            }
            if let Some(p) = publish {
                ctx.progress(p);
            }
        };
        let out = process::run(&spec, &ctx.cancel, &ctx.pace(), &on_line).await?;
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

impl RunResult {
    /// Why a failed run failed, in words.
    pub fn failure(&self) -> String {
        if self.lock_held {
            "the repository is locked by another borg process; repo/lock-status names the holder, repo/break-lock (admin) removes a stale lock".into()
        } else {
            let detail = self
                .first_error
                .as_ref()
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            format!("borgmatic exited with code {}{detail}", self.exit_code)
        }
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

/// The job's state from borgmatic's exit code and warnings, and from what borg
/// left out: a backup that skipped files is a `warning` with the reason, never a
/// success, whatever exit code borgmatic chose.
fn judge(output: &Output, run: &RunResult, mut data: Option<Value>) -> TaskOutcome {
    let mut reason = None;
    if matches!(output, Output::Create { .. }) {
        let archive = data
            .as_ref()
            .and_then(|d| d.get("archive"))
            .and_then(Value::as_str)
            .map(str::to_string);
        reason = run.skipped.reason(archive.as_deref());
        if let Some(Value::Object(d)) = &mut data {
            d.extend(run.skipped.fields());
            if let Some(r) = &reason {
                d.insert("reason".into(), json!(r));
            }
        }
    }
    let (state, error) = if run.exit_code != 0 {
        (JobState::Failed, Some(run.failure()))
    } else if reason.is_some() || run.warned {
        (JobState::Warning, reason)
    } else {
        (JobState::Succeeded, None)
    };
    TaskOutcome {
        state,
        exit_code: Some(run.exit_code),
        data,
        error,
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

fn private_runtime_dir(root: &Path) -> Option<tempfile::TempDir> {
    let made = std::fs::create_dir_all(root)
        .and_then(|()| tempfile::Builder::new().prefix("job-").tempdir_in(root));
    match made {
        Ok(dir) => Some(dir),
        Err(e) => {
            tracing::warn!(error = %e, root = %root.display(), "no private runtime directory; borgmatic uses the shared one");
            None
        }
    }
}

/// borgmatic's verdict that borg ended with a warning.
fn is_warning(line: &str) -> bool {
    // borgmatic's own verdict on borg's exit code. borg's WARNING records alone are
    // not enough: ssh chatter ("Permanently added … to known hosts") arrives as one
    // on a perfectly good backup.
    let lower = line.to_ascii_lowercase();
    lower.contains("treating exit code") && lower.contains("as a warning")
}

/// The first line that names the error, skipping borgmatic's generic frame.
fn is_error_summary(line: &str) -> bool {
    let l = line.trim();
    !(l.is_empty()
        || l.ends_with("Error running actions for repository")
        || l.ends_with("Error running configuration")
        || l.ends_with("An error occurred")
        || l == "summary:"
        || l.starts_with("Need some help?"))
}

/// The first JSON value on stdout (borgmatic may append text after it).
pub fn first_json(stdout: &[u8]) -> Option<Value> {
    let start = stdout.iter().position(|b| *b == b'[' || *b == b'{')?;
    serde_json::Deserializer::from_slice(&stdout[start..])
        .into_iter::<Value>()
        .next()?
        .ok()
}

/// Borgmatic's generic frame lines are not the error; neither are progress lines.
fn looks_like_error(text: &str) -> bool {
    !(text.starts_with("Initializing cache")
        || text.starts_with("Saving ")
        || text.ends_with(" N "))
}

fn parse_output(output: &Output, stdout: &[u8]) -> Option<Value> {
    let json = first_json(stdout);
    match output {
        Output::Static(v) => Some(v.clone()),
        Output::Json => {
            let runs = json?.as_array().cloned().unwrap_or_default();
            match runs.len() {
                1 => runs.into_iter().next(),
                _ => Some(json!({ "repositories": runs })),
            }
        }
        Output::LatestStats => {
            let first = json?.as_array()?.first()?.clone();
            Some(json!({
                "archive": first.pointer("/archives/0").cloned().unwrap_or(Value::Null),
                "repository": first.get("repository").cloned().unwrap_or(Value::Null),
                "cache": first.get("cache").cloned().unwrap_or(Value::Null),
            }))
        }
        &Output::Create { dry_run } => {
            let runs = json.and_then(|v| v.as_array().cloned()).unwrap_or_default();
            let repositories: Vec<Value> = runs
                .iter()
                .map(|r| {
                    json!({
                        "repository": r.pointer("/repository/label")
                            .filter(|l| l.as_str().is_some_and(|s| !s.is_empty()))
                            .or_else(|| r.pointer("/repository/location"))
                            .cloned()
                            .unwrap_or(Value::Null),
                        "archive": r.pointer("/archive/name").cloned().unwrap_or(Value::Null),
                        "stats": r.pointer("/archive/stats").cloned().unwrap_or(Value::Null),
                        "duration": r.pointer("/archive/duration").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect();
            let first = repositories.first().cloned().unwrap_or(json!({}));
            Some(json!({
                "dry_run": dry_run,
                "archive": first.get("archive").cloned().unwrap_or(Value::Null),
                "stats": first.get("stats").cloned().unwrap_or(Value::Null),
                "duration": first.get("duration").cloned().unwrap_or(Value::Null),
                "repositories": repositories,
            }))
        }
        Output::RepoList => {
            let runs = json?.as_array().cloned().unwrap_or_default();
            let mut archives = Vec::new();
            let mut repositories = Vec::new();
            for r in &runs {
                let repo = r.get("repository").cloned().unwrap_or(Value::Null);
                let location = repo.get("location").cloned().unwrap_or(Value::Null);
                for a in r
                    .get("archives")
                    .and_then(|a| a.as_array())
                    .into_iter()
                    .flatten()
                {
                    archives.push(json!({
                        "name": a.get("name").or_else(|| a.get("archive")).cloned().unwrap_or(Value::Null),
                        "id": a.get("id").cloned().unwrap_or(Value::Null),
                        "time": a.get("time").or_else(|| a.get("start")).cloned().unwrap_or(Value::Null),
                        "repository": location,
                    }));
                }
                repositories.push(json!({
                    "repository": repo,
                    "encryption": r.get("encryption").cloned().unwrap_or(Value::Null),
                }));
            }
            Some(json!({ "archives": archives, "repositories": repositories }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(Version::parse("2.1.10\n"), Some(Version(2, 1, 10)));
        assert_eq!(Version::parse("borgmatic 1.9"), Some(Version(1, 9, 0)));
        assert!(Version::parse("1.8.14").unwrap() < MIN_VERSION);
        assert_eq!(Version::parse("nope"), None);
    }

    #[test]
    fn warnings() {
        assert!(is_warning(
            "local: Treating exit code 1 (warning) as a warning, as per borgmatic defaults"
        ));
        assert!(is_warning(
            "Treating exit code 107 (file changed) as a warning, as per configuration"
        ));
        assert!(!is_warning(
            "Remote: Warning: Permanently added '[127.0.0.1]:2222' to known hosts"
        ));
        assert!(!is_warning("Saving files cache"));
        assert!(!is_warning("no warnings were found: all good"));
    }

    fn run_with(exit_code: i32, warned: bool, lines: &[&str]) -> RunResult {
        let mut skipped = Skipped::default();
        for l in lines {
            if let Some(i) = skipped::classify(l, true) {
                skipped.add(i);
            }
        }
        RunResult {
            exit_code,
            stdout:
                br#"[{"archive": {"name": "nas-1", "stats": {}}, "repository": {"label": "nas"}}]"#
                    .to_vec(),
            warned,
            first_error: None,
            lock_held: false,
            skipped,
        }
    }

    #[test]
    fn a_backup_that_skipped_files_is_never_a_success() {
        let denied = r#"{"type": "log_message", "message": "/s/f: open: [Errno 13] Permission denied: 'f'", "levelname": "WARNING", "name": "borg.archiver"}"#;
        let create = Output::Create { dry_run: false };
        // Even when borgmatic was told to treat borg's warning as success.
        for warned in [true, false] {
            let run = run_with(0, warned, &[denied]);
            let out = judge(&create, &run, parse_output(&create, &run.stdout));
            assert_eq!(out.state, JobState::Warning);
            let d = out.data.unwrap();
            assert_eq!(d["partial"], true);
            assert_eq!(d["skipped_files"], 1);
            assert_eq!(d["skipped"][0]["path"], "/s/f");
            assert_eq!(d["archive"], "nas-1");
            assert!(out.error.unwrap().contains("nas-1"));
        }
        let clean = run_with(0, false, &[]);
        let out = judge(&create, &clean, parse_output(&create, &clean.stdout));
        assert_eq!(out.state, JobState::Succeeded);
        let d = out.data.unwrap();
        assert_eq!(
            (d["partial"].clone(), d["skipped_files"].clone()),
            (json!(false), json!(0))
        );
        assert!(out.error.is_none());
        let failed = run_with(1, false, &[denied]);
        let out = judge(&create, &failed, parse_output(&create, &failed.stdout));
        assert_eq!(out.state, JobState::Failed);
        assert_eq!(out.data.unwrap()["skipped_files"], 1);
    }

    #[test]
    fn json_with_trailing_text() {
        let out = b"[{\"archives\": [{\"name\": \"a1\", \"id\": \"x\", \"time\": \"t\"}], \"repository\": {\"location\": \"/r\"}}]\nsummary: done\n";
        let v = parse_output(&Output::RepoList, out).unwrap();
        assert_eq!(v["archives"][0]["name"], "a1");
        assert_eq!(v["archives"][0]["repository"], "/r");
        assert!(parse_output(&Output::RepoList, b"garbage").is_none());
        let dry = parse_output(&Output::Create { dry_run: true }, b"").unwrap();
        assert_eq!(dry["dry_run"], true);
        assert!(dry["archive"].is_null());
    }
}
