//! Home Assistant buttons: a press on `<base>/ha/<repository>/<action>` is one of
//! the ordinary commands, built here as its typed [`Command`] (no JSON round trip),
//! so it meets the same role check, rate limit, audit and handler as any request.

use super::{backup, jobs, repo, Command, CommandName};
use crate::domain::{JobId, RepositoryLabel};

/// The buttons a repository device has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    /// `backup/run`.
    Run,
    /// `backup/verify` of the newest archive.
    Verify,
    /// `repo/check` (no repair: that needs the admin role).
    Check,
    /// `repo/prune` (not a dry run).
    Prune,
    /// `job/cancel` of the job that holds the repository.
    Cancel,
}

impl Press {
    /// The action of the button topic; `None` for a topic no button publishes to.
    pub fn parse(action: &str) -> Option<Press> {
        Some(match action {
            "run" => Press::Run,
            "verify" => Press::Verify,
            "check" => Press::Check,
            "prune" => Press::Prune,
            "cancel" => Press::Cancel,
            _ => return None,
        })
    }

    /// The action as in the topic and the `press_refused` event.
    pub fn as_str(self) -> &'static str {
        match self {
            Press::Run => "run",
            Press::Verify => "verify",
            Press::Check => "check",
            Press::Prune => "prune",
            Press::Cancel => "cancel",
        }
    }

    /// The command a press stands for (its audit record and metrics name it).
    pub fn name(self) -> CommandName {
        match self {
            Press::Run => CommandName::BackupRun,
            Press::Verify => CommandName::BackupVerify,
            Press::Check => CommandName::RepoCheck,
            Press::Prune => CommandName::RepoPrune,
            Press::Cancel => CommandName::JobCancel,
        }
    }

    /// The command this press makes on `repository`. `active` is the job that holds
    /// the repository now, which only `cancel` needs; without one it is refused
    /// with the reason the user is told.
    pub fn command(
        self,
        repository: RepositoryLabel,
        active: Option<JobId>,
    ) -> Result<Command, String> {
        Ok(match self {
            Press::Run => Command::BackupRun(backup::Run {
                repository,
                dry_run: false,
                stats: true,
                progress: true,
            }),
            Press::Verify => Command::BackupVerify(backup::Verify {
                repository,
                archive: None,
                sample: None,
                max_bytes: None,
            }),
            Press::Check => Command::RepoCheck(repo::Check {
                repository,
                repair: false,
            }),
            Press::Prune => Command::RepoPrune(repo::DryRun {
                repository,
                dry_run: false,
            }),
            Press::Cancel => match active {
                Some(job_id) => Command::JobCancel(jobs::JobRef { job_id }),
                None => return Err(format!("no job runs on {repository}")),
            },
        })
    }
}
