//! Repository keys: `key/change-passphrase` and `key/export` (admin).
//!
//! May import: `domain`, `config`, `borg_config`, `exec::borgmatic`, `jobs` (the
//! `Task` interface).

use serde::Deserialize;

use super::context::{load, Ctx, Outcome};
use super::fields::on_repository;
use super::response::{ApiError, ErrorCode};
use super::CommandName;
use crate::domain::{NewPassphrase, RepositoryLabel};
use crate::exec::borgmatic::Action;

mod export;

/// `key/change-passphrase` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassphrase {
    pub repository: RepositoryLabel,
    pub new_passphrase: NewPassphrase,
}

pub(super) async fn change_passphrase(
    ctx: &Ctx<'_>,
    c: ChangePassphrase,
) -> Result<Outcome, ApiError> {
    let new = c.new_passphrase.secret().clone();
    let ssh = ctx.secrets.ssh.clone().or_else(|| {
        ctx.settings
            .ssh_passphrase_for(c.repository.as_str())
            .cloned()
    });
    if ssh.as_ref() == Some(&new) {
        return Err(ApiError::invalid(
            "new_passphrase equals the SSH key passphrase; use distinct secrets",
        ));
    }
    let repo = ctx.repository(&c.repository)?;
    let secrets = ctx.job_secrets(&c.repository)?;
    let mut scrub = ctx.secrets.values();
    scrub.push(new.expose().to_string());
    let task = ctx
        .borgmatic
        .task(&repo, &secrets, Action::ChangePassphrase { new });
    ctx.repo_job(
        CommandName::KeyChangePassphrase,
        c.repository,
        Box::new(task),
        scrub,
    )
}

/// `key/export` (admin): the key to a file the worker names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    pub repository: RepositoryLabel,
    /// The text form for printing (`.txt`) rather than borg's key file (`.key`).
    #[serde(default)]
    pub paper: bool,
}

on_repository!(ChangePassphrase, Export);

/// Exports the key into `<key_export_dir>/<label>-<UTC time>.key` (or `.txt`):
/// the name is the worker's, the key goes to the file only, and the answer says
/// where it is.
pub(super) async fn export(ctx: &Ctx<'_>, c: Export) -> Result<Outcome, ApiError> {
    let repo = ctx.repository(&c.repository)?;
    let entries = load(&repo)?.repositories().len();
    if entries != 1 {
        return Err(ApiError::invalid(format!(
            "key/export needs exactly one repository in the configuration of {}; it names {entries}",
            c.repository
        )));
    }
    let dir = ctx.settings.key_export_dir();
    if !dir.is_absolute() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "borgmatic.key_export_dir must be an absolute path",
        ));
    }
    export::prepare_dir(&dir).map_err(|e| {
        tracing::error!(error = %e, dir = %dir.display(), "key/export: the key directory cannot be prepared");
        ApiError::new(
            ErrorCode::Unavailable,
            "the key export directory cannot be prepared (the worker's log says why)",
        )
    })?;
    let path = export::file_path(&dir, &c.repository, c.paper, chrono::Utc::now());
    if !path.is_absolute() || path.exists() {
        tracing::error!(path = %path.display(), "key/export: the key file path is not absolute or already exists");
        return Err(ApiError::new(
            ErrorCode::Internal,
            "no new key file could be named (the worker's log says why)",
        ));
    }
    let secrets = ctx.job_secrets(&c.repository)?;
    let action = Action::KeyExport {
        path: path.clone(),
        paper: c.paper,
    };
    let task = export::ExportTask {
        export: ctx.borgmatic.task(&repo, &secrets, action),
        path,
    };
    let scrub = ctx.secrets.values();
    ctx.repo_job(CommandName::KeyExport, c.repository, Box::new(task), scrub)
}
