//! The Docker and Nextcloud AIO commands of the service.
//!
//! Every exec, `container/exec` or an `aio/*` command's script, goes through the
//! exec policy with the caller's role; an exec in an AIO container excludes AIO
//! backups and borgmatic jobs on AIO repositories exactly as `aio/backup` does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use bollard::query_parameters::InspectContainerOptions;

use super::{no_repo, Service, AIO_LOCK};
use crate::auth::Role;
use crate::command::{
    AioBackup, ApiError, ArchiveList, Command, CommandName, ContainerExec, ErrorCode, RequestId,
    Response,
};
use crate::docker::DockerError;
use crate::exec::deny;
use crate::exec::docker_exec::{ExecTask, Follow};
use crate::exec::policy::{PolicyError, Rule, AIO_FLAGS};
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

/// All five `daily-backup.sh` flags, in [`AIO_FLAGS`] order.
pub(super) fn aio_env(
    daily: bool,
    check: bool,
    stop: bool,
    start: bool,
    update: bool,
) -> BTreeMap<String, String> {
    AIO_FLAGS
        .iter()
        .zip([daily, check, stop, start, update])
        .map(|(k, v)| (k.to_string(), flag(v)))
        .collect()
}

/// The role a command needs for an exec the policy allows by `rule`:
/// `container/exec` itself needs write, whatever the rule says.
fn exec_role(what: &str, rule: &Rule) -> Role {
    if what == CommandName::ContainerExec.as_str() {
        rule.role.max(Role::Write)
    } else {
        rule.role
    }
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
        role: Role,
    ) -> Result<Response, ApiError> {
        let name = cmd.name();
        if !self.settings.docker.enabled && name != CommandName::SecurityExecPolicy {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "Docker commands are disabled (docker.enabled = false)",
            ));
        }
        match cmd {
            Command::SecurityExecPolicy(q) => {
                let data = match q.check {
                    None => self.policy_listing(),
                    Some(c) => self.exec_dry_run(&c, role),
                };
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
            Command::ContainerExec(c) => self.container_exec(c, rid, role).await,
            Command::AioBackup(b) => self.aio_backup(b, rid, role).await,
            Command::AioHealthcheck(_) => {
                let run = AioRun {
                    name,
                    argv: vec!["/healthcheck.sh".into()],
                    env: BTreeMap::new(),
                    follow: None,
                    exclusive: false,
                };
                self.aio_script(run, rid, role).await
            }
            Command::AioStart(s) => {
                let env = aio_env(false, false, false, true, s.automatic_updates);
                self.aio_script(AioRun::daily(name, env, None), rid, role)
                    .await
            }
            Command::AioStop(_) => {
                let env = aio_env(false, false, true, false, false);
                self.aio_script(AioRun::daily(name, env, None), rid, role)
                    .await
            }
            _ => Err(ApiError::new(ErrorCode::Internal, "not a Docker command")),
        }
    }

    /// Whether a container belongs to Nextcloud AIO (its name has the AIO prefix).
    fn is_aio_container(&self, name: &str) -> bool {
        name.starts_with(&self.settings.docker.aio_prefix)
    }

    /// The lock keys of anything that may start or disturb an AIO backup: the AIO
    /// lock (held by `aio/*` runs and `backup/run` on an AIO repository) and the
    /// lock of every AIO repository.
    fn aio_locks(&self) -> Vec<String> {
        let mut locks = vec![AIO_LOCK.to_string()];
        for label in self.settings.aio_repositories() {
            if let Ok(l) = crate::command::RepositoryLabel::parse(&label) {
                locks.push(repo_lock(&l));
            }
        }
        locks
    }

    /// The policy's verdict on one exec with the caller's role: the rule, or a
    /// `forbidden` answer naming the rule and the role it needs.
    fn allow_exec<'a>(
        &'a self,
        what: &str,
        container: &str,
        argv: &[String],
        env: &BTreeMap<String, String>,
        role: Role,
    ) -> Result<&'a Rule, ApiError> {
        let rule = self
            .policy
            .decide(container, argv, env)
            .map_err(|e| ApiError::new(ErrorCode::Forbidden, e.to_string()))?;
        let need = exec_role(what, rule);
        if role < need {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "{what} of this command needs the {} role (exec policy rule {}); this token has the {} role",
                    need.as_str(),
                    rule.name,
                    role.as_str()
                ),
            )
            .with_data(json!({ "rule": rule.name, "role": need })));
        }
        Ok(rule)
    }

    async fn container_exec(
        &self,
        c: ContainerExec,
        rid: Option<RequestId>,
        role: Role,
    ) -> Result<Response, ApiError> {
        let container = c.container.as_str().to_string();
        self.allow_exec(
            "container/exec",
            &container,
            c.command.as_slice(),
            &c.env,
            role,
        )?;
        self.docker.ping().await.map_err(docker_error)?;
        let id = self.resolve_container(&container).await?;
        let mut locks = vec![format!("container:{container}")];
        if self.is_aio_container(&container) {
            // What aio/backup waits for, an exec in an AIO container waits for too.
            self.refuse_if_aio_busy().await?;
            locks.extend(self.aio_locks());
        }
        let task = ExecTask {
            engine: self.docker.clone(),
            container,
            target: id,
            argv: c.command.as_slice().to_vec(),
            env: c.env.into_iter().collect(),
            follow: None,
        };
        self.submit_locked(
            CommandName::ContainerExec,
            None,
            locks,
            rid,
            Box::new(task),
            vec![],
        )
    }

    /// The id of the container *named* `name`. Docker also accepts an id, an id
    /// prefix or an old name where a name goes; the policy matches names only, so
    /// anything but the container's own name is refused, and the exec then targets
    /// the id (a rename after this check cannot redirect it).
    async fn resolve_container(&self, name: &str) -> Result<String, ApiError> {
        let docker = self.docker.client().await.map_err(docker_error)?;
        let info = docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| docker_error(DockerError::from(e)))?;
        let canonical = info.name.as_deref().map(|n| n.trim_start_matches('/'));
        match (canonical, info.id) {
            (Some(n), Some(id)) if n == name => Ok(id),
            _ => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("{name} is not the name of a container (an id, a prefix of one or another spelling): exec policy rules match container names only"),
            )),
        }
    }

    async fn aio_backup(
        &self,
        b: AioBackup,
        rid: Option<RequestId>,
        role: Role,
    ) -> Result<Response, ApiError> {
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
        if b.check && b.stop_containers == Some(true) {
            return Err(ApiError::invalid(
                "a backup check never stops the containers; leave stop_containers out",
            ));
        }
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
            container: self.settings.docker.borgbackup_container(),
            start_grace: Duration::from_secs(self.settings.docker.borgbackup_start_grace_secs),
        };
        self.aio_script(
            AioRun::daily(CommandName::AioBackup, env, Some(follow)),
            rid,
            role,
        )
        .await
    }

    /// Runs an AIO script in the mastercontainer, through the same exec policy
    /// (and the same role rule) as `container/exec`.
    async fn aio_script(
        &self,
        run: AioRun,
        rid: Option<RequestId>,
        role: Role,
    ) -> Result<Response, ApiError> {
        let master = self.settings.docker.mastercontainer();
        self.allow_exec(run.name.as_str(), &master, &run.argv, &run.env, role)?;
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
        self.submit_locked(run.name, None, locks, rid, Box::new(task), vec![])
    }

    /// `security/exec-policy` without `check`: every rule and the deny-list.
    fn policy_listing(&self) -> Value {
        let rules: Vec<Value> = self
            .policy
            .rules()
            .iter()
            .map(|r| {
                let mut v = json!(r);
                if let Some(hit) = deny::check(&r.argv) {
                    v["never_matches"] = json!({ "deny": hit, "reason": hit.to_string() });
                }
                v
            })
            .collect();
        json!({
            "allow": rules,
            "deny": deny::listing(),
            "source": match self.policy.file() {
                Some(_) => "built-in rules and docker.exec_policy_file",
                None => "built-in rules",
            },
            "file": self.policy.file().map(|p| p.display().to_string()),
        })
    }

    /// `security/exec-policy` with `check`: what `container/exec` would decide,
    /// without running anything or asking the engine.
    fn exec_dry_run(&self, c: &ContainerExec, role: Role) -> Value {
        let container = c.container.as_str();
        match self.policy.decide(container, c.command.as_slice(), &c.env) {
            Ok(rule) => {
                let need = exec_role("container/exec", rule);
                json!({
                    "allowed": true,
                    "rule": rule,
                    "role": need,
                    "caller_role": role,
                    "caller_allowed": role >= need,
                    "aio_exclusive": self.is_aio_container(container),
                })
            }
            Err(e) => {
                let mut v = json!({
                    "allowed": false,
                    "refused_by": e.kind(),
                    "reason": e.to_string(),
                    "caller_role": role,
                    "caller_allowed": false,
                });
                if let PolicyError::Denied(hit) = &e {
                    v["deny"] = json!(hit);
                }
                v
            }
        }
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
