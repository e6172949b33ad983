//! What every fields struct shares: parsing through serde, its own checks, the
//! role and repository it implies, and its schema for the OpenAPI document.
//!
//! May import: `domain`.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::response::ApiError;
use crate::domain::{RepositoryLabel, Role};

/// A command's fields, already valid once parsed.
pub trait Fields: std::fmt::Debug {
    /// Checks that span fields (serde has checked each one).
    fn check(&self) -> Result<(), ApiError> {
        Ok(())
    }
    /// The repository a job of this command holds exclusively, if any.
    fn repository(&self) -> Option<&RepositoryLabel> {
        None
    }
    /// The role these fields need, given the command's.
    fn role(&self, base: Role) -> Role {
        base
    }
    /// Its JSON schema (an open object where none is written yet).
    fn schema() -> Schema
    where
        Self: Sized,
    {
        Schema(json!({ "type": "object" }))
    }
}

/// A JSON schema of a fields struct.
pub struct Schema(pub Value);

impl Schema {
    /// The schema as a JSON value.
    pub fn into_json(self) -> Value {
        self.0
    }
}

/// serde (unknown fields, wrong types and bad values refused), then [`Fields::check`].
pub(super) fn parse<T: DeserializeOwned + Fields>(v: Value) -> Result<T, ApiError> {
    let fields: T = serde_json::from_value(v).map_err(|e| ApiError::invalid(e.to_string()))?;
    fields.check()?;
    Ok(fields)
}

/// Commands without fields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

impl Fields for NoFields {
    fn schema() -> Schema {
        Schema(json!({ "type": "object", "additionalProperties": false, "properties": {} }))
    }
}

/// `impl Fields` for structs whose `repository` field is the one the job holds.
macro_rules! on_repository {
    ($($t:ty),*) => {$(
        impl $crate::commands::Fields for $t {
            fn repository(&self) -> Option<&$crate::domain::RepositoryLabel> {
                Some(&self.repository)
            }
        }
    )*};
}
pub(super) use on_repository;

/// `serde(default = "yes")`.
pub(super) fn yes() -> bool {
    true
}
