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

use serde_json::Value;

use crate::auth::{Role, Tokens};
use crate::command::{
    ApiError, Command, CommandName, Envelope, ErrorCode, RepositoryLabel, RequestId, RequestLimits,
    Response,
};
use crate::commands::RequestSecrets;
use crate::config::Settings;
use crate::docker::Engine;
use crate::exec::borgmatic::{Borgmatic, Version};
use crate::exec::policy::ExecPolicy;
use crate::jobs::JobEngine;

pub mod audit;
mod background;
mod dedup;
mod execute;
mod gate;
mod info;
mod limits;
mod press;
mod request;

pub use audit::AuditRecord;
pub use background::BackgroundError;
pub use info::{DockerInfo, Info};
pub use request::{Request, Transport};

/// How long a request id is remembered.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(600);

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
    /// The pipeline, with the exec policy, rate limits, audit trail and dedup made from `settings`.
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

    /// The job engine the service submits to.
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
        self.account(req.transport, req.client, req.command, seen, &resp);
        resp
    }

    /// Counts an answered request in the metrics and writes it to the audit trail.
    fn account(
        &self,
        transport: Transport,
        client: Option<&str>,
        command: &str,
        seen: Seen,
        resp: &Response,
    ) {
        let outcome = resp.error_code().map(ErrorCode::as_str).unwrap_or("ok");
        crate::metrics::request(transport.as_str(), outcome);
        if resp.error_code() == Some(ErrorCode::RateLimited) {
            crate::metrics::rate_limited(transport.as_str());
        }
        self.audit.append(&AuditRecord {
            at: chrono::Utc::now(),
            transport: transport.as_str().into(),
            role: seen.role.map(|r| r.as_str().to_string()),
            client: client.map(str::to_string),
            command: match CommandName::parse(command) {
                Some(name) => name.as_str().to_string(),
                None => crate::command::shorten(command)
                    .trim_matches('"')
                    .to_string(),
            },
            repository: seen.repository.map(|r| crate::redact::scrub(&r)),
            outcome: outcome.into(),
            job_id: resp.job_id.map(|j| j.to_string()),
            request_id: resp.request_id.as_ref().map(|r| r.as_str().to_string()),
        });
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

    async fn handle_envelope(
        &self,
        req: &Request<'_>,
        envelope: Envelope,
        seen: &mut Seen,
    ) -> Result<Response, Response> {
        let rid = envelope.request_id.clone();
        let fail = |e: ApiError| Response::error(rid.clone(), e);
        let (name, role) = self
            .admit(req, envelope.token.as_deref(), &mut seen.role)
            .map_err(fail)?;
        let secrets = RequestSecrets {
            borg: envelope.borg_passphrase,
            ssh: envelope.ssh_passphrase,
        };
        self.secrets_allowed(&secrets).map_err(fail)?;
        let principal = format!(
            "{}:{}:{}",
            req.transport.as_str(),
            role.as_str(),
            req.client.unwrap_or("-")
        );
        let ticket = match rid.clone() {
            None => None,
            Some(id) => {
                let key = dedup::Key {
                    principal: principal.clone(),
                    command: name,
                    id,
                };
                let body = self.body_hash(&envelope.fields, &secrets, envelope.timeout_secs);
                match self.dedup.claim(key, body).await {
                    dedup::Claim::Run(t) => Some(t),
                    dedup::Claim::Replay(resp) => {
                        tracing::debug!("duplicate request answered again");
                        return Ok(resp);
                    }
                    dedup::Claim::Reused => return Err(fail(gate::reused(name))),
                    dedup::Claim::Forgotten => return Err(fail(gate::forgotten())),
                }
            }
        };
        self.rate_limit(name, &principal).map_err(fail)?;
        let parsed = self
            .job_timeout(name, envelope.timeout_secs)
            .and_then(|t| Ok((Command::parse(name, envelope.fields)?, t)));
        let resp = match parsed {
            Ok((cmd, _)) if role < cmd.role() => fail(gate::forbidden(name, cmd.role(), role)),
            Ok((cmd, timeout)) => self.execute(cmd, rid.clone(), secrets, timeout, role).await,
            Err(e) => fail(e),
        };
        if let Some(t) = ticket {
            t.finish(&resp);
        }
        Ok(resp)
    }

    /// What identifies a request's content for [`dedup`]: its fields, its
    /// `timeout_secs` and whether (and which) secrets came along, never the token.
    fn body_hash(
        &self,
        fields: &serde_json::Map<String, Value>,
        secrets: &RequestSecrets,
        timeout_secs: Option<u64>,
    ) -> u64 {
        let mut bytes = serde_json::to_vec(fields).unwrap_or_default();
        if let Some(t) = timeout_secs {
            bytes.extend_from_slice(format!("\0timeout_secs={t}").as_bytes());
        }
        for s in [&secrets.borg, &secrets.ssh] {
            bytes.push(0);
            if let Some(s) = s {
                bytes.extend_from_slice(s.expose().as_bytes());
            }
        }
        self.dedup.hash(&bytes)
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

impl Response {
    /// Makes sure the answer echoes the request's id (a replayed answer already does).
    fn with_request_id(mut self, rid: Option<RequestId>) -> Self {
        if self.request_id.is_none() {
            self.request_id = rid;
        }
        self
    }
}
