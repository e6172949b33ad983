//! The domain core: validated value types, ids, job states, roles and secrets.
//!
//! Owns every newtype whose only constructor validates (z2p's `SubscriberName`
//! pattern), so a value of the type is known to be safe in an argv, a path or a
//! topic. May import nothing of the crate (checked by `scripts/import-cycles`):
//! everything else depends on it, it depends on nothing.

mod archive;
mod container;
mod encryption;
mod field_error;
mod ids;
mod job_state;
mod mount;
mod names;
mod passphrase;
mod paths;
mod quote;
mod role;
mod secret;

pub use archive::ArchiveName;
pub use container::{exec_env, ContainerName, ExecArgv};
pub use encryption::EncryptionMode;
pub use field_error::FieldError;
pub use ids::{JobId, RequestId};
pub use job_state::JobState;
pub use mount::{MountOptions, OwnerId, Umask};
pub use names::{validate_topic_base, DatabaseName, HostName, KeyName, RepositoryLabel};
pub use passphrase::NewPassphrase;
pub use paths::{ArchivePath, RestrictPath, RootPath, SubPath};
pub use quote::{install_secret_probe, quote};
pub use role::Role;
pub use secret::Secret;

/// Whether `s` could be read as something other than itself where it is passed as
/// one argv element: an option (`-…`, also after leading blanks), a control
/// character (NUL ends a C string, a newline starts a new log line or command).
fn argv_safe(s: &str) -> bool {
    !s.starts_with('-') && !s.starts_with(char::is_whitespace) && !s.chars().any(char::is_control)
}

fn printable(s: &str) -> bool {
    !s.chars().any(|c| c.is_control())
}

/// `TryFrom<String>` through `parse` and `From<T> for String`, for serde's
/// `try_from`/`into`.
macro_rules! string_newtype_conversions {
    ($($t:ident),*) => {$(
        impl TryFrom<String> for $t {
            type Error = $crate::domain::FieldError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    )*};
}
pub(crate) use string_newtype_conversions;
