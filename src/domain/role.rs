//! What a caller may do.
//!
//! Imports nothing outside `domain`.

/// `Read` < `Write` < `Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: lists, info, job views.
    Read,
    /// Reads plus backups, restores, mounts, checks, pruning and allowed container execs.
    Write,
    /// Everything: also breaking locks, passphrase and SSH key changes,
    /// `emergency/stop`, the audit trail.
    Admin,
}

impl Role {
    /// The wire name (`read`, `write`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
        assert_eq!(Role::Admin.as_str(), "admin");
    }
}
