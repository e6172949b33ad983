//! The wire response and the error codes: one mapping, shared by every transport.
//! Lives with the commands (their handlers refuse with [`ApiError`]); re-exported
//! by [`crate::command`]. May import: `domain`, `redact`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{JobId, RequestId};

/// The spec's error codes. HTTP maps each to one status code here too, so the two
/// transports cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No token, or one that is not configured.
    Unauthorized,
    /// The token's role is too low for the command (or admin is not enabled).
    Forbidden,
    /// The request could not be read, or a field or value is refused.
    Invalid,
    /// No such repository or job.
    NotFound,
    /// The repository already has an active job, or a queue is full.
    Busy,
    /// What the command would create already exists (`repo/create`); retrying
    /// cannot help, unlike `busy`.
    Conflict,
    /// The principal's quota for this class of command is used up.
    RateLimited,
    /// Something the command needs is missing or stopping (Docker, FUSE, the store, shutdown).
    Unavailable,
    /// A bug: the message says what failed.
    Internal,
}

impl ErrorCode {
    /// The wire name (`not_found`, …), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Invalid => "invalid",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Busy => "busy",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status of this code (the sidecar answers with it).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Invalid => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Busy | ErrorCode::Conflict => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// A refusal: its code, a message safe to show a client, and optional data
/// (`busy` names the running job).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    /// What kind of refusal this is; decides the HTTP status too.
    pub code: ErrorCode,
    /// Shown to the client; scrubbed of secrets when the response is built.
    pub message: String,
    /// Extra facts for the client, e.g. the `job_id` a `busy` refusal names.
    pub data: Option<Value>,
}

impl ApiError {
    /// A refusal with `code` and a client-safe message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }
    /// An `invalid` refusal: the request's fields or values are wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }
    /// Attaches data the client can act on (it becomes the response's `data`).
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// The `error` object of an error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error code.
    pub code: ErrorCode,
    /// What went wrong, with configured secrets masked.
    pub message: String,
}

/// Whether a request was accepted (`ok`) or refused (`error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted: `data` (and `job_id` for a job) hold the answer.
    Ok,
    /// Refused: `error` says why.
    Error,
}

/// Exactly one of these answers every request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// `ok` or `error`.
    pub status: Status,
    /// The request's own id, echoed so a client can match the answer; `null` when it had none.
    pub request_id: Option<RequestId>,
    /// The job started by the request, if it started one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// The command's result, or facts about a refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Why the request was refused; absent on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    /// An accepted request's answer.
    pub fn ok(request_id: Option<RequestId>, job_id: Option<JobId>, data: Value) -> Self {
        Self {
            status: Status::Ok,
            request_id,
            job_id,
            data: Some(data),
            error: None,
        }
    }

    /// Every refusal of both transports is built here, so this is where a
    /// configured secret that reached an error message is masked.
    pub fn error(request_id: Option<RequestId>, err: ApiError) -> Self {
        Self {
            status: Status::Error,
            request_id,
            job_id: None,
            data: err.data,
            error: Some(ErrorBody {
                code: err.code,
                message: crate::redact::scrub(&err.message),
            }),
        }
    }

    /// The error code, when this is an error response.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|e| e.code)
    }

    /// The response as JSON bytes, ready to publish or send.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain data cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{\"status\":\"error\"}".to_vec())
    }
}
