//! The wire edge of the command model: a request's envelope (split from its
//! fields, bounded before parsing); re-exports the response every request gets.
//!
//! The command table and handlers are in [`crate::commands`], the value types in
//! [`crate::domain`]; both are re-exported here so `crate::command::X` keeps
//! working for the transports and executors. May import: `domain`, `commands`
//! (re-export only), `redact` (quoting).

use serde_json::{Map, Value};

pub use crate::commands::{
    ApiError, ArchiveSource, Command, CommandName, ErrorBody, ErrorCode, Kind, Response, Status,
};
pub use crate::domain::{
    validate_topic_base, ArchiveName, ArchivePath, ContainerName, ExecArgv, FieldError, HostName,
    JobId, KeyName, NewPassphrase, RepositoryLabel, RequestId, SubPath,
};

/// Quotes a client value for an error message: a short printable prefix, never a
/// configured secret (see [`crate::redact::quote`]).
pub(crate) fn shorten(s: &str) -> String {
    crate::redact::quote(s)
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid(e.0)
    }
}

/// The envelope of a request: what every command shares, split from its own fields.
#[derive(Debug)]
pub struct Envelope {
    /// The request's own id (`request_id`), echoed in the answer and used to drop duplicates.
    pub request_id: Option<RequestId>,
    /// The token in the body (`token`); it wins over one presented outside the body.
    pub token: Option<String>,
    /// Per-request secrets, honoured only with `auth.allow_request_secrets`.
    pub borg_passphrase: Option<crate::domain::Secret>,
    /// The SSH key passphrase for this request, honoured only with `auth.allow_request_secrets`.
    pub ssh_passphrase: Option<crate::domain::Secret>,
    /// A job's own timeout in seconds (`timeout_secs`), at least 1; the service
    /// bounds it by the command's configured timeout.
    pub timeout_secs: Option<u64>,
    /// Everything else in the body: the command's own fields.
    pub fields: Map<String, Value>,
}

/// Bounds checked on a request's raw bytes before any JSON value is built, so an
/// unauthenticated client cannot make the worker allocate more than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest request body, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects.
    pub max_depth: usize,
}

impl RequestLimits {
    /// `Err` with a message when `body` is too large or nested too deeply.
    pub fn check(&self, body: &[u8]) -> Result<(), ApiError> {
        if body.len() > self.max_bytes {
            return Err(ApiError::invalid(format!(
                "the request is {} bytes; at most {} are accepted (limits.max_request_bytes)",
                body.len(),
                self.max_bytes
            )));
        }
        if nesting_exceeds(body, self.max_depth) {
            return Err(ApiError::invalid(format!(
                "the request nests arrays and objects deeper than {} levels (limits.max_request_depth)",
                self.max_depth
            )));
        }
        Ok(())
    }
}

/// Whether `[`/`{` nest deeper than `max` outside JSON strings. A linear scan
/// without allocation; malformed JSON is left to the parser.
fn nesting_exceeds(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl Envelope {
    /// Splits a JSON body. An empty body is an empty object (commands without fields).
    /// On error the request id is still returned when it could be read, so the answer
    /// can echo it. `limits` are checked on the raw bytes first: an oversize or deeply
    /// nested body is refused before anything is parsed.
    pub fn parse(
        body: &[u8],
        limits: &RequestLimits,
    ) -> Result<Envelope, (Option<RequestId>, ApiError)> {
        limits.check(body).map_err(|e| (None, e))?;
        let trimmed = body.iter().all(|b| b.is_ascii_whitespace());
        let value: Value = if trimmed {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(body)
                .map_err(|e| (None, ApiError::invalid(format!("malformed JSON: {e}"))))?
        };
        let Value::Object(mut fields) = value else {
            return Err((None, ApiError::invalid("the request must be a JSON object")));
        };
        let request_id = match fields.remove("request_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(RequestId::parse(&s).map_err(|e| (None, ApiError::invalid(e.0)))?)
            }
            Some(_) => {
                return Err((None, ApiError::invalid("request_id must be a string")));
            }
        };
        let token = match fields.remove("token") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                return Err((request_id, ApiError::invalid("token must be a string")));
            }
        };
        let mut secret = |name: &str| match fields.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && !s.chars().any(|c| c.is_control()) => {
                Ok(Some(crate::domain::Secret::new(s)))
            }
            Some(_) => Err(ApiError::invalid(format!(
                "{name} must be a non-empty string without control characters"
            ))),
        };
        let borg_passphrase = secret("borg_passphrase").map_err(|e| (request_id.clone(), e))?;
        let ssh_passphrase = secret("ssh_passphrase").map_err(|e| (request_id.clone(), e))?;
        let timeout_secs = match fields.remove("timeout_secs") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Some(n),
                _ => {
                    return Err((
                        request_id,
                        ApiError::invalid(
                            "timeout_secs must be a whole number of seconds, at least 1",
                        ),
                    ))
                }
            },
        };
        Ok(Envelope {
            request_id,
            token,
            borg_passphrase,
            ssh_passphrase,
            timeout_secs,
            fields,
        })
    }
}

#[cfg(test)]
mod tests;
