//! What a handler may touch ([`Ctx`]) and what it hands back ([`Outcome`]): an
//! answer, or a job plan the service submits. Handlers never build a wire
//! response and never submit a job themselves.
//!
//! May import: `domain`, `config`, `jobs`, `exec` (`borgmatic`, the exec policy,
//! `roots`), `docker`, `borg_config`.

use serde_json::Value;

use super::response::{ApiError, ErrorCode};
use crate::borg_config::BorgmaticConfig;
use crate::config::Settings;
use crate::docker::Engine;
use crate::domain::{JobId, RepositoryLabel, Role, RootPath, Secret, SubPath};
use crate::exec::borgmatic::{Borgmatic, JobSecrets, Repository};
use crate::exec::policy::ExecPolicy;
use crate::exec::roots::{self, RootError};
use crate::jobs::{repo_lock, JobEngine, Task};

use super::CommandName;

/// The lock key every AIO backup holds (and `backup/run` on an AIO repository).
pub(super) const AIO_LOCK: &str = "aio";

/// Everything a handler may use, lent by the service for one request.
pub struct Ctx<'a> {
    /// The worker's settings.
    pub settings: &'a Settings,
    /// The job engine: jobs to read or cancel (submitting one is the service's).
    pub engine: &'a JobEngine,
    /// The borgmatic runner: repositories and the tasks that run borgmatic.
    pub borgmatic: &'a Borgmatic,
    /// The Docker engine (containers, volumes, AIO).
    pub docker: &'a Engine,
    /// What `container/exec` may run.
    pub policy: &'a ExecPolicy,
    /// The audit trail, for `audit/list`.
    pub audit: &'a dyn AuditTrail,
    /// The caller's role (exec policy rules may need more than the command).
    pub role: Role,
    /// Secrets the request brought along.
    pub secrets: RequestSecrets,
}

/// The audit trail `audit/list` reads; the service owns it (so this module need
/// not import the service).
pub trait AuditTrail: Sync {
    /// The newest `limit` records, oldest first.
    fn last_records(&self, limit: usize) -> Value;
}

/// What a handler decided.
pub enum Outcome {
    /// The answer's data.
    Answer(Value),
    /// An answer about one job (its id goes into the response envelope).
    AboutJob(JobId, Value),
    /// A job to submit.
    Job(JobPlan),
}

/// A job, ready to submit.
pub struct JobPlan {
    /// The command the job runs (its name in job records and topics).
    pub name: CommandName,
    /// The repository it works on, if any.
    pub repository: Option<RepositoryLabel>,
    /// What it holds exclusively (`repo:<label>`, `aio`, `container:<name>`).
    pub locks: Vec<String>,
    /// What runs when the job starts.
    pub task: Box<dyn Task>,
    /// Secret values of this job alone to scrub from its output.
    pub scrub: Vec<String>,
    /// Runs even when `jobs.max_concurrent` jobs run (emergency stop).
    pub bypass_limit: bool,
}

/// Secrets a request brought along (`auth.allow_request_secrets`).
#[derive(Default)]
pub struct RequestSecrets {
    /// A repository passphrase for this request only.
    pub borg: Option<Secret>,
    /// An SSH key passphrase for this request only.
    pub ssh: Option<Secret>,
}

impl RequestSecrets {
    /// Whether the request brought no secret.
    pub fn is_empty(&self) -> bool {
        self.borg.is_none() && self.ssh.is_none()
    }
    /// The secrets' values, to scrub from this job's output.
    pub fn values(&self) -> Vec<String> {
        [&self.borg, &self.ssh]
            .into_iter()
            .flatten()
            .map(|s| s.expose().to_string())
            .collect()
    }
}

impl Ctx<'_> {
    /// A job holding `locks`, with nothing of its own to scrub.
    pub(super) fn job(
        &self,
        name: CommandName,
        repository: Option<RepositoryLabel>,
        locks: Vec<String>,
        task: Box<dyn Task>,
        scrub: Vec<String>,
    ) -> Result<Outcome, ApiError> {
        Ok(Outcome::Job(JobPlan {
            name,
            repository,
            locks,
            task,
            scrub,
            bypass_limit: false,
        }))
    }

    /// A job on one repository: holds its lock.
    pub(super) fn repo_job(
        &self,
        name: CommandName,
        repository: RepositoryLabel,
        task: Box<dyn Task>,
        scrub: Vec<String>,
    ) -> Result<Outcome, ApiError> {
        let locks = vec![repo_lock(&repository)];
        self.job(name, Some(repository), locks, task, scrub)
    }

    /// The configuration of `label`, or `not_found`.
    pub(super) fn repository(&self, label: &RepositoryLabel) -> Result<Repository, ApiError> {
        self.borgmatic
            .repository(label)
            .ok_or_else(|| no_repo(label))
    }

    /// The secrets a job on `label` uses: the request's, else the configured ones.
    pub(super) fn job_secrets(&self, label: &RepositoryLabel) -> Result<JobSecrets, ApiError> {
        let borg = self
            .secrets
            .borg
            .clone()
            .or_else(|| self.settings.passphrase_for(label.as_str()).cloned());
        let ssh = self
            .secrets
            .ssh
            .clone()
            .or_else(|| self.settings.ssh_passphrase_for(label.as_str()).cloned());
        if let (Some(b), Some(s)) = (&borg, &ssh) {
            if b == s {
                return Err(ApiError::invalid(
                    "the borg passphrase equals the SSH key passphrase; use distinct secrets",
                ));
            }
        }
        Ok(JobSecrets { borg, ssh })
    }

    /// `sub` below `root`: created (or, with `existing`, required to exist).
    pub(super) fn below(
        &self,
        root: &std::path::Path,
        sub: &SubPath,
        existing: bool,
    ) -> Result<roots::Confined, ApiError> {
        let r = if existing {
            roots::existing_below(root, sub)
        } else {
            roots::resolve_below(root, sub)
        };
        r.map_err(|e| root_error(e, existing))
    }

    /// A client's path below `root` in its final form: relative as written, or
    /// absolute and inside the root (as configured, or canonical as the worker's
    /// answers give it); anything else is `invalid`.
    pub(super) fn sub_below(
        &self,
        root: &std::path::Path,
        path: &RootPath,
    ) -> Result<SubPath, ApiError> {
        let canonical = roots::canonical_root(root);
        let mut candidates = vec![root];
        candidates.extend(canonical.as_deref());
        path.below(&candidates).ok_or_else(|| {
            ApiError::invalid(format!(
                "{} is not below the configured root {}; refused (confinement)",
                crate::domain::quote(path.as_str()),
                root.display()
            ))
        })
    }

    /// A new file below `root`: its directory confined (created when missing, no
    /// symbolic link on the way) and the file's name, which must end with
    /// `suffix` and name nothing that exists yet.
    pub(super) fn new_file_below(
        &self,
        root: &std::path::Path,
        path: &RootPath,
        suffix: &str,
    ) -> Result<(roots::Confined, String), ApiError> {
        let sub = self.sub_below(root, path)?;
        let (parent, name) = match sub.as_str().rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, sub.as_str()),
        };
        if name.len() <= suffix.len() || !name.ends_with(suffix) {
            return Err(ApiError::invalid(format!(
                "the file's name must end with {suffix}, got {}",
                crate::domain::quote(name)
            )));
        }
        let dir = match parent {
            Some(p) => {
                let p = SubPath::parse(p).map_err(|e| ApiError::invalid(e.to_string()))?;
                self.below(root, &p, false)?
            }
            None => roots::root_itself(root).map_err(|e| root_error(e, false))?,
        };
        dir.reopen()
            .and_then(|pinned| pinned.absent(name))
            .map_err(|e| root_error(e, false))?;
        Ok((dir, name.to_string()))
    }

    /// One repository's configuration, or all of them.
    pub(super) fn labels_or_one(
        &self,
        one: Option<&RepositoryLabel>,
    ) -> Result<Vec<Repository>, ApiError> {
        match one {
            Some(label) => Ok(vec![self.repository(label)?]),
            None => Ok(self
                .borgmatic
                .labels()
                .iter()
                .filter_map(|l| RepositoryLabel::parse(l).ok())
                .filter_map(|l| self.borgmatic.repository(&l))
                .collect()),
        }
    }

    /// Every configuration that loads, with its repository (a file that does not
    /// parse is skipped here; `config/list` reports it).
    pub(super) fn loaded_configs(&self) -> Vec<(Repository, BorgmaticConfig)> {
        self.labels_or_one(None)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|repo| BorgmaticConfig::load(&repo.config).ok().map(|c| (repo, c)))
            .collect()
    }
}

/// A confinement refusal as the client sees it.
fn root_error(e: RootError, existing: bool) -> ApiError {
    match e {
        RootError::MissingRoot(_) => ApiError::new(ErrorCode::Unavailable, e.to_string()),
        RootError::Escapes(_) | RootError::Exists(_) => ApiError::invalid(e.to_string()),
        RootError::Create { .. } if existing => ApiError::new(ErrorCode::NotFound, e.to_string()),
        RootError::Create { .. } => ApiError::invalid(e.to_string()),
    }
}

/// A configuration that does not load: `invalid`, naming why.
pub(super) fn load(repo: &Repository) -> Result<BorgmaticConfig, ApiError> {
    BorgmaticConfig::load(&repo.config).map_err(|e| ApiError::invalid(e.to_string()))
}

pub(super) fn no_repo(label: &RepositoryLabel) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no repository {label}: there is no {label}.yaml in the borgmatic config directory"
        ),
    )
}

/// `unavailable` when FUSE mounts cannot work here.
pub(super) fn fuse() -> Result<(), ApiError> {
    match roots::fuse_unavailable() {
        Some(reason) => Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("FUSE mounts are not possible here: {reason}"),
        )),
        None => Ok(()),
    }
}

pub(super) fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Ctx<'_> {
    /// A borgmatic job on one repository, with the request's or configured secrets.
    pub(super) fn borgmatic_job(
        &self,
        name: CommandName,
        label: RepositoryLabel,
        action: crate::exec::borgmatic::Action,
    ) -> Result<Outcome, ApiError> {
        let repo = self.repository(&label)?;
        let secrets = self.job_secrets(&label)?;
        let task = self.borgmatic.task(&repo, &secrets, action);
        self.repo_job(name, label, Box::new(task), self.secrets.values())
    }
}
