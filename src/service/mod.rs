//! The transport-agnostic request handler: a raw request (command name, body, how
//! it arrived) in, exactly one [`Response`] out. MQTT and HTTP are thin adapters
//! around [`Service::handle`].
//!
//! Order of checks: JSON envelope → retained → token → command name → role →
//! duplicate request id → fields → state (repository exists, not busy).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::auth::{Role, Tokens};
use crate::borg_config::BorgmaticConfig;
use crate::command::{
    ApiError, Command, CommandName, Envelope, ErrorCode, JobId, RequestId, RequestLimits, Response,
};
use crate::command::{RepositoryLabel, SubPath};
use crate::config::{Secret, Settings};
use crate::docker::Engine;
use crate::exec::borgmatic::{Action, Borgmatic, JobSecrets, Repository, Version};
use crate::exec::policy::ExecPolicy;
use crate::exec::roots::{self, RootError};
use crate::jobs::{repo_lock, CancelReason, JobEngine, JobSpec, SubmitError, Task};

mod aio_cmds;
pub mod audit;
mod dedup;
mod limits;
mod ops_cmds;

pub use audit::AuditRecord;

/// The lock key every AIO backup holds (and `backup/run` on an AIO repository).
const AIO_LOCK: &str = "aio";

/// How long a request id is remembered.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// Default and maximum of `job/list`'s `limit`.
const LIST_DEFAULT: usize = 50;
const LIST_MAX: usize = 1_000;

/// Which adapter a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Mqtt,
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Http => "http",
        }
    }
}

/// How a request arrived; the adapters fill it in.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub transport: Transport,
    /// Who sent it, as far as the transport knows (HTTP peer address); MQTT brokers
    /// do not tell, so it is `None` there.
    pub client: Option<&'a str>,
    /// `group/action`.
    pub command: &'a str,
    pub body: &'a [u8],
    /// MQTT retain flag; always false over HTTP.
    pub retained: bool,
    /// A token presented outside the body (MQTT v5 user property, HTTP header).
    pub bearer: Option<&'a str>,
    /// Set by an adapter whose channel is authorised by other means (Home Assistant
    /// buttons, guarded by the broker ACL): the request has this role, no token.
    pub trusted: Option<Role>,
}

/// Everything a request may touch.
pub struct Service {
    settings: Arc<Settings>,
    tokens: Tokens,
    engine: JobEngine,
    borgmatic: Borgmatic,
    borgmatic_version: Version,
    docker: Engine,
    policy: ExecPolicy,
    limits: limits::Limits,
    audit: audit::Audit,
    /// Two copies of one request (QoS 1 redelivery) never both run; per key, so
    /// nothing else waits.
    dedup: dedup::Dedup,
    request_limits: RequestLimits,
}

impl Service {
    pub fn new(
        settings: Arc<Settings>,
        tokens: Tokens,
        engine: JobEngine,
        borgmatic_version: Version,
    ) -> Self {
        // Start-up already refused a policy file that does not load.
        let policy = ExecPolicy::from_settings(&settings.docker)
            .unwrap_or_else(|_| ExecPolicy::builtin(&settings.docker.mastercontainer()));
        let dedup = dedup::Dedup::with_store(
            DEDUP_WINDOW,
            settings.limits.dedup_cache_bytes,
            engine.store().clone(),
        );
        let request_limits = RequestLimits {
            max_bytes: settings.limits.max_request_bytes,
            max_depth: settings.limits.max_request_depth,
        };
        Self {
            docker: Engine::new(settings.docker.host.clone()),
            policy,
            limits: limits::Limits::new(&settings.limits),
            audit: audit::Audit::new(&settings.state_dir, &settings.audit),
            borgmatic: Borgmatic::new(&settings, borgmatic_version),
            settings,
            tokens,
            engine,
            borgmatic_version,
            dedup,
            request_limits,
        }
    }

    pub fn engine(&self) -> &JobEngine {
        &self.engine
    }

    /// The borgmatic task builder (the repository health prober, the labels).
    pub fn borgmatic(&self) -> &Borgmatic {
        &self.borgmatic
    }

    /// The Docker engine (readiness).
    pub fn docker(&self) -> &Engine {
        &self.docker
    }

    /// Forgets rate-limit state of principals back to a full quota.
    pub fn shrink_limits(&self) {
        self.limits.shrink();
    }

    /// The retained `<base>/info` document, with whether the Docker engine answers.
    pub async fn info(&self) -> Value {
        let docker = match self.docker.ping().await {
            Ok(version) => json!({ "available": true, "version": version }),
            Err(e) => json!({ "available": false, "reason": e.to_string() }),
        };
        let mut info = self.static_info();
        info["docker"] = docker;
        info
    }

    fn static_info(&self) -> Value {
        let commands: Vec<&str> = CommandName::ALL
            .iter()
            .filter(|c| c.implemented())
            .map(|c| c.as_str())
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "borgmatic_version": self.borgmatic_version.to_string(),
            "node": self.settings.node_id(),
            "base_topic": self.settings.base_topic(),
            "commands": commands,
            "repositories": self.borgmatic.labels(),
            "admin_enabled": self.tokens.has_admin(),
        })
    }

    /// Answers one request. Never panics on client input; always one response,
    /// counted in the metrics and written to the audit trail.
    pub async fn handle(&self, req: Request<'_>) -> Response {
        let mut seen = Seen::default();
        let mut resp = match Envelope::parse(req.body, &self.request_limits) {
            // A token or passphrase in the wrong field: refused before anything runs,
            // is recorded or is logged, and not echoed (not even as the request id).
            Ok(e)
                if crate::redact::request_holds_secret(
                    e.request_id.as_ref().map(|r| r.as_str()),
                    &e.fields,
                ) =>
            {
                Response::error(None, ApiError::invalid(crate::redact::SECRET_IN_REQUEST))
            }
            Ok(e) => {
                seen.repository = e
                    .fields
                    .get("repository")
                    .and_then(Value::as_str)
                    .filter(|r| RepositoryLabel::parse(r).is_ok())
                    .map(str::to_string);
                let rid = e.request_id.clone();
                match self.handle_envelope(&req, e, &mut seen).await {
                    Ok(resp) | Err(resp) => resp,
                }
                .with_request_id(rid)
            }
            Err((rid, err)) => Response::error(rid, err),
        };
        crate::redact::withhold_request_id(&mut resp.request_id);
        let outcome = resp.error_code().map(ErrorCode::as_str).unwrap_or("ok");
        crate::metrics::request(req.transport.as_str(), outcome);
        if resp.error_code() == Some(ErrorCode::RateLimited) {
            crate::metrics::rate_limited(req.transport.as_str());
        }
        self.audit.append(&AuditRecord {
            at: chrono::Utc::now(),
            transport: req.transport.as_str().into(),
            role: seen.role.map(|r| r.as_str().to_string()),
            client: req.client.map(str::to_string),
            command: match CommandName::parse(req.command) {
                Some(name) => name.as_str().to_string(),
                None => crate::command::shorten(req.command)
                    .trim_matches('"')
                    .to_string(),
            },
            repository: seen.repository.map(|r| crate::redact::scrub(&r)),
            outcome: outcome.into(),
            job_id: resp.job_id.map(|j| j.to_string()),
            request_id: resp.request_id.as_ref().map(|r| r.as_str().to_string()),
        });
        resp
    }

    /// Records a request an adapter refused before it reached [`Service::handle`]
    /// (MQTT: no room in flight, correlation data too long), so the audit trail
    /// accounts for every request. Unauthenticated by then: aggregated like other
    /// refusals without a token.
    pub fn audit_refusal(&self, transport: Transport, command: &str, code: ErrorCode) {
        self.audit.append(&AuditRecord {
            at: chrono::Utc::now(),
            transport: transport.as_str().into(),
            role: None,
            client: None,
            command: match CommandName::parse(command) {
                Some(name) => name.as_str().to_string(),
                None => crate::command::shorten(command)
                    .trim_matches('"')
                    .to_string(),
            },
            repository: None,
            outcome: code.as_str().into(),
            job_id: None,
            request_id: None,
        });
    }

    /// The role of a token presented outside a command (HTTP job views), if it
    /// reaches `need`.
    pub fn authorize(&self, token: Option<&str>, need: Role) -> Result<Role, ApiError> {
        let token = token.ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing token: send Authorization: Bearer <token>",
            )
        })?;
        let role = self
            .tokens
            .authenticate(token)
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown token"))?;
        if role < need {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this needs the {} role; this token has the {} role",
                    need.as_str(),
                    role.as_str()
                ),
            ));
        }
        Ok(role)
    }

    async fn handle_envelope(
        &self,
        req: &Request<'_>,
        envelope: Envelope,
        seen: &mut Seen,
    ) -> Result<Response, Response> {
        let rid = envelope.request_id.clone();
        let fail = |e: ApiError| Response::error(rid.clone(), e);
        if req.retained {
            return Err(fail(ApiError::invalid(
                "retained requests are refused and never run; publish commands with retain=false",
            )));
        }
        let token = envelope.token.as_deref().or(req.bearer);
        let trusted = req.trusted.filter(|_| token.is_none());
        let token = if trusted.is_some() { Some("") } else { token };
        let Some(token) = token else {
            return Err(fail(ApiError::new(
                ErrorCode::Unauthorized,
                "missing token: put it in the `token` field or send `authorization: Bearer <token>`",
            )));
        };
        let Some(role) = trusted.or_else(|| self.tokens.authenticate(token)) else {
            return Err(fail(ApiError::new(
                ErrorCode::Unauthorized,
                "unknown token",
            )));
        };
        seen.role = Some(role);
        let Some(name) = CommandName::parse(req.command) else {
            return Err(fail(ApiError::invalid(format!(
                "unknown command {}",
                crate::command::shorten(req.command)
            ))));
        };
        if name.role() == Role::Admin && !self.tokens.has_admin() {
            return Err(fail(ApiError::new(
                ErrorCode::Forbidden,
                format!("{name} needs the admin role, and admin commands are disabled: auth.admin_token is not configured"),
            )));
        }
        if role < name.role() {
            return Err(fail(forbidden(name, name.role(), role)));
        }
        let request_secrets = RequestSecrets {
            borg: envelope.borg_passphrase,
            ssh: envelope.ssh_passphrase,
        };
        if !request_secrets.is_empty() && !self.settings.auth.allow_request_secrets {
            return Err(fail(ApiError::invalid(
                "borg_passphrase and ssh_passphrase in requests are disabled; set auth.allow_request_secrets = true to allow them",
            )));
        }

        let principal = format!(
            "{}:{}:{}",
            req.transport.as_str(),
            role.as_str(),
            req.client.unwrap_or("-")
        );
        let ticket = match &rid {
            None => None,
            Some(r) => {
                let key = dedup::Key {
                    principal: principal.clone(),
                    command: name,
                    id: r.clone(),
                };
                let body = self.body_hash(&envelope.fields, &request_secrets);
                match self.dedup.claim(key, body).await {
                    dedup::Claim::Run(t) => Some(t),
                    dedup::Claim::Replay(resp) => {
                        tracing::debug!(
                            request_id = r.as_str(),
                            "duplicate request answered again"
                        );
                        return Ok(resp);
                    }
                    dedup::Claim::Reused => {
                        return Err(fail(ApiError::invalid(format!(
                            "request_id reused: {name} with this request_id had a different body in the last {} minutes; use a new request_id",
                            DEDUP_WINDOW.as_secs() / 60
                        ))));
                    }
                    dedup::Claim::Forgotten => {
                        return Err(fail(ApiError::invalid(
                            "request_id reused: this request was answered already and its answer was too large to keep; use a new request_id",
                        )));
                    }
                }
            }
        };
        if let Err(wait) = self.limits.check(name.role(), &principal) {
            let secs = wait.as_secs() + 1;
            // Not remembered as the request's answer: a retry may succeed.
            return Err(fail(
                ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "too many {} requests; retry in {secs}s",
                        name.role().as_str()
                    ),
                )
                .with_data(json!({ "retry_after_secs": secs })),
            ));
        }
        let resp = match Command::parse(name, envelope.fields) {
            Ok(cmd) if role < cmd.role() => fail(forbidden(name, cmd.role(), role)),
            Ok(cmd) => self.execute(cmd, rid.clone(), request_secrets, role).await,
            Err(e) => fail(e),
        };
        if let Some(t) = ticket {
            t.finish(&resp);
        }
        Ok(resp)
    }

    /// What identifies a request's content for [`dedup`]: its fields and whether
    /// (and which) secrets came along, never the token.
    fn body_hash(&self, fields: &serde_json::Map<String, Value>, secrets: &RequestSecrets) -> u64 {
        let mut bytes = serde_json::to_vec(fields).unwrap_or_default();
        for s in [&secrets.borg, &secrets.ssh] {
            bytes.push(0);
            if let Some(s) = s {
                bytes.extend_from_slice(s.expose().as_bytes());
            }
        }
        self.dedup.hash(&bytes)
    }

    async fn execute(
        &self,
        cmd: Command,
        rid: Option<RequestId>,
        secrets: RequestSecrets,
        role: Role,
    ) -> Response {
        match self.try_execute(cmd, rid.clone(), secrets, role).await {
            Ok(resp) => resp,
            Err(e) => Response::error(rid, e),
        }
    }

    async fn try_execute(
        &self,
        cmd: Command,
        rid: Option<RequestId>,
        secrets: RequestSecrets,
        role: Role,
    ) -> Result<Response, ApiError> {
        let ssh_key_test_secret = matches!(cmd, Command::SshKeyTest(_)) && secrets.borg.is_none();
        if !secrets.is_empty() && cmd.repository().is_none() && !ssh_key_test_secret {
            return Err(ApiError::invalid(format!(
                "{} takes no borg_passphrase or ssh_passphrase",
                cmd.name()
            )));
        }
        let name = cmd.name();
        let action = match cmd {
            Command::BackupRun(c) => (
                c.repository,
                Action::Create {
                    dry_run: c.dry_run,
                    stats: c.stats,
                    progress: c.progress,
                },
            ),
            Command::BackupVerify(c) => {
                let repo = self.repository(&c.repository)?;
                let secrets_for_job = self.job_secrets(&c.repository, &secrets)?;
                let spot = load(&repo)
                    .ok()
                    .and_then(|cfg| cfg.doc.get("checks").cloned())
                    .and_then(|v| v.as_array().cloned())
                    .is_some_and(|checks| checks.iter().any(|c| c["name"] == "spot"));
                let task = crate::exec::verify::VerifyTask {
                    borgmatic: self.borgmatic.clone(),
                    repo,
                    secrets: secrets_for_job,
                    archive: c.archive,
                    sample: c.sample.unwrap_or(50) as usize,
                    max_bytes: c.max_bytes.unwrap_or(1 << 30),
                    restore_root: self.settings.borgmatic.restore_root.clone(),
                    spot,
                };
                return self.submit(
                    name,
                    Some(c.repository),
                    rid,
                    Box::new(task),
                    secrets.values(),
                );
            }
            Command::ArchiveList(c) if c.source == crate::command::ArchiveSource::Aio => {
                return self.aio_archive_list(c, rid).await;
            }
            Command::ArchiveList(c) => (c.repository, Action::RepoList { last: c.last }),
            Command::ArchiveInfo(c) => (
                c.repository,
                Action::Info {
                    archive: c
                        .archive
                        .unwrap_or_else(crate::command::ArchiveName::latest),
                },
            ),
            Command::RepoLatestStats(c) => (c.repository, Action::LatestStats),
            Command::RepoInfo(c) => (c.repository, Action::RepoInfo),
            Command::ArchiveExtract(c) => {
                let destination =
                    self.below(&self.settings.borgmatic.restore_root, &c.destination, false)?;
                (
                    c.repository,
                    Action::Extract {
                        archive: c.archive,
                        paths: c.paths,
                        destination,
                    },
                )
            }
            Command::ArchiveMount(c) => {
                fuse()?;
                let mount_point =
                    self.below(&self.settings.borgmatic.mount_root, &c.mount_point, false)?;
                (
                    c.repository,
                    Action::Mount {
                        archive: c.archive,
                        mount_point,
                    },
                )
            }
            Command::ArchiveUmount(c) => {
                fuse()?;
                let mount_point =
                    self.below(&self.settings.borgmatic.mount_root, &c.mount_point, true)?;
                (c.repository, Action::Umount { mount_point })
            }
            Command::RepoCheck(c) => (c.repository, Action::Check { repair: c.repair }),
            Command::RepoPrune(c) => (c.repository, Action::Prune { dry_run: c.dry_run }),
            Command::RepoCompact(c) => (c.repository, Action::Compact { dry_run: c.dry_run }),
            Command::RepoBreakLock(c) => (c.repository, Action::BreakLock),
            Command::KeyChangePassphrase(c) => {
                let new = c.new_passphrase.secret().clone();
                let ssh = secrets.ssh.clone().or_else(|| {
                    self.settings
                        .ssh_passphrase_for(c.repository.as_str())
                        .cloned()
                });
                if ssh.as_ref() == Some(&new) {
                    return Err(ApiError::invalid(
                        "new_passphrase equals the SSH key passphrase; use distinct secrets",
                    ));
                }
                (c.repository, Action::ChangePassphrase { new })
            }
            Command::ConfigValidate(c) => {
                let task = match &c.repository {
                    Some(label) => {
                        let repo = self.repository(label)?;
                        self.borgmatic
                            .task(&repo, &JobSecrets::default(), Action::ValidateConfig)
                    }
                    None => self.borgmatic.validate_all(),
                };
                return self.submit(name, None, rid, Box::new(task), vec![]);
            }
            Command::RepoLockStatus(c) => {
                let data = self.lock_status(c.repository.as_ref())?;
                return Ok(Response::ok(rid, None, data));
            }
            Command::ConfigList(_) => return Ok(Response::ok(rid, None, self.config_list())),
            Command::ConfigShow(c) => {
                let repo = self.repository(&c.repository)?;
                let cfg = load(&repo)?;
                let data = json!({
                    "repository": c.repository.as_str(),
                    "file": repo.config,
                    "config": cfg.redacted(),
                });
                return Ok(Response::ok(rid, None, data));
            }
            Command::ConfigCheckAio(c) => {
                let data = self.check_aio(c.repository.as_ref()).await?;
                return Ok(Response::ok(rid, None, data));
            }
            Command::ContainerList(_)
            | Command::VolumeList(_)
            | Command::ContainerExec(_)
            | Command::AioBackup(_)
            | Command::AioHealthcheck(_)
            | Command::AioStart(_)
            | Command::AioStop(_)
            | Command::SecurityExecPolicy(_) => return self.execute_docker(cmd, rid, role).await,
            Command::EmergencyStatus(_)
            | Command::EmergencyStop(_)
            | Command::SshKeyList(_)
            | Command::SshKeyShow(_)
            | Command::SshKeyCreate(_)
            | Command::SshKeyRotate(_)
            | Command::SshKeyDelete(_)
            | Command::SshKeyTest(_)
            | Command::NetTcpCheck(_) => return self.execute_ops(cmd, rid, secrets.ssh).await,
            Command::AuditList(a) => {
                let limit = a
                    .limit
                    .map(|l| (l as usize).min(LIST_MAX))
                    .unwrap_or(LIST_DEFAULT);
                let records = self.audit.last(limit);
                return Ok(Response::ok(rid, None, json!({ "records": records })));
            }
            Command::JobGet(c) => {
                let data = match self.engine.result(c.job_id) {
                    Some(result) => to_value(&result),
                    None => to_value(&self.engine.get(c.job_id).ok_or_else(|| no_job(c.job_id))?),
                };
                return Ok(Response::ok(rid, Some(c.job_id), data));
            }
            Command::JobList(f) => {
                let limit = f
                    .limit
                    .map(|l| (l as usize).min(LIST_MAX))
                    .unwrap_or(LIST_DEFAULT);
                let jobs = self.engine.list(f.state, limit);
                return Ok(Response::ok(rid, None, json!({ "jobs": jobs })));
            }
            Command::JobCancel(c) => {
                let rec = self
                    .engine
                    .cancel(c.job_id, CancelReason::User)
                    .map_err(|_| no_job(c.job_id))?;
                return Ok(Response::ok(rid, Some(c.job_id), to_value(&rec)));
            }
        };
        let (label, action) = action;
        let repo = self.repository(&label)?;
        if name == CommandName::BackupRun && self.is_aio_repository(label.as_str()) {
            self.refuse_if_aio_busy().await?;
        }
        let job_secrets = self.job_secrets(&label, &secrets)?;
        let mut scrub: Vec<String> = secrets.values();
        if let Action::ChangePassphrase { new } = &action {
            scrub.push(new.expose().to_string());
        }
        let task = self.borgmatic.task(&repo, &job_secrets, action);
        self.submit(name, Some(label), rid, Box::new(task), scrub)
    }

    /// The secrets a job on `label` uses: the request's, else the configured ones.
    fn job_secrets(
        &self,
        label: &RepositoryLabel,
        request: &RequestSecrets,
    ) -> Result<JobSecrets, ApiError> {
        let borg = request
            .borg
            .clone()
            .or_else(|| self.settings.passphrase_for(label.as_str()).cloned());
        let ssh = request
            .ssh
            .clone()
            .or_else(|| self.settings.ssh_passphrase_for(label.as_str()).cloned());
        if let (Some(b), Some(s)) = (&borg, &ssh) {
            if b == s {
                return Err(ApiError::invalid(
                    "the borg passphrase equals the SSH key passphrase; use distinct secrets",
                ));
            }
        }
        Ok(JobSecrets { borg, ssh })
    }

    fn below(
        &self,
        root: &std::path::Path,
        sub: &SubPath,
        existing: bool,
    ) -> Result<roots::Confined, ApiError> {
        let r = if existing {
            roots::existing_below(root, sub)
        } else {
            roots::resolve_below(root, sub)
        };
        r.map_err(|e| match e {
            RootError::MissingRoot(_) => ApiError::new(ErrorCode::Unavailable, e.to_string()),
            RootError::Escapes(_) => ApiError::invalid(e.to_string()),
            RootError::Create { .. } if existing => {
                ApiError::new(ErrorCode::NotFound, e.to_string())
            }
            RootError::Create { .. } => ApiError::invalid(e.to_string()),
        })
    }

    fn labels_or_one(&self, one: Option<&RepositoryLabel>) -> Result<Vec<Repository>, ApiError> {
        match one {
            Some(label) => Ok(vec![self.repository(label)?]),
            None => Ok(self
                .borgmatic
                .labels()
                .iter()
                .filter_map(|l| RepositoryLabel::parse(l).ok())
                .filter_map(|l| self.borgmatic.repository(&l))
                .collect()),
        }
    }

    /// Every configuration that loads, with its repository (a file that does not
    /// parse is skipped here; `config/list` reports it).
    pub(super) fn loaded_configs(&self) -> Vec<(Repository, BorgmaticConfig)> {
        self.labels_or_one(None)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|repo| BorgmaticConfig::load(&repo.config).ok().map(|c| (repo, c)))
            .collect()
    }

    fn lock_status(&self, one: Option<&RepositoryLabel>) -> Result<Value, ApiError> {
        let mut out = Vec::new();
        for repo in self.labels_or_one(one)? {
            let cfg = load(&repo)?;
            for entry in cfg.repositories() {
                let status = crate::locks::status(&entry);
                out.push(json!({
                    "repository": repo.label.as_str(),
                    "location": crate::borg_config::parse_location(&entry.path).display(),
                    "lock": status,
                }));
            }
        }
        Ok(json!({ "repositories": out }))
    }

    fn config_list(&self) -> Value {
        let mut configs = Vec::new();
        for label in self.borgmatic.labels() {
            let Ok(l) = RepositoryLabel::parse(&label) else {
                continue;
            };
            let Some(repo) = self.borgmatic.repository(&l) else {
                continue;
            };
            let entry = match BorgmaticConfig::load(&repo.config) {
                Ok(cfg) => json!({
                    "repository": label,
                    "file": repo.config,
                    "repositories": cfg.repositories().iter().map(|r| json!({
                        "label": r.label,
                        "location": r.location.display(),
                    })).collect::<Vec<_>>(),
                }),
                Err(e) => {
                    json!({ "repository": label, "file": repo.config, "error": e.to_string() })
                }
            };
            configs.push(entry);
        }
        json!({ "configs": configs })
    }

    async fn check_aio(&self, one: Option<&RepositoryLabel>) -> Result<Value, ApiError> {
        let mut out = Vec::new();
        for repo in self.labels_or_one(one)? {
            let cfg = load(&repo)?;
            let checks = crate::aio::check_config(&cfg, Duration::from_secs(3)).await;
            let passed = checks.iter().all(|c| c.passed != Some(false));
            out.push(json!({
                "repository": repo.label.as_str(),
                "passed": passed,
                "checks": checks,
            }));
        }
        Ok(json!({ "repositories": out }))
    }

    fn repository(&self, label: &RepositoryLabel) -> Result<Repository, ApiError> {
        self.borgmatic
            .repository(label)
            .ok_or_else(|| no_repo(label))
    }

    fn submit(
        &self,
        name: CommandName,
        repository: Option<RepositoryLabel>,
        rid: Option<RequestId>,
        task: Box<dyn Task>,
        secrets: Vec<String>,
    ) -> Result<Response, ApiError> {
        let mut locks: Vec<String> = repository.iter().map(repo_lock).collect();
        if name == CommandName::BackupRun
            && repository
                .as_ref()
                .is_some_and(|r| self.is_aio_repository(r.as_str()))
        {
            locks.push(AIO_LOCK.into());
        }
        self.submit_locked(name, repository, locks, rid, task, secrets)
    }

    fn submit_locked(
        &self,
        name: CommandName,
        repository: Option<RepositoryLabel>,
        locks: Vec<String>,
        rid: Option<RequestId>,
        task: Box<dyn Task>,
        secrets: Vec<String>,
    ) -> Result<Response, ApiError> {
        let spec = JobSpec {
            command: name,
            locks,
            repository,
            request_id: rid.clone(),
            timeout: self.settings.jobs.timeout_for(name.as_str()),
            task,
            secrets,
            bypass_limit: name == CommandName::EmergencyStop,
            background: false,
        };
        match self.engine.submit(spec) {
            Ok(record) => Ok(Response::ok(rid, Some(record.job_id), to_value(&record))),
            Err(SubmitError::Busy { what, job_id }) => Err(ApiError::new(
                ErrorCode::Busy,
                format!("{what} already has a running job {job_id}"),
            )
            .with_data(json!({ "job_id": job_id }))),
            Err(e @ SubmitError::QueueFull { .. }) => {
                Err(ApiError::new(ErrorCode::Busy, e.to_string()))
            }
            Err(SubmitError::ShuttingDown) => Err(ApiError::new(
                ErrorCode::Unavailable,
                "the worker is shutting down",
            )),
            Err(e @ SubmitError::Storage(_)) => {
                Err(ApiError::new(ErrorCode::Unavailable, e.to_string()))
            }
        }
    }
}

/// What the audit trail learns while a request is handled.
#[derive(Default)]
struct Seen {
    role: Option<Role>,
    repository: Option<String>,
}

/// Secrets a request brought along (`auth.allow_request_secrets`).
#[derive(Default)]
struct RequestSecrets {
    borg: Option<Secret>,
    ssh: Option<Secret>,
}

impl RequestSecrets {
    fn is_empty(&self) -> bool {
        self.borg.is_none() && self.ssh.is_none()
    }
    fn values(&self) -> Vec<String> {
        [&self.borg, &self.ssh]
            .into_iter()
            .flatten()
            .map(|s| s.expose().to_string())
            .collect()
    }
}

fn forbidden(name: CommandName, needed: Role, has: Role) -> ApiError {
    if needed == Role::Admin && has < Role::Admin {
        return ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{name} with these fields needs the admin role; this token has the {} role",
                has.as_str()
            ),
        );
    }
    ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "{name} needs the {} role; this token has the {} role",
            needed.as_str(),
            has.as_str()
        ),
    )
}

fn fuse() -> Result<(), ApiError> {
    match roots::fuse_unavailable() {
        Some(reason) => Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("FUSE mounts are not possible here: {reason}"),
        )),
        None => Ok(()),
    }
}

fn load(repo: &Repository) -> Result<BorgmaticConfig, ApiError> {
    BorgmaticConfig::load(&repo.config).map_err(|e| ApiError::invalid(e.to_string()))
}

fn no_repo(label: &RepositoryLabel) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no repository {label}: there is no {label}.yaml in the borgmatic config directory"
        ),
    )
}

fn no_job(id: JobId) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no job {id}"))
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Response {
    /// Makes sure the answer echoes the request's id (a replayed answer already does).
    fn with_request_id(mut self, rid: Option<RequestId>) -> Self {
        if self.request_id.is_none() {
            self.request_id = rid;
        }
        self
    }
}
