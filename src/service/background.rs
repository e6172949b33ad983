//! The worker's own work on a repository, built like a client's and submitted as
//! background work (never listed, published, stored or counted; it yields to a
//! client's job): the archive listings of health probes and of start-up
//! reconciliation.

use tokio::sync::oneshot;

use super::Service;
use crate::command::{CommandName, RepositoryLabel};
use crate::exec::borgmatic::{Action, JobSecrets};
use crate::jobs::{repo_lock, JobResult, JobSpec, SubmitError};

/// Why a background listing did not start.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    /// The label names no configured repository.
    #[error("no such repository")]
    NoRepository,
    /// The engine refused it (the repository is busy, the worker is stopping).
    #[error(transparent)]
    Refused(#[from] SubmitError),
}

impl Service {
    /// Lists the newest `last` archives of `label` with the configured secrets; the
    /// result arrives on the receiver.
    pub fn list_archives_in_background(
        &self,
        label: &RepositoryLabel,
        last: u32,
    ) -> Result<oneshot::Receiver<JobResult>, BackgroundError> {
        let repo = self
            .borgmatic
            .repository(label)
            .ok_or(BackgroundError::NoRepository)?;
        let secrets = JobSecrets {
            borg: self.settings.passphrase_for(label.as_str()).cloned(),
            ssh: self.settings.ssh_passphrase_for(label.as_str()).cloned(),
        };
        let list = CommandName::ArchiveList;
        let task = self
            .borgmatic
            .task(&repo, &secrets, Action::RepoList { last: Some(last) });
        let spec = JobSpec {
            command: list.as_str(),
            role: list.role(),
            locks: vec![repo_lock(label)],
            repository: Some(label.clone()),
            request_id: None,
            timeout: self.settings.jobs.timeout_for(list.as_str()),
            task: Box::new(task),
            secrets: Vec::new(),
            // Never takes a client's running place (it yields to clients anyway).
            bypass_limit: true,
            background: true,
        };
        Ok(self.engine.submit_background(spec)?)
    }
}
