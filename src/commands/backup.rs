//! `backup/run` (borgmatic `create`), `backup/verify` (the restore drill),
//! `backup/restore-dumps` (borgmatic `restore` of database dumps), and what a
//! backup's result means (see [`CommandName::is_backup`]).
//!
//! May import: `domain`, `exec` (`borgmatic`, `verify`), `jobs` (lock keys).

use serde::Deserialize;

use super::context::{load, Ctx, Outcome, AIO_LOCK};
use super::fields::{on_repository, yes};
use super::response::ApiError;
use super::{CommandName, Fields};
use crate::domain::{quote, ArchiveName, DatabaseName, RepositoryLabel};
use crate::exec::borgmatic::Action;

/// `backup/run`: borgmatic `create`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub repository: RepositoryLabel,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default = "yes")]
    pub stats: bool,
    #[serde(default = "yes")]
    pub progress: bool,
}

on_repository!(Run);

/// `backup/verify`: the restore drill.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    pub repository: RepositoryLabel,
    /// Default: the newest archive.
    #[serde(default)]
    pub archive: Option<ArchiveName>,
    /// Files to sample (1 to 10,000; default 50).
    #[serde(default)]
    pub sample: Option<u32>,
    /// Most bytes to extract (default 1 GiB).
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

impl Fields for Verify {
    fn check(&self) -> Result<(), ApiError> {
        if self.sample.is_some_and(|n| !(1..=10_000).contains(&n)) {
            return Err(ApiError::invalid("sample must be 1 to 10000"));
        }
        if self.max_bytes == Some(0) {
            return Err(ApiError::invalid("max_bytes must be at least 1"));
        }
        Ok(())
    }
    fn repository(&self) -> Option<&RepositoryLabel> {
        Some(&self.repository)
    }
}

/// The lock key every `backup/restore-dumps` job holds.
const RESTORE_LOCK: &str = "restore-dumps";

/// `backup/restore-dumps`: borgmatic `restore` of database dumps from an archive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreDumps {
    pub repository: RepositoryLabel,
    pub archive: ArchiveName,
    /// Only these databases, each one a database hook of the repository's
    /// configuration names; every dump in the archive when empty.
    #[serde(default)]
    pub databases: Vec<DatabaseName>,
}

impl Fields for RestoreDumps {
    fn check(&self) -> Result<(), ApiError> {
        if self.databases.len() > 100 {
            return Err(ApiError::invalid("at most 100 databases"));
        }
        Ok(())
    }
    fn repository(&self) -> Option<&RepositoryLabel> {
        Some(&self.repository)
    }
}

pub(super) async fn restore_dumps(ctx: &Ctx<'_>, c: RestoreDumps) -> Result<Outcome, ApiError> {
    let repo = ctx.repository(&c.repository)?;
    let configured = load(&repo)?.database_names();
    if configured.is_empty() {
        return Err(ApiError::invalid(format!(
            "the configuration of {} names no database (sqlite_databases, postgresql_databases, …): there is nothing to restore",
            c.repository
        )));
    }
    if let Some(unknown) = c
        .databases
        .iter()
        .find(|d| !configured.iter().any(|n| n == d.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "database {} is not one the configuration of {} names ({})",
            quote(unknown.as_str()),
            c.repository,
            configured.join(", ")
        )));
    }
    let action = Action::RestoreDumps {
        archive: c.archive,
        databases: c.databases,
    };
    // One restore at a time: their runtime directories are found by the same glob.
    let secrets = ctx.job_secrets(&c.repository)?;
    let task = ctx.borgmatic.task(&repo, &secrets, action);
    let locks = vec![crate::jobs::repo_lock(&c.repository), RESTORE_LOCK.into()];
    let scrub = ctx.secrets.values();
    ctx.job(
        CommandName::BackupRestoreDumps,
        Some(c.repository),
        locks,
        Box::new(task),
        scrub,
    )
}

pub(super) async fn run(ctx: &Ctx<'_>, c: Run) -> Result<Outcome, ApiError> {
    let action = Action::Create {
        dry_run: c.dry_run,
        stats: c.stats,
        progress: c.progress,
    };
    if !ctx.is_aio_repository(c.repository.as_str()) {
        return ctx.borgmatic_job(CommandName::BackupRun, c.repository, action);
    }
    // A backup of an AIO repository excludes AIO's own backups, and they it.
    let repo = ctx.repository(&c.repository)?;
    ctx.refuse_if_aio_busy().await?;
    let secrets = ctx.job_secrets(&c.repository)?;
    let task = ctx.borgmatic.task(&repo, &secrets, action);
    let locks = vec![crate::jobs::repo_lock(&c.repository), AIO_LOCK.into()];
    let scrub = ctx.secrets.values();
    ctx.job(
        CommandName::BackupRun,
        Some(c.repository),
        locks,
        Box::new(task),
        scrub,
    )
}

pub(super) async fn verify(ctx: &Ctx<'_>, c: Verify) -> Result<Outcome, ApiError> {
    let repo = ctx.repository(&c.repository)?;
    let secrets = ctx.job_secrets(&c.repository)?;
    let spot = load(&repo)
        .ok()
        .and_then(|cfg| cfg.doc.get("checks").cloned())
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|checks| checks.iter().any(|c| c["name"] == "spot"));
    let task = crate::exec::verify::VerifyTask {
        borgmatic: ctx.borgmatic.clone(),
        repo,
        secrets,
        archive: c.archive,
        sample: c.sample.unwrap_or(50) as usize,
        max_bytes: c.max_bytes.unwrap_or(1 << 30),
        restore_root: ctx.settings.borgmatic.restore_root.clone(),
        spot,
    };
    let scrub = ctx.secrets.values();
    ctx.repo_job(
        CommandName::BackupVerify,
        c.repository,
        Box::new(task),
        scrub,
    )
}
