//! Operator tools: `emergency/status`, `emergency/stop` (admin) and
//! `net/tcp-check`. SSH keys are in [`super::ssh_key`].
//!
//! May import: `domain`, `borg_config`, `emergency`, `locks`, `exec::borgmatic`.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::context::{Ctx, JobPlan, Outcome};
use super::fields::NoFields;
use super::response::{ApiError, ErrorCode};
use super::{CommandName, Fields};
use crate::borg_config::Location;
use crate::domain::{HostName, JobState};
use crate::emergency::{self, HeldLock, LockTarget};
use crate::exec::borgmatic::{Action, JobSecrets};

/// `emergency/stop` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyStop {
    #[serde(default)]
    pub restart_aio: bool,
}

/// `net/tcp-check`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    pub host: HostName,
    pub port: u16,
}

impl Fields for EmergencyStop {}
impl Fields for TcpCheck {}

/// A remote repository endpoint named in a configuration.
pub(super) struct Endpoint {
    pub repository: String,
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
}

impl Ctx<'_> {
    /// Every `ssh://` (or scp-style) endpoint of every configuration: the only hosts
    /// `ssh-key/test` and `net/tcp-check` may reach.
    pub(super) fn endpoints(&self) -> Vec<Endpoint> {
        let mut out = Vec::new();
        for (repo, cfg) in self.loaded_configs() {
            let label = repo.label.to_string();
            for r in cfg.repositories() {
                if let Location::Ssh {
                    user, host, port, ..
                } = r.location
                {
                    out.push(Endpoint {
                        repository: label.clone(),
                        user,
                        host,
                        port,
                    });
                }
            }
        }
        out
    }

    /// Locks held on the configured repositories, and whether this worker holds them.
    fn held_locks(&self) -> Vec<HeldLock> {
        let mut locks = Vec::new();
        for (repo, cfg) in self.loaded_configs() {
            let label = repo.label.to_string();
            for entry in cfg.repositories() {
                let status = crate::locks::status(&entry);
                if status.locked != Some(true) {
                    continue;
                }
                let held_by_us = status
                    .holders
                    .iter()
                    .any(|h| h.alive == Some(true) && emergency::is_ours(h.pid));
                locks.push(HeldLock {
                    repository: label.clone(),
                    location: entry.location.display(),
                    lock: status,
                    held_by_us,
                });
            }
        }
        locks
    }

    /// The break-lock of every local repository, for an emergency stop.
    fn lock_targets(&self) -> Vec<LockTarget> {
        let mut targets = Vec::new();
        for (repo, cfg) in self.loaded_configs() {
            let label = repo.label.to_string();
            for entry in cfg.repositories() {
                if let Location::Local(path) = entry.location {
                    let secrets = JobSecrets {
                        borg: self.settings.passphrase_for(&label).cloned(),
                        ssh: None,
                    };
                    targets.push(LockTarget {
                        repository: label.clone(),
                        break_lock: self
                            .borgmatic
                            .task(&repo, &secrets, Action::BreakLock)
                            .into_spec(),
                        repo_path: path,
                    });
                }
            }
        }
        targets
    }

    /// AIO's start after an emergency stop, every flag set (an unset one is
    /// inherited), checked by the exec policy.
    fn aio_restart(&self) -> Result<emergency::AioStart, ApiError> {
        if !self.settings.docker.enabled {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "restart_aio needs docker.enabled",
            ));
        }
        let master = self.settings.docker.mastercontainer();
        let argv = vec!["/daily-backup.sh".to_string()];
        let env = super::aio::aio_env(false, false, false, true, false);
        self.policy
            .decide(&master, &argv, &env)
            .map_err(|e| ApiError::new(ErrorCode::Forbidden, e.to_string()))?;
        Ok(emergency::AioStart {
            engine: self.docker.clone(),
            container: master,
            argv,
            env: env.into_iter().collect(),
        })
    }
}

pub(super) async fn emergency_status(ctx: &Ctx<'_>, _: NoFields) -> Result<Outcome, ApiError> {
    let jobs: Vec<_> = ctx
        .engine
        .list(Some(JobState::Running), usize::MAX)
        .into_iter()
        .chain(ctx.engine.list(Some(JobState::Queued), usize::MAX))
        .collect();
    let queued = jobs.iter().filter(|j| j.state == JobState::Queued).count();
    let mounts = emergency::fuse_mounts(&ctx.settings.borgmatic.mount_root);
    let locks = ctx.held_locks();
    let aio = if ctx.settings.docker.enabled {
        match ctx.docker.containers(&ctx.settings.docker.aio_prefix).await {
            Ok(c) => json!({ "available": true, "containers": c }),
            Err(e) => {
                tracing::warn!(error = %e, "emergency/status: Docker engine request failed");
                json!({ "available": false, "reason": "the Docker engine is not available (see the worker's log)" })
            }
        }
    } else {
        json!({ "available": null, "reason": "docker.enabled = false" })
    };
    let (level, reasons) = emergency::assess(&locks, &mounts, queued, &aio);
    Ok(Outcome::Answer(json!({
        "level": level,
        "reasons": reasons,
        "jobs": jobs,
        "mounts": mounts,
        "locks": locks,
        "aio": aio,
    })))
}

pub(super) async fn emergency_stop(ctx: &Ctx<'_>, s: EmergencyStop) -> Result<Outcome, ApiError> {
    let restart_aio = if s.restart_aio {
        Some(ctx.aio_restart()?)
    } else {
        None
    };
    let task = emergency::EmergencyStop {
        engine: ctx.engine.clone(),
        mount_root: ctx.settings.borgmatic.mount_root.clone(),
        locks: ctx.lock_targets(),
        restart_aio,
        grace: Duration::from_secs(ctx.settings.jobs.kill_grace_secs + 15),
    };
    Ok(Outcome::Job(JobPlan {
        name: CommandName::EmergencyStop,
        repository: None,
        locks: vec![],
        task: Box::new(task),
        scrub: vec![],
        bypass_limit: true,
    }))
}

/// Connects to a configured repository endpoint (never anywhere else).
pub(super) async fn tcp_check(ctx: &Ctx<'_>, t: TcpCheck) -> Result<Outcome, ApiError> {
    let (host, port) = (t.host.as_str(), t.port);
    let known = ctx
        .endpoints()
        .iter()
        .any(|e| e.host == host && e.port == port);
    if !known {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{host}:{port} is not a repository endpoint in the configurations (no port scanning)"
            ),
        ));
    }
    let target = format!("{host}:{port}");
    let start = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(&target),
    )
    .await;
    let data: Value = match r {
        Ok(Ok(_)) => json!({ "host": host, "port": port, "reachable": true,
                             "connect_ms": start.elapsed().as_secs_f64() * 1000.0 }),
        Ok(Err(e)) => {
            json!({ "host": host, "port": port, "reachable": false, "error": e.kind().to_string() })
        }
        Err(_) => {
            json!({ "host": host, "port": port, "reachable": false, "error": "no answer within 3s" })
        }
    };
    Ok(Outcome::Answer(data))
}
