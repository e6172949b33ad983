//! The transport-agnostic request handler: a raw request (command name, body, how
//! it arrived) in, exactly one [`Response`] out. MQTT and HTTP are thin adapters
//! around [`Service::handle`].
//!
//! Order of checks: JSON envelope → retained → token → command name → role →
//! duplicate request id → fields → state (repository exists, not busy).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth::{Role, Tokens};
use crate::command::{
    ApiError, Command, CommandName, Envelope, ErrorCode, JobId, RequestId, Response,
};
use crate::config::Settings;
use crate::exec::borgmatic::{Borgmatic, Version};
use crate::jobs::{CancelReason, JobEngine, JobSpec, SubmitError, Task};

/// How long a request id is remembered.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// Most request ids remembered at once (oldest forgotten first).
const DEDUP_MAX: usize = 10_000;
/// Default and maximum of `job/list`'s `limit`.
const LIST_DEFAULT: usize = 50;
const LIST_MAX: usize = 1_000;

/// How a request arrived; the adapters fill it in.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `group/action`.
    pub command: &'a str,
    pub body: &'a [u8],
    /// MQTT retain flag; always false over HTTP.
    pub retained: bool,
    /// A token presented outside the body (MQTT v5 user property, HTTP header).
    pub bearer: Option<&'a str>,
}

#[derive(Default)]
struct Dedup {
    seen: HashMap<(CommandName, RequestId), (Instant, Response)>,
    order: VecDeque<(Instant, (CommandName, RequestId))>,
}

impl Dedup {
    fn prune(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front() {
            if now.duration_since(*at) < DEDUP_WINDOW && self.order.len() <= DEDUP_MAX {
                break;
            }
            if let Some((at2, _)) = self.seen.get(key) {
                if at2 == at {
                    self.seen.remove(key);
                }
            }
            self.order.pop_front();
        }
    }
}

/// Everything a request may touch.
pub struct Service {
    settings: Arc<Settings>,
    tokens: Tokens,
    engine: JobEngine,
    borgmatic: Borgmatic,
    borgmatic_version: Version,
    /// Held from the duplicate check to recording the answer, so two copies of one
    /// request (QoS 1 redelivery) cannot both start a job.
    dedup: tokio::sync::Mutex<Dedup>,
}

impl Service {
    pub fn new(
        settings: Arc<Settings>,
        tokens: Tokens,
        engine: JobEngine,
        borgmatic_version: Version,
    ) -> Self {
        Self {
            borgmatic: Borgmatic::new(settings.clone()),
            settings,
            tokens,
            engine,
            borgmatic_version,
            dedup: tokio::sync::Mutex::new(Dedup::default()),
        }
    }

    pub fn engine(&self) -> &JobEngine {
        &self.engine
    }

    /// The retained `<base>/info` document.
    pub fn info(&self) -> Value {
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

    /// Answers one request. Never panics on client input; always one response.
    pub async fn handle(&self, req: Request<'_>) -> Response {
        let envelope = match Envelope::parse(req.body) {
            Ok(e) => e,
            Err((rid, err)) => return Response::error(rid, err),
        };
        let rid = envelope.request_id.clone();
        match self.handle_envelope(&req, envelope).await {
            Ok(resp) | Err(resp) => resp,
        }
        .with_request_id(rid)
    }

    async fn handle_envelope(
        &self,
        req: &Request<'_>,
        envelope: Envelope,
    ) -> Result<Response, Response> {
        let rid = envelope.request_id.clone();
        let fail = |e: ApiError| Response::error(rid.clone(), e);
        if req.retained {
            return Err(fail(ApiError::invalid(
                "retained requests are refused and never run; publish commands with retain=false",
            )));
        }
        let token = envelope.token.as_deref().or(req.bearer);
        let Some(token) = token else {
            return Err(fail(ApiError::new(
                ErrorCode::Unauthorized,
                "missing token: put it in the `token` field or send `authorization: Bearer <token>`",
            )));
        };
        let Some(role) = self.tokens.authenticate(token) else {
            return Err(fail(ApiError::new(
                ErrorCode::Unauthorized,
                "unknown token",
            )));
        };
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
            return Err(fail(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "{name} needs the {} role; this token has the {} role",
                    name.role().as_str(),
                    role.as_str()
                ),
            )));
        }

        let mut dedup = self.dedup.lock().await;
        let now = Instant::now();
        dedup.prune(now);
        if let Some(r) = &rid {
            if let Some((_, resp)) = dedup.seen.get(&(name, r.clone())) {
                tracing::debug!(request_id = r.as_str(), "duplicate request answered again");
                return Ok(resp.clone());
            }
        }
        let resp = match Command::parse(name, envelope.fields) {
            Ok(cmd) => self.execute(cmd, rid.clone()),
            Err(e) => fail(e),
        };
        if let Some(r) = rid {
            dedup.seen.insert((name, r.clone()), (now, resp.clone()));
            dedup.order.push_back((now, (name, r)));
        }
        Ok(resp)
    }

    fn execute(&self, cmd: Command, rid: Option<RequestId>) -> Response {
        match self.try_execute(cmd, rid.clone()) {
            Ok(resp) => resp,
            Err(e) => Response::error(rid, e),
        }
    }

    fn try_execute(&self, cmd: Command, rid: Option<RequestId>) -> Result<Response, ApiError> {
        let name = cmd.name();
        match cmd {
            Command::BackupRun(c) => {
                let repo = self.repository(&c.repository)?;
                let task = self.borgmatic.backup(&repo, &c);
                self.submit(name, Some(c.repository), rid, Box::new(task))
            }
            Command::ArchiveList(c) => {
                let repo = self.repository(&c.repository)?;
                let task = self.borgmatic.archive_list(&repo, &c);
                self.submit(name, Some(c.repository), rid, Box::new(task))
            }
            Command::JobGet(c) => {
                let data = match self.engine.result(c.job_id) {
                    Some(result) => to_value(&result),
                    None => to_value(&self.engine.get(c.job_id).ok_or_else(|| no_job(c.job_id))?),
                };
                Ok(Response::ok(rid, Some(c.job_id), data))
            }
            Command::JobList(f) => {
                let limit = f
                    .limit
                    .map(|l| (l as usize).min(LIST_MAX))
                    .unwrap_or(LIST_DEFAULT);
                let jobs = self.engine.list(f.state, limit);
                Ok(Response::ok(rid, None, json!({ "jobs": jobs })))
            }
            Command::JobCancel(c) => {
                let rec = self
                    .engine
                    .cancel(c.job_id, CancelReason::User)
                    .map_err(|_| no_job(c.job_id))?;
                Ok(Response::ok(rid, Some(c.job_id), to_value(&rec)))
            }
        }
    }

    fn repository(
        &self,
        label: &crate::command::RepositoryLabel,
    ) -> Result<crate::exec::borgmatic::Repository, ApiError> {
        self.borgmatic.repository(label).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no repository {label}: there is no {label}.yaml in the borgmatic config directory"),
            )
        })
    }

    fn submit(
        &self,
        name: CommandName,
        repository: Option<crate::command::RepositoryLabel>,
        rid: Option<RequestId>,
        task: Box<dyn Task>,
    ) -> Result<Response, ApiError> {
        let spec = JobSpec {
            command: name,
            repository,
            request_id: rid.clone(),
            timeout: self.settings.jobs.timeout_for(name.as_str()),
            task,
        };
        match self.engine.submit(spec) {
            Ok(record) => Ok(Response::ok(rid, Some(record.job_id), to_value(&record))),
            Err(SubmitError::Busy { repository, job_id }) => Err(ApiError::new(
                ErrorCode::Busy,
                format!("repository {repository} already has a running job {job_id}"),
            )
            .with_data(json!({ "job_id": job_id }))),
            Err(SubmitError::ShuttingDown) => Err(ApiError::new(
                ErrorCode::Unavailable,
                "the worker is shutting down",
            )),
        }
    }
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
