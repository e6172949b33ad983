//! The borgmatic executor: turns typed commands into borgmatic argv, runs them as
//! tasks, and reads the outcome (exit code, warnings, JSON output).
//!
//! Argv is built from typed fields only, and the configuration file is always
//! `<config_dir>/<label>.yaml`; a passphrase reaches borg only through the
//! environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use super::process::{self, ProcessSpec};
use crate::command::{ArchiveList, BackupRun, RepositoryLabel};
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

/// Builds borgmatic tasks for the configured binary and config directory.
#[derive(Clone)]
pub struct Borgmatic {
    binary: PathBuf,
    config_dir: PathBuf,
    kill_grace: Duration,
    /// Parent of each job's private runtime directory.
    runtime_root: PathBuf,
    settings: std::sync::Arc<Settings>,
}

impl Borgmatic {
    pub fn new(settings: std::sync::Arc<Settings>) -> Self {
        Self {
            binary: settings.borgmatic.binary.clone(),
            config_dir: settings.borgmatic.config_dir.clone(),
            kill_grace: Duration::from_secs(settings.jobs.kill_grace_secs),
            runtime_root: settings.state_dir.join("run"),
            settings,
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

    fn task(&self, spec: ProcessSpec, output: Output) -> BorgmaticTask {
        BorgmaticTask {
            spec,
            output,
            runtime_root: self.runtime_root.clone(),
        }
    }

    fn spec(&self, repo: &Repository, action: &[&str], capture: bool) -> ProcessSpec {
        let mut args: Vec<OsString> = vec!["--config".into(), repo.config.clone().into()];
        args.extend(action.iter().map(OsString::from));
        let mut env: Vec<(String, Secret)> = Vec::new();
        if let Some(p) = self.settings.passphrase_for(repo.label.as_str()) {
            env.push(("BORG_PASSPHRASE".into(), p.clone()));
        }
        ProcessSpec {
            program: self.binary.clone(),
            args,
            env,
            capture_stdout: capture,
            kill_grace: self.kill_grace,
        }
    }

    /// `backup/run`: `create --json`, with the requested extras.
    pub fn backup(&self, repo: &Repository, cmd: &BackupRun) -> BorgmaticTask {
        let mut action = vec![];
        if cmd.dry_run {
            action.push("--dry-run");
        }
        action.extend(["create", "--json"]);
        if cmd.stats {
            action.push("--stats");
        }
        if cmd.progress {
            action.push("--progress");
        }
        self.task(
            self.spec(repo, &action, true),
            Output::Create {
                dry_run: cmd.dry_run,
            },
        )
    }

    /// `archive/list`: `repo-list --json`, at verbosity 0 so stdout is only JSON.
    pub fn archive_list(&self, repo: &Repository, cmd: &ArchiveList) -> BorgmaticTask {
        let last = cmd.last.map(|n| n.to_string());
        let mut action = vec!["repo-list", "--json"];
        if let Some(n) = &last {
            action.extend(["--last", n.as_str()]);
        }
        self.task(self.spec(repo, &action, true), Output::RepoList)
    }
}

/// How to read a borgmatic run's stdout.
#[derive(Debug, Clone, Copy)]
enum Output {
    Create { dry_run: bool },
    RepoList,
}

/// One borgmatic invocation as a job task.
pub struct BorgmaticTask {
    spec: ProcessSpec,
    output: Output,
    runtime_root: PathBuf,
}

impl BorgmaticTask {
    /// The argv it will run (tests and logs; holds no secret by construction).
    pub fn args(&self) -> &[OsString] {
        &self.spec.args
    }
}

impl Task for BorgmaticTask {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            let mut spec = self.spec;
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
            let warned = AtomicBool::new(false);
            let last_error = std::sync::Mutex::new(None::<String>);
            let on_line = |stream: Stream, line: &str| {
                if is_warning(line) {
                    warned.store(true, Ordering::Relaxed);
                }
                if stream == Stream::Stderr && is_error_summary(line) {
                    if let Ok(mut e) = last_error.lock() {
                        e.get_or_insert_with(|| line.to_string());
                    }
                }
                ctx.line(stream, line);
            };
            let out = match process::run(&spec, &ctx.cancel, &on_line).await {
                Ok(out) => out,
                Err(e) => return TaskOutcome::failed(e.to_string()),
            };
            let data = parse_output(self.output, &out.stdout);
            let (state, error) = if out.exit_code == 0 {
                let state = if warned.load(Ordering::Relaxed) {
                    JobState::Warning
                } else {
                    JobState::Succeeded
                };
                (state, None)
            } else {
                let detail = last_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                (
                    JobState::Failed,
                    Some(format!(
                        "borgmatic exited with code {}{detail}",
                        out.exit_code
                    )),
                )
            };
            TaskOutcome {
                state,
                exit_code: Some(out.exit_code),
                data,
                error,
            }
        })
    }
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

/// borg's own warnings (`warning: …`) and borgmatic's verdict on a warning exit code.
fn is_warning(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    // borgmatic prefixes lines with the repository label or config path ("nc: …").
    let unprefixed = lower
        .split_once(": ")
        .filter(|(prefix, _)| !prefix.contains(' '))
        .map_or("", |(_, rest)| rest);
    lower.starts_with("warning:")
        || unprefixed.starts_with("warning:")
        || (lower.contains("treating exit code") && lower.contains("as a warning"))
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
fn first_json(stdout: &[u8]) -> Option<Value> {
    let start = stdout.iter().position(|b| *b == b'[' || *b == b'{')?;
    serde_json::Deserializer::from_slice(&stdout[start..])
        .into_iter::<Value>()
        .next()?
        .ok()
}

fn parse_output(output: Output, stdout: &[u8]) -> Option<Value> {
    let json = first_json(stdout);
    match output {
        Output::Create { dry_run } => {
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
        assert!(is_warning("warning: file changed while we backed it up"));
        assert!(is_warning("nc: Warning: something"));
        assert!(!is_warning("Saving files cache"));
        assert!(!is_warning("no warnings were found: all good"));
    }

    #[test]
    fn json_with_trailing_text() {
        let out = b"[{\"archives\": [{\"name\": \"a1\", \"id\": \"x\", \"time\": \"t\"}], \"repository\": {\"location\": \"/r\"}}]\nsummary: done\n";
        let v = parse_output(Output::RepoList, out).unwrap();
        assert_eq!(v["archives"][0]["name"], "a1");
        assert_eq!(v["archives"][0]["repository"], "/r");
        assert!(parse_output(Output::RepoList, b"garbage").is_none());
        let dry = parse_output(Output::Create { dry_run: true }, b"").unwrap();
        assert_eq!(dry["dry_run"], true);
        assert!(dry["archive"].is_null());
    }
}
