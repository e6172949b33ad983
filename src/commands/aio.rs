//! Nextcloud All-in-One: `aio/backup`, `aio/healthcheck`, `aio/start`, `aio/stop`,
//! and the AIO exclusion every AIO-touching job shares: AIO runs hold the `aio`
//! lock and every AIO repository's lock, and are refused while AIO backs up itself.
//!
//! May import: `domain`, `borg_config`, `exec` (`docker_exec`, the exec policy),
//! `jobs` (lock keys).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::context::{Ctx, Outcome, AIO_LOCK};
use super::docker::docker_error;
use super::fields::NoFields;
use super::response::{ApiError, ErrorCode};
use super::{CommandName, Fields};
use crate::exec::docker_exec::{ExecTask, Follow};
use crate::exec::policy::AIO_FLAGS;
use crate::jobs::repo_lock;

/// `aio/backup`: AIO's `daily-backup.sh`. `check: true` alone runs AIO's backup
/// check instead of a backup; asking for both is refused, as AIO refuses it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    #[serde(default)]
    pub backup: Option<bool>,
    #[serde(default)]
    pub check: bool,
    #[serde(default)]
    pub stop_containers: Option<bool>,
    #[serde(default)]
    pub start_containers: Option<bool>,
    #[serde(default)]
    pub automatic_updates: Option<bool>,
}

/// `aio/start`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    #[serde(default)]
    pub automatic_updates: bool,
}

impl Fields for Backup {
    fn check(&self) -> Result<(), ApiError> {
        let backup = self.backup.unwrap_or(!self.check);
        if backup && self.check {
            return Err(ApiError::invalid(
                "Nextcloud AIO refuses to back up and check in one run; send check: true alone for a check",
            ));
        }
        if !backup && !self.check {
            return Err(ApiError::invalid(
                "nothing to do: backup and check are both false",
            ));
        }
        if self.check && self.stop_containers == Some(true) {
            return Err(ApiError::invalid(
                "a backup check never stops the containers; leave stop_containers out",
            ));
        }
        Ok(())
    }
}
impl Fields for Start {}

/// All five `daily-backup.sh` flags, in [`AIO_FLAGS`] order.
pub(super) fn aio_env(
    daily: bool,
    check: bool,
    stop: bool,
    start: bool,
    update: bool,
) -> BTreeMap<String, String> {
    let flag = |v: bool| if v { "1" } else { "0" }.to_string();
    AIO_FLAGS
        .iter()
        .zip([daily, check, stop, start, update])
        .map(|(k, v)| (k.to_string(), flag(v)))
        .collect()
}

/// One run of an AIO script by an `aio/*` command.
struct AioRun {
    name: CommandName,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    follow: Option<Follow>,
    /// Excludes AIO backups and borgmatic jobs on AIO repositories.
    exclusive: bool,
}

impl AioRun {
    fn daily(name: CommandName, env: BTreeMap<String, String>, follow: Option<Follow>) -> Self {
        Self {
            name,
            argv: vec!["/daily-backup.sh".into()],
            env,
            follow,
            exclusive: true,
        }
    }
}

impl Ctx<'_> {
    pub(super) fn is_aio_repository(&self, label: &str) -> bool {
        self.settings.repositories.get(label).is_some_and(|r| r.aio)
    }

    /// The lock keys of anything that may start or disturb an AIO backup: the AIO
    /// lock (held by `aio/*` runs and `backup/run` on an AIO repository) and the
    /// lock of every AIO repository.
    pub(super) fn aio_locks(&self) -> Vec<String> {
        let mut locks = vec![AIO_LOCK.to_string()];
        for label in self.settings.aio_repositories() {
            if let Ok(l) = crate::domain::RepositoryLabel::parse(&label) {
                locks.push(repo_lock(&l));
            }
        }
        locks
    }

    /// Refuses (`busy`) while Nextcloud AIO runs a backup of its own: its borgbackup
    /// container runs, or an AIO repository holds `aio-lockfile` or a borg lock.
    pub(super) async fn refuse_if_aio_busy(&self) -> Result<(), ApiError> {
        let borgbackup = self.settings.docker.borgbackup_container();
        // No engine: AIO cannot be backing up through it; the repository lock
        // check below still applies.
        if let Ok(true) = self.docker.is_running(&borgbackup).await {
            return Err(ApiError::new(
                ErrorCode::Busy,
                format!("Nextcloud AIO is running a backup ({borgbackup} is running)"),
            )
            .with_data(json!({ "job_id": null, "container": borgbackup })));
        }
        for (repo, cfg) in self.loaded_configs() {
            let label = repo.label.to_string();
            if !self.is_aio_repository(&label) {
                continue;
            }
            for entry in cfg.repositories() {
                if let crate::borg_config::Location::Local(path) = &entry.location {
                    for marker in ["aio-lockfile", "lock.roster"] {
                        if path.join(marker).exists() {
                            return Err(ApiError::new(
                                ErrorCode::Busy,
                                format!("repository {label} is in use ({marker} present)"),
                            )
                            .with_data(json!({ "job_id": null, "repository": label })));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs an AIO script in the mastercontainer, through the same exec policy
    /// (and the same role rule) as `container/exec`.
    async fn aio_script(&self, run: AioRun) -> Result<Outcome, ApiError> {
        self.docker_enabled()?;
        let master = self.settings.docker.mastercontainer();
        self.allow_exec(run.name, &master, &run.argv, &run.env)?;
        self.docker.ping().await.map_err(docker_error)?;
        let mut locks = vec![format!("container:{master}")];
        if run.exclusive {
            self.refuse_if_aio_busy().await?;
            locks.extend(self.aio_locks());
        }
        let task = ExecTask {
            engine: self.docker.clone(),
            target: master.clone(),
            container: master,
            argv: run.argv,
            env: run.env.into_iter().collect(),
            follow: run.follow,
        };
        self.job(run.name, None, locks, Box::new(task), vec![])
    }
}

pub(super) async fn backup(ctx: &Ctx<'_>, b: Backup) -> Result<Outcome, ApiError> {
    let backup = b.backup.unwrap_or(!b.check);
    // Every flag is set: an unset one would be inherited from the
    // mastercontainer. After a backup the containers start again unless asked
    // not to (which leaves Nextcloud stopped: the admin role's aio/stop).
    let env = aio_env(
        backup,
        b.check,
        b.stop_containers.unwrap_or(false),
        b.start_containers.unwrap_or(backup),
        b.automatic_updates.unwrap_or(false),
    );
    let follow = Follow {
        container: ctx.settings.docker.borgbackup_container(),
        start_grace: Duration::from_secs(ctx.settings.docker.borgbackup_start_grace_secs),
    };
    ctx.aio_script(AioRun::daily(CommandName::AioBackup, env, Some(follow)))
        .await
}

pub(super) async fn healthcheck(ctx: &Ctx<'_>, _: NoFields) -> Result<Outcome, ApiError> {
    ctx.aio_script(AioRun {
        name: CommandName::AioHealthcheck,
        argv: vec!["/healthcheck.sh".into()],
        env: BTreeMap::new(),
        follow: None,
        exclusive: false,
    })
    .await
}

pub(super) async fn start(ctx: &Ctx<'_>, s: Start) -> Result<Outcome, ApiError> {
    let env = aio_env(false, false, false, true, s.automatic_updates);
    ctx.aio_script(AioRun::daily(CommandName::AioStart, env, None))
        .await
}

pub(super) async fn stop(ctx: &Ctx<'_>, _: NoFields) -> Result<Outcome, ApiError> {
    let env = aio_env(false, false, true, false, false);
    ctx.aio_script(AioRun::daily(CommandName::AioStop, env, None))
        .await
}
