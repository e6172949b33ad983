//! Why a field value was refused.
//!
//! Imports nothing outside `domain`.

/// Becomes an `invalid` answer naming the field. Its text quotes a client value
/// only through [`super::quote`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldError(pub String);
