//! The transport-agnostic request handler: a raw request (command name, body, how
//! it arrived) in, exactly one [`Response`] out. MQTT and HTTP are thin adapters
//! around [`Service::handle`].
//!
//! Order of checks: JSON envelope → retained → token → command name → role →
//! duplicate request id → rate limit → fields → the command's handler (state:
//! repository exists, not busy), whose outcome becomes the answer here.
//!
//! Owns the pipeline, `dedup`, `limits` and `audit`; the commands themselves are in
//! [`crate::commands`]. May import: `command`, `commands`, `domain`, `auth`,
//! `config`, `jobs`, `exec`, `docker`, `redact`, `metrics`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::auth::{Role, Tokens};
use crate::command::{
    ApiError, Command, CommandName, Envelope, ErrorCode, RepositoryLabel, RequestId, RequestLimits,
    Response,
};
use crate::commands::{Ctx, JobPlan, Outcome, RequestSecrets};
use crate::config::Settings;
use crate::docker::Engine;
use crate::exec::borgmatic::{Borgmatic, Version};
use crate::exec::policy::ExecPolicy;
use crate::jobs::{JobEngine, JobSpec, SubmitError};

pub mod audit;
mod dedup;
mod limits;

pub use audit::AuditRecord;

/// How long a request id is remembered.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(600);

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
        let dedup = dedup::Dedup::new(DEDUP_WINDOW, settings.limits.dedup_cache_bytes);
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
        let commands: Vec<&str> = CommandName::ALL.iter().map(|c| c.as_str()).collect();
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

    /// Runs the command's handler and turns its outcome into the answer: the data,
    /// or the submitted job's record.
    async fn execute(
        &self,
        cmd: Command,
        rid: Option<RequestId>,
        secrets: RequestSecrets,
        role: Role,
    ) -> Response {
        let ssh_key_test_secret = cmd.name() == CommandName::SshKeyTest && secrets.borg.is_none();
        if !secrets.is_empty() && cmd.repository().is_none() && !ssh_key_test_secret {
            let e = ApiError::invalid(format!(
                "{} takes no borg_passphrase or ssh_passphrase",
                cmd.name()
            ));
            return Response::error(rid, e);
        }
        let ctx = Ctx {
            settings: &self.settings,
            engine: &self.engine,
            borgmatic: &self.borgmatic,
            docker: &self.docker,
            policy: &self.policy,
            audit: &self.audit,
            role,
            secrets,
        };
        match cmd.handle(&ctx).await {
            Ok(Outcome::Answer(data)) => Response::ok(rid, None, data),
            Ok(Outcome::AboutJob(id, data)) => Response::ok(rid, Some(id), data),
            Ok(Outcome::Job(plan)) => match self.submit(plan, rid.clone()) {
                Ok(record) => {
                    let data = serde_json::to_value(&record).unwrap_or(Value::Null);
                    Response::ok(rid, Some(record.job_id), data)
                }
                Err(e) => Response::error(rid, e),
            },
            Err(e) => Response::error(rid, e),
        }
    }

    fn submit(
        &self,
        plan: JobPlan,
        rid: Option<RequestId>,
    ) -> Result<crate::jobs::JobRecord, ApiError> {
        let spec = JobSpec {
            command: plan.name,
            locks: plan.locks,
            repository: plan.repository,
            request_id: rid,
            timeout: self.settings.jobs.timeout_for(plan.name.as_str()),
            task: plan.task,
            secrets: plan.scrub,
            bypass_limit: plan.bypass_limit,
        };
        self.engine.submit(spec).map_err(submit_error)
    }
}

/// The one mapping of a refused submission to a wire error.
fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Busy { what, job_id } => ApiError::new(
            ErrorCode::Busy,
            format!("{what} already has a running job {job_id}"),
        )
        .with_data(json!({ "job_id": job_id })),
        e @ SubmitError::QueueFull { .. } => ApiError::new(ErrorCode::Busy, e.to_string()),
        SubmitError::ShuttingDown => {
            ApiError::new(ErrorCode::Unavailable, "the worker is shutting down")
        }
    }
}

impl crate::commands::AuditTrail for audit::Audit {
    fn last_records(&self, limit: usize) -> Value {
        serde_json::to_value(self.last(limit)).unwrap_or(Value::Null)
    }
}

/// What the audit trail learns while a request is handled.
#[derive(Default)]
struct Seen {
    role: Option<Role>,
    repository: Option<String>,
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

impl Response {
    /// Makes sure the answer echoes the request's id (a replayed answer already does).
    fn with_request_id(mut self, rid: Option<RequestId>) -> Self {
        if self.request_id.is_none() {
            self.request_id = rid;
        }
        self
    }
}
