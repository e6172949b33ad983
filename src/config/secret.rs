//! [`Secret`] lives in the domain core; re-exported here, where settings hold it.

pub use crate::domain::Secret;
