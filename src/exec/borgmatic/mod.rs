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
//! [`crate::domain`] hold the final form of each value, so what was checked is what
//! is passed. See [`client_args`] and the property test below.
//!
//! # Layout
//! - `action`: [`Action`], [`Repository`], [`JobSecrets`]: what to run (data).
//! - `argv`: the one typed argv builder ([`client_args`] quotes client values).
//! - `task`: [`BorgmaticTask`], running one invocation as a job task.
//! - `outcome`: judging exit code, warnings, skipped files and JSON output.
//! - `version`: [`check_version`] at start-up.
//!
//! Imports: `domain` (value types), `config`, `jobs` (the `Task` interface),
//! `askpass` and `borg_config` (for ssh keys) and the sibling executors' helpers
//! (`process`, `roots`, `skipped`, `restored`, `borgmatic_log`); never a transport.

use std::path::PathBuf;
use std::time::Duration;

mod action;
mod argv;
mod outcome;
mod task;
mod version;

pub use action::{Action, JobSecrets, Repository};
#[cfg(test)]
pub(crate) use argv::client_args;
pub use outcome::{first_json, RunResult};
pub use task::{BorgmaticTask, RunError};
pub use version::{check_version, Version, VersionError, MIN_VERSION};

use crate::config::Settings;
use crate::domain::RepositoryLabel;
use task::RestoreCheck;

/// Builds borgmatic tasks for the configured binary and config directory.
#[derive(Clone)]
pub struct Borgmatic {
    pub(super) binary: PathBuf,
    pub(super) config_dir: PathBuf,
    pub(super) kill_grace: Duration,
    /// Parent of each job's private runtime directory.
    pub(super) runtime_root: PathBuf,
    /// borgmatic 2.1+ writes `--log-json`, which carries structured progress.
    pub(super) log_json: bool,
}

impl Borgmatic {
    /// The runner for `settings`; `version` decides whether `--log-json` is passed.
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
    pub(crate) fn for_tests(config_dir: &std::path::Path) -> Self {
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
}
