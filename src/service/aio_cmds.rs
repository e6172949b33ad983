//! The Docker and Nextcloud AIO commands of the service.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::{no_repo, Service, AIO_LOCK};
use crate::command::{
    AioBackup, ApiError, ArchiveList, Command, CommandName, ErrorCode, RequestId, Response,
};
use crate::docker::DockerError;
use crate::exec::docker_exec::{ExecTask, Follow};
use crate::jobs::repo_lock;

/// Where AIO keeps the list of its archives inside the mastercontainer.
const AIO_ARCHIVES_LIST: &str = "/mnt/docker-aio-config/data/backup_archives.list";

fn docker_error(e: DockerError) -> ApiError {
    match e {
        DockerError::Unavailable(_) => ApiError::new(ErrorCode::Unavailable, e.to_string()),
        DockerError::NoContainer(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
        DockerError::Other(_) => ApiError::new(ErrorCode::Internal, e.to_string()),
    }
}

fn flag(v: bool) -> String {
    if v { "1" } else { "0" }.to_string()
}

impl Service {
    pub(super) fn is_aio_repository(&self, label: &str) -> bool {
        self.settings.repositories.get(label).is_some_and(|r| r.aio)
    }

    /// Refuses (`busy`) while Nextcloud AIO runs a backup of its own: its borgbackup
    /// container runs, or an AIO repository holds `aio-lockfile` or a borg lock.
    pub(super) async fn refuse_if_aio_busy(&self) -> Result<(), ApiError> {
        let borgbackup = self.settings.docker.borgbackup_container();
        match self.docker.is_running(&borgbackup).await {
            Ok(true) => {
                return Err(ApiError::new(
                    ErrorCode::Busy,
                    format!("Nextcloud AIO is running a backup ({borgbackup} is running)"),
                )
                .with_data(json!({ "job_id": null, "container": borgbackup })))
            }
            Ok(false) => {}
            // No engine: AIO cannot be backing up through it; the repository lock
            // check below still applies.
            Err(_) => {}
        }
        for label in self.settings.aio_repositories() {
            let Ok(l) = crate::command::RepositoryLabel::parse(&label) else {
                continue;
            };
            let Some(repo) = self.borgmatic.repository(&l) else {
                continue;
            };
            let Ok(cfg) = crate::borg_config::BorgmaticConfig::load(&repo.config) else {
                continue;
            };
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

    pub(super) async fn execute_docker(
        &self,
        cmd: Command,
        rid: Option<RequestId>,
    ) -> Result<Response, ApiError> {
        let name = cmd.name();
        if !self.settings.docker.enabled && name != CommandName::SecurityExecPolicy {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "Docker commands are disabled (docker.enabled = false)",
            ));
        }
        let master = self.settings.docker.mastercontainer();
        match cmd {
            Command::SecurityExecPolicy(_) => {
                let data = json!({
                    "allow": self.policy.allow,
                    "deny": "shells (sh, bash, ash, dash, zsh, fish, ksh, mksh, csh, tcsh, and busybox/toybox running one), \
                             python/perl/ruby/node/php with inline code (-c/-e/-r), rm, rmdir, dd, nc, netcat, ncat, curl, wget, \
                             chmod, chown, useradd, passwd, iptables, ip, mount, umount, kill, killall, pkill",
                    "source": self.settings.docker.exec_policy_file.as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "built-in default".into()),
                });
                Ok(Response::ok(rid, None, data))
            }
            Command::ContainerList(_) => {
                let list = self
                    .docker
                    .containers(&self.settings.docker.aio_prefix)
                    .await
                    .map_err(docker_error)?;
                Ok(Response::ok(rid, None, json!({ "containers": list })))
            }
            Command::VolumeList(v) => {
                let list = self
                    .docker
                    .volumes(&self.settings.docker.volume_prefix(), v.sizes)
                    .await
                    .map_err(docker_error)?;
                Ok(Response::ok(rid, None, json!({ "volumes": list })))
            }
            Command::ContainerExec(c) => {
                self.policy
                    .check(c.container.as_str(), c.command.as_slice(), &c.env)
                    .map_err(|e| ApiError::new(ErrorCode::Forbidden, e.to_string()))?;
                self.docker.ping().await.map_err(docker_error)?;
                let mut locks = vec![format!("container:{}", c.container.as_str())];
                if c.container.as_str() == master {
                    locks.push(AIO_LOCK.into());
                }
                let task = ExecTask {
                    engine: self.docker.clone(),
                    container: c.container.as_str().to_string(),
                    argv: c.command.as_slice().to_vec(),
                    env: c.env.into_iter().collect(),
                    follow: None,
                };
                self.submit_locked(name, None, locks, rid, Box::new(task), vec![])
            }
            Command::AioBackup(b) => self.aio_backup(b, rid).await,
            Command::AioHealthcheck(_) => {
                self.aio_script(
                    name,
                    vec!["/healthcheck.sh".into()],
                    BTreeMap::new(),
                    None,
                    false,
                    rid,
                )
                .await
            }
            Command::AioStart(s) => {
                let env = BTreeMap::from([
                    ("DAILY_BACKUP".to_string(), flag(false)),
                    ("START_CONTAINERS".to_string(), flag(true)),
                    ("AUTOMATIC_UPDATES".to_string(), flag(s.automatic_updates)),
                ]);
                self.aio_script(name, vec!["/daily-backup.sh".into()], env, None, true, rid)
                    .await
            }
            Command::AioStop(_) => {
                let env = BTreeMap::from([
                    ("DAILY_BACKUP".to_string(), flag(false)),
                    ("STOP_CONTAINERS".to_string(), flag(true)),
                ]);
                self.aio_script(name, vec!["/daily-backup.sh".into()], env, None, true, rid)
                    .await
            }
            _ => Err(ApiError::new(ErrorCode::Internal, "not a Docker command")),
        }
    }

    async fn aio_backup(&self, b: AioBackup, rid: Option<RequestId>) -> Result<Response, ApiError> {
        let backup = b.backup.unwrap_or(!b.check);
        if backup && b.check {
            return Err(ApiError::invalid(
                "Nextcloud AIO refuses to back up and check in one run; send check: true alone for a check",
            ));
        }
        if !backup && !b.check {
            return Err(ApiError::invalid(
                "nothing to do: backup and check are both false",
            ));
        }
        self.refuse_if_aio_busy().await?;
        let mut env = BTreeMap::from([
            ("DAILY_BACKUP".to_string(), flag(backup)),
            ("CHECK_BACKUP".to_string(), flag(b.check)),
        ]);
        for (key, v) in [
            ("STOP_CONTAINERS", b.stop_containers),
            ("START_CONTAINERS", b.start_containers),
            ("AUTOMATIC_UPDATES", b.automatic_updates),
        ] {
            if let Some(v) = v {
                env.insert(key.to_string(), flag(v));
            }
        }
        let follow = Follow {
            container: self.settings.docker.borgbackup_container(),
            start_grace: Duration::from_secs(self.settings.docker.borgbackup_start_grace_secs),
        };
        self.aio_script(
            CommandName::AioBackup,
            vec!["/daily-backup.sh".into()],
            env,
            Some(follow),
            true,
            rid,
        )
        .await
    }

    /// Runs an AIO script in the mastercontainer, through the same exec policy as
    /// `container/exec`.
    async fn aio_script(
        &self,
        name: CommandName,
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        follow: Option<Follow>,
        exclusive: bool,
        rid: Option<RequestId>,
    ) -> Result<Response, ApiError> {
        let master = self.settings.docker.mastercontainer();
        self.policy
            .check(&master, &argv, &env)
            .map_err(|e| ApiError::new(ErrorCode::Forbidden, e.to_string()))?;
        self.docker.ping().await.map_err(docker_error)?;
        let mut locks = vec![format!("container:{master}")];
        if exclusive {
            locks.push(AIO_LOCK.into());
            if follow.is_some() {
                for label in self.settings.aio_repositories() {
                    if let Ok(l) = crate::command::RepositoryLabel::parse(&label) {
                        locks.push(repo_lock(&l));
                    }
                }
            }
        }
        let task = ExecTask {
            engine: self.docker.clone(),
            container: master,
            argv,
            env: env.into_iter().collect(),
            follow,
        };
        self.submit_locked(name, None, locks, rid, Box::new(task), vec![])
    }

    /// `archive/list` with `source: aio`: AIO's own list, read from the
    /// mastercontainer without touching the repository (or its lock).
    pub(super) async fn aio_archive_list(
        &self,
        c: ArchiveList,
        rid: Option<RequestId>,
    ) -> Result<Response, ApiError> {
        if self.borgmatic.repository(&c.repository).is_none() {
            return Err(no_repo(&c.repository));
        }
        let master = self.settings.docker.mastercontainer();
        let text = self
            .docker
            .read_file(&master, AIO_ARCHIVES_LIST)
            .await
            .map_err(docker_error)?;
        let mut archives: Vec<Value> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, rest) = l.split_once(',').unwrap_or((l, ""));
                json!({ "name": name.trim(), "time": (!rest.trim().is_empty()).then(|| rest.trim()) })
            })
            .collect();
        if let Some(n) = c.last {
            let skip = archives.len().saturating_sub(n as usize);
            archives.drain(..skip);
        }
        Ok(Response::ok(
            rid,
            None,
            json!({ "archives": archives, "source": "aio", "file": AIO_ARCHIVES_LIST }),
        ))
    }
}
