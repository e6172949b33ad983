//! Repositories: `repo/info`, `repo/check`, `repo/prune`, `repo/compact`,
//! `repo/break-lock`, `repo/latest-stats`, `repo/lock-status`.
//!
//! May import: `domain`, `borg_config`, `locks`, `exec::borgmatic`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::context::{load, Ctx, Outcome};
use super::fields::on_repository;
use super::response::ApiError;
use super::{CommandName, Fields};
use crate::domain::{RepositoryLabel, Role};
use crate::exec::borgmatic::Action;

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
