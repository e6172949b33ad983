//! [`Secret`] lives in the domain core; re-exported here, where settings hold it.
//!
//! Imports `domain` only.

pub use crate::domain::Secret;
