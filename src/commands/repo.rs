//! Repositories: `repo/info`, `repo/check`, `repo/prune`, `repo/compact`,
//! `repo/break-lock`, `repo/latest-stats`, `repo/lock-status`, `repo/create`.
//!
//! May import: `domain`, `borg_config`, `locks`, `exec::borgmatic`, `jobs` (the
//! `Task` interface).

use serde::Deserialize;
use serde_json::{json, Value};

use super::context::{load, Ctx, Outcome};
use super::fields::on_repository;
use super::response::{ApiError, ErrorCode};
use super::{CommandName, Fields, Schema};
use crate::borg_config::Location;
use crate::domain::{EncryptionMode, RepositoryLabel, Role};
use crate::exec::borgmatic::Action;

mod create;

/// Commands on one repository with no other field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoOnly {
    pub repository: RepositoryLabel,
}

/// `repo/check`; `repair` needs the admin role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub repository: RepositoryLabel,
    #[serde(default)]
    pub repair: bool,
}

impl Fields for Check {
    fn repository(&self) -> Option<&RepositoryLabel> {
        Some(&self.repository)
    }
    fn role(&self, base: Role) -> Role {
        if self.repair {
            Role::Admin
        } else {
            base
        }
    }
}

/// `repo/prune` and `repo/compact`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRun {
    pub repository: RepositoryLabel,
    #[serde(default)]
    pub dry_run: bool,
}

/// Commands on one repository or, when absent, all of them (none held).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionalRepo {
    #[serde(default)]
    pub repository: Option<RepositoryLabel>,
}

impl Fields for OptionalRepo {}

/// `repo/create` (admin): a new repository where the label's configuration points.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    pub repository: RepositoryLabel,
    /// borg's encryption mode; when absent, the configuration's `encryption`.
    #[serde(default)]
    pub encryption: Option<EncryptionMode>,
}

impl Fields for Create {
    fn repository(&self) -> Option<&RepositoryLabel> {
        Some(&self.repository)
    }
    fn schema() -> Schema {
        let modes: Vec<&str> = EncryptionMode::ALL.iter().map(|m| m.as_str()).collect();
        Schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["repository"],
            "properties": {
                "repository": { "type": "string", "pattern": RepositoryLabel::PATTERN },
                "encryption": { "type": "string", "enum": modes, "description": "default: the repository's encryption in its borgmatic configuration" }
            }
        }))
    }
}

on_repository!(RepoOnly, DryRun);

pub(super) async fn info(ctx: &Ctx<'_>, c: RepoOnly) -> Result<Outcome, ApiError> {
    ctx.borgmatic_job(CommandName::RepoInfo, c.repository, Action::RepoInfo)
}

pub(super) async fn check(ctx: &Ctx<'_>, c: Check) -> Result<Outcome, ApiError> {
    let action = Action::Check { repair: c.repair };
    ctx.borgmatic_job(CommandName::RepoCheck, c.repository, action)
}

pub(super) async fn prune(ctx: &Ctx<'_>, c: DryRun) -> Result<Outcome, ApiError> {
    let action = Action::Prune { dry_run: c.dry_run };
    ctx.borgmatic_job(CommandName::RepoPrune, c.repository, action)
}

pub(super) async fn compact(ctx: &Ctx<'_>, c: DryRun) -> Result<Outcome, ApiError> {
    let action = Action::Compact { dry_run: c.dry_run };
    ctx.borgmatic_job(CommandName::RepoCompact, c.repository, action)
}

pub(super) async fn break_lock(ctx: &Ctx<'_>, c: RepoOnly) -> Result<Outcome, ApiError> {
    ctx.borgmatic_job(CommandName::RepoBreakLock, c.repository, Action::BreakLock)
}

pub(super) async fn latest_stats(ctx: &Ctx<'_>, c: RepoOnly) -> Result<Outcome, ApiError> {
    ctx.borgmatic_job(
        CommandName::RepoLatestStats,
        c.repository,
        Action::LatestStats,
    )
}

/// Who holds each repository's borg lock, read from the repository directory.
pub(super) async fn lock_status(ctx: &Ctx<'_>, c: OptionalRepo) -> Result<Outcome, ApiError> {
    let mut out: Vec<Value> = Vec::new();
    for repo in ctx.labels_or_one(c.repository.as_ref())? {
        let cfg = load(&repo)?;
        for entry in cfg.repositories() {
            let status = crate::locks::status(&entry);
            out.push(json!({
                "repository": repo.label.as_str(),
                "location": crate::borg_config::parse_location(&entry.path).display(),
                "lock": status,
            }));
        }
    }
    Ok(Outcome::Answer(json!({ "repositories": out })))
}

/// Creates the repository: refused `conflict` when a local repository is already
/// there; a remote one is probed by the job (`repo-info`) before anything is made.
pub(super) async fn create(ctx: &Ctx<'_>, c: Create) -> Result<Outcome, ApiError> {
    let repo = ctx.repository(&c.repository)?;
    let cfg = load(&repo)?;
    let entries = cfg.repositories();
    if entries.is_empty() {
        return Err(ApiError::invalid(format!(
            "the configuration of {} names no repository",
            c.repository
        )));
    }
    if c.encryption.is_none() {
        for e in &entries {
            match e.encryption.as_deref().map(|m| (m, EncryptionMode::parse(m))) {
                Some((_, Some(_))) => {}
                Some((m, None)) => {
                    return Err(ApiError::invalid(format!(
                        "the configuration of {} sets encryption {}, which is not a borg 1.2 mode; give encryption",
                        c.repository,
                        crate::domain::quote(m)
                    )))
                }
                None => {
                    return Err(ApiError::invalid(format!(
                        "encryption is required: the configuration of {} sets none for {} (repokey, repokey-blake2, keyfile, keyfile-blake2, authenticated, authenticated-blake2, none)",
                        c.repository,
                        e.location.display()
                    )))
                }
            }
        }
    }
    let mut local = Vec::new();
    let mut remote = false;
    for e in &entries {
        match &e.location {
            Location::Local(p) if p.is_absolute() => local.push(p.clone()),
            _ => remote = true,
        }
    }
    if let Some(p) = create::existing(&local) {
        return Err(exists(&c.repository, &p.display().to_string()));
    }
    let secrets = ctx.job_secrets(&c.repository)?;
    let probe = remote.then(|| ctx.borgmatic.task(&repo, &secrets, Action::RepoInfo));
    let make = ctx.borgmatic.task(
        &repo,
        &secrets,
        Action::RepoCreate {
            encryption: c.encryption,
        },
    );
    let task = create::CreateTask {
        local,
        probe,
        create: make,
    };
    let scrub = ctx.secrets.values();
    ctx.repo_job(CommandName::RepoCreate, c.repository, Box::new(task), scrub)
}

/// `conflict`: the repository already exists (nothing was changed).
fn exists(label: &RepositoryLabel, location: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!("repository {label} already exists at {location}; repo/create only makes a new one, nothing was changed"),
    )
}
