//! Repository keys: `key/change-passphrase` (admin).
//!
//! May import: `domain`, `exec::borgmatic`.

use serde::Deserialize;

use super::context::{Ctx, Outcome};
use super::fields::on_repository;
use super::response::ApiError;
use super::CommandName;
use crate::domain::{NewPassphrase, RepositoryLabel};
use crate::exec::borgmatic::Action;

/// `key/change-passphrase` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassphrase {
    pub repository: RepositoryLabel,
    pub new_passphrase: NewPassphrase,
}

on_repository!(ChangePassphrase);

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
