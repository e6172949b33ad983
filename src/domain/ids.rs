//! Identifiers: a client's request id and the worker's job id.
//!
//! Imports nothing outside `domain`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{quote, FieldError};

/// A client's request id: at most 64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

impl RequestId {
    /// The id, if it is 1 to 64 printable ASCII characters.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Err(FieldError(
                "request_id must be 1 to 64 printable ASCII characters".into(),
            ));
        }
        Ok(Self(s.to_string()))
    }
    /// The id as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

super::string_newtype_conversions!(RequestId);

/// A job id: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(uuid::Uuid);

impl JobId {
    /// A fresh id (UUID v7: later jobs sort after earlier ones).
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
    /// The id, if `s` is a UUID.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| FieldError(format!("job_id is not a UUID: {}", quote(s))))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl TryFrom<String> for JobId {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<JobId> for String {
    fn from(j: JobId) -> String {
        j.0.to_string()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_and_printable() {
        assert!(RequestId::parse("nr-42").is_ok());
        assert!(RequestId::parse("").is_err());
        assert!(RequestId::parse(&"x".repeat(65)).is_err());
        assert!(RequestId::parse("a\nb").is_err());
    }

    #[test]
    fn job_ids_are_v7_and_round_trip() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b, "v7 ids sort by time");
        assert_eq!(JobId::parse(&a.to_string()).unwrap(), a);
        assert!(JobId::parse("not-a-uuid").is_err());
    }
}
