//! Operator tools: emergency status and stop, SSH keys, reachability checks.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::Service;
use crate::borg_config::Location;
use crate::command::{
    ApiError, Command, CommandName, ErrorCode, HostName, KeyName, RequestId, Response,
};
use crate::emergency::{self, EmergencyStop, HeldLock, LockTarget};
use crate::exec::borgmatic::{Action, JobSecrets};
use crate::jobs::{BoxFuture, JobState, Task, TaskContext, TaskOutcome};
use crate::ssh_keys::{KeyError, KeyStore};

fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::NotFound(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
        KeyError::Exists(_) | KeyError::NotManaged(_) => ApiError::invalid(e.to_string()),
        KeyError::Io(_) => ApiError::new(ErrorCode::Internal, e.to_string()),
    }
}

/// A remote repository endpoint named in a configuration.
struct Endpoint {
    repository: String,
    user: Option<String>,
    host: String,
    port: u16,
}

impl Service {
    fn keys(&self) -> KeyStore {
        KeyStore::new(&self.settings.ssh.key_dir)
    }

    /// Every `ssh://` (or scp-style) endpoint of every configuration: the only hosts
    /// `ssh-key/test` and `net/tcp-check` may reach.
    fn endpoints(&self) -> Vec<Endpoint> {
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

    /// Passphrases that a new SSH key passphrase must differ from.
    fn borg_passphrases(&self) -> Vec<String> {
        self.settings
            .repositories
            .values()
            .filter_map(|r| r.passphrase.as_ref())
            .map(|p| p.expose().to_string())
            .collect()
    }

    pub(super) async fn execute_ops(
        &self,
        cmd: Command,
        rid: Option<RequestId>,
        request_ssh: Option<crate::config::Secret>,
    ) -> Result<Response, ApiError> {
        let name = cmd.name();
        let comment = format!("borgmatic-mqtt@{}", self.settings.node_id());
        match cmd {
            Command::EmergencyStatus(_) => {
                Ok(Response::ok(rid, None, self.emergency_status().await))
            }
            Command::EmergencyStop(s) => self.emergency_stop(s.restart_aio, rid),
            Command::SshKeyList(_) => {
                let keys = self.keys().list().map_err(key_error)?;
                Ok(Response::ok(
                    rid,
                    None,
                    json!({ "keys": keys, "key_dir": self.settings.ssh.key_dir }),
                ))
            }
            Command::SshKeyShow(k) => {
                let info = self.keys().show(&k.name).map_err(key_error)?;
                Ok(Response::ok(rid, None, json!(info)))
            }
            Command::SshKeyCreate(k) | Command::SshKeyRotate(k) => {
                let passphrase = k.passphrase.as_ref().map(|p| p.secret().clone());
                if let Some(p) = &passphrase {
                    if self.borg_passphrases().iter().any(|b| b == p.expose()) {
                        return Err(ApiError::invalid(
                            "the key passphrase equals a borg passphrase; use distinct secrets",
                        ));
                    }
                }
                let store = self.keys();
                let info = if name == CommandName::SshKeyCreate {
                    store.create(&k.name, passphrase.as_ref(), &comment)
                } else {
                    store.rotate(&k.name, passphrase.as_ref(), &comment)
                }
                .map_err(key_error)?;
                Ok(Response::ok(rid, None, json!(info)))
            }
            Command::SshKeyDelete(k) => {
                self.keys().delete(&k.name).map_err(key_error)?;
                Ok(Response::ok(
                    rid,
                    None,
                    json!({ "deleted": k.name.as_str() }),
                ))
            }
            Command::SshKeyTest(t) => self.ssh_key_test(t.name, t.host, request_ssh, rid),
            Command::NetTcpCheck(t) => self.tcp_check(t.host, t.port, rid).await,
            _ => Err(ApiError::new(
                ErrorCode::Internal,
                "not an operator command",
            )),
        }
    }

    async fn emergency_status(&self) -> Value {
        let jobs: Vec<_> = self
            .engine
            .list(Some(JobState::Running), usize::MAX)
            .into_iter()
            .chain(self.engine.list(Some(JobState::Queued), usize::MAX))
            .collect();
        let queued = jobs.iter().filter(|j| j.state == JobState::Queued).count();
        let mounts = emergency::fuse_mounts(&self.settings.borgmatic.mount_root);
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
        let aio = if self.settings.docker.enabled {
            match self
                .docker
                .containers(&self.settings.docker.aio_prefix)
                .await
            {
                Ok(c) => json!({ "available": true, "containers": c }),
                Err(e) => json!({ "available": false, "reason": e.to_string() }),
            }
        } else {
            json!({ "available": null, "reason": "docker.enabled = false" })
        };
        let (level, reasons) = emergency::assess(&locks, &mounts, queued, &aio);
        json!({
            "level": level,
            "reasons": reasons,
            "jobs": jobs,
            "mounts": mounts,
            "locks": locks,
            "aio": aio,
        })
    }

    fn emergency_stop(
        &self,
        restart_aio: bool,
        rid: Option<RequestId>,
    ) -> Result<Response, ApiError> {
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
        let restart = if restart_aio {
            if !self.settings.docker.enabled {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "restart_aio needs docker.enabled",
                ));
            }
            let master = self.settings.docker.mastercontainer();
            let argv = vec!["/daily-backup.sh".to_string()];
            // AIO's start, every flag set (an unset one is inherited).
            let env = super::aio_cmds::aio_env(false, false, false, true, false);
            self.policy
                .decide(&master, &argv, &env)
                .map_err(|e| ApiError::new(ErrorCode::Forbidden, e.to_string()))?;
            Some(emergency::AioStart {
                engine: self.docker.clone(),
                container: master,
                argv,
                env: env.into_iter().collect(),
            })
        } else {
            None
        };
        let task = EmergencyStop {
            engine: self.engine.clone(),
            mount_root: self.settings.borgmatic.mount_root.clone(),
            locks: targets,
            restart_aio: restart,
            grace: Duration::from_secs(self.settings.jobs.kill_grace_secs + 15),
        };
        self.submit_locked(
            CommandName::EmergencyStop,
            None,
            vec![],
            rid,
            Box::new(task),
            vec![],
        )
    }

    fn ssh_key_test(
        &self,
        name: KeyName,
        host: HostName,
        request_ssh: Option<crate::config::Secret>,
        rid: Option<RequestId>,
    ) -> Result<Response, ApiError> {
        let endpoint = self
            .endpoints()
            .into_iter()
            .find(|e| e.host == host.as_str())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "{} is not the host of any repository in the configurations",
                        host.as_str()
                    ),
                )
            })?;
        let key = self.keys().private_path(&name).map_err(key_error)?;
        let encrypted = self
            .keys()
            .show(&name)
            .map(|k| k.encrypted)
            .unwrap_or(false);
        let passphrase = request_ssh.or_else(|| {
            self.settings
                .ssh_passphrase_for(&endpoint.repository)
                .cloned()
        });
        // The one ssh argv builder checks user, host and paths as ssh gets them.
        let unusable = |e: crate::exec::ssh::SshArgError| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("{e} (check the configuration)"),
            )
        };
        let destination =
            crate::exec::ssh::SshDestination::new(endpoint.user.as_deref(), &endpoint.host)
                .map_err(unusable)?;
        let absolute = |p: std::path::PathBuf| std::path::absolute(&p).unwrap_or(p);
        let askpass = matches!((&passphrase, encrypted), (Some(_), true));
        let key = absolute(key);
        let probe = crate::exec::ssh::SshProbe::new(
            &key,
            endpoint.port,
            &absolute(self.settings.ssh.key_dir.join("known_hosts")),
            destination,
            askpass,
        )
        .map_err(unusable)?;
        let mut env = Vec::new();
        if let (Some(p), true) = (&passphrase, askpass) {
            env.extend(crate::askpass::env(p, std::slice::from_ref(&key)));
        }
        let args = probe.argv();
        let spec = crate::exec::process::ProcessSpec {
            program: "ssh".into(),
            args,
            env,
            capture_stdout: false,
            kill_grace: Duration::from_secs(5),
        };
        let scrub = passphrase.iter().map(|p| p.expose().to_string()).collect();
        self.submit_locked(
            CommandName::SshKeyTest,
            None,
            vec![],
            rid,
            Box::new(SshTest {
                spec,
                host: host.as_str().to_string(),
                port: endpoint.port,
            }),
            scrub,
        )
    }

    async fn tcp_check(
        &self,
        host: HostName,
        port: u16,
        rid: Option<RequestId>,
    ) -> Result<Response, ApiError> {
        let known = self
            .endpoints()
            .iter()
            .any(|e| e.host == host.as_str() && e.port == port);
        if !known {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "{}:{port} is not a repository endpoint in the configurations (no port scanning)",
                    host.as_str()
                ),
            ));
        }
        let target = format!("{}:{port}", host.as_str());
        let start = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(&target),
        )
        .await;
        let data = match r {
            Ok(Ok(_)) => json!({ "host": host.as_str(), "port": port, "reachable": true,
                                 "connect_ms": start.elapsed().as_secs_f64() * 1000.0 }),
            Ok(Err(e)) => {
                json!({ "host": host.as_str(), "port": port, "reachable": false, "error": e.to_string() })
            }
            Err(_) => {
                json!({ "host": host.as_str(), "port": port, "reachable": false, "error": "no answer within 3s" })
            }
        };
        Ok(Response::ok(rid, None, data))
    }
}

/// `ssh-key/test`: ssh's exit code 255 means it could not connect or authenticate.
struct SshTest {
    spec: crate::exec::process::ProcessSpec,
    host: String,
    port: u16,
}

impl Task for SshTest {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            match crate::exec::process::run(&self.spec, &ctx.cancel, &ctx.pace(), &|s, l| {
                ctx.line(s, l)
            })
            .await
            {
                Ok(out) => {
                    let ok = out.exit_code != 255;
                    TaskOutcome {
                        state: if ok {
                            JobState::Succeeded
                        } else {
                            JobState::Failed
                        },
                        exit_code: Some(out.exit_code),
                        data: Some(
                            json!({ "host": self.host, "port": self.port, "authenticated": ok }),
                        ),
                        error: (!ok).then(|| {
                            format!(
                                "ssh could not connect to or authenticate with {}:{} (see the log)",
                                self.host, self.port
                            )
                        }),
                    }
                }
                Err(e) => TaskOutcome::failed(e.to_string()),
            }
        })
    }
}
