//! The job views and the audit trail: `job/get`, `job/list`, `job/cancel`,
//! `audit/list` (admin).
//!
//! May import: `domain`, `jobs`.

use serde::Deserialize;
use serde_json::json;

use super::context::{to_value, Ctx, Outcome};
use super::response::{ApiError, ErrorCode};
use super::Fields;
use crate::domain::{JobId, JobState};
use crate::jobs::CancelReason;

/// Default and maximum of a list's `limit`.
const LIST_DEFAULT: usize = 50;
const LIST_MAX: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    pub job_id: JobId,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListFilter {
    #[serde(default)]
    pub state: Option<JobState>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `audit/list` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditList {
    #[serde(default)]
    pub limit: Option<u32>,
}

impl Fields for JobRef {}
impl Fields for ListFilter {}
impl Fields for AuditList {}

fn limit(asked: Option<u32>) -> usize {
    asked
        .map(|l| (l as usize).min(LIST_MAX))
        .unwrap_or(LIST_DEFAULT)
}

fn no_job(id: JobId) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no job {id}"))
}

pub(super) async fn get(ctx: &Ctx<'_>, c: JobRef) -> Result<Outcome, ApiError> {
    let data = match ctx.engine.result(c.job_id) {
        Some(result) => to_value(&result),
        None => to_value(&ctx.engine.get(c.job_id).ok_or_else(|| no_job(c.job_id))?),
    };
    Ok(Outcome::AboutJob(c.job_id, data))
}

pub(super) async fn list(ctx: &Ctx<'_>, f: ListFilter) -> Result<Outcome, ApiError> {
    let jobs = ctx.engine.list(f.state, limit(f.limit));
    Ok(Outcome::Answer(json!({ "jobs": jobs })))
}

pub(super) async fn cancel(ctx: &Ctx<'_>, c: JobRef) -> Result<Outcome, ApiError> {
    let rec = ctx
        .engine
        .cancel(c.job_id, CancelReason::User)
        .map_err(|_| no_job(c.job_id))?;
    Ok(Outcome::AboutJob(c.job_id, to_value(&rec)))
}

pub(super) async fn audit_list(ctx: &Ctx<'_>, a: AuditList) -> Result<Outcome, ApiError> {
    let records = ctx.audit.last_records(limit(a.limit));
    Ok(Outcome::Answer(json!({ "records": records })))
}
