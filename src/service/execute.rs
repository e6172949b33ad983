//! The end of the pipeline: a parsed, allowed command runs its handler, and a job
//! plan becomes a submitted job with its bounded timeout. Refused submissions are
//! mapped to wire codes here, in one place.

use std::time::Duration;

use serde_json::{json, Value};

use super::Service;
use crate::command::{ApiError, Command, CommandName, ErrorCode, Kind, RequestId, Response};
use crate::commands::{Ctx, JobPlan, Outcome, RequestSecrets};
use crate::domain::Role;
use crate::jobs::{JobSpec, SubmitError};

impl Service {
    /// The request's own job timeout (`timeout_secs`), checked against the
    /// command: only job commands take one, and never more than the command's
    /// configured timeout (`jobs.timeouts`, else `jobs.default_timeout_secs`).
    pub(super) fn job_timeout(
        &self,
        name: CommandName,
        timeout_secs: Option<u64>,
    ) -> Result<Option<Duration>, ApiError> {
        let Some(secs) = timeout_secs else {
            return Ok(None);
        };
        if name.kind() != Kind::Job {
            return Err(ApiError::invalid(format!(
                "{name} answers at once and takes no timeout_secs"
            )));
        }
        let max = self.settings.jobs.timeout_for(name.as_str()).as_secs();
        if secs > max {
            return Err(ApiError::invalid(format!(
                "timeout_secs {secs} exceeds the maximum of {max} for {name} (jobs.timeouts or jobs.default_timeout_secs)"
            )));
        }
        Ok(Some(Duration::from_secs(secs)))
    }

    /// Runs the command's handler and turns its outcome into the answer: the data,
    /// or the submitted job's record. `timeout` is the request's own, already
    /// bounded by [`Service::job_timeout`].
    pub(super) async fn execute(
        &self,
        cmd: Command,
        rid: Option<RequestId>,
        secrets: RequestSecrets,
        timeout: Option<Duration>,
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
            Ok(Outcome::Job(plan)) => match self.submit(plan, rid.clone(), timeout) {
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
        timeout: Option<Duration>,
    ) -> Result<crate::jobs::JobRecord, ApiError> {
        // The plan's command may differ from the request's; its maximum holds too.
        let max = self.settings.jobs.timeout_for(plan.name.as_str());
        let spec = JobSpec {
            command: plan.name.as_str(),
            role: plan.name.role(),
            locks: plan.locks,
            repository: plan.repository,
            request_id: rid,
            timeout: timeout.map_or(max, |t| t.min(max)),
            task: plan.task,
            secrets: plan.scrub,
            bypass_limit: plan.bypass_limit,
            background: false,
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
        // The disk problem is named (full, read-only), never a path or an errno.
        e @ SubmitError::Storage(_) => ApiError::new(ErrorCode::Unavailable, e.to_string()),
    }
}
