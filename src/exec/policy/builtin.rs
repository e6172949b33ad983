//! The built-in rules: what Nextcloud AIO needs, `daily-backup.sh` with the flag
//! combinations of the `aio/*` commands (each with the role it needs) and
//! `/healthcheck.sh`. Data, and the constructor that turns it into rules.
//!
//! May import: `domain`.

use std::collections::BTreeMap;

use super::{strings, ExecPolicy, Rule, Source};
use crate::domain::Role;

/// AIO's `daily-backup.sh` flags; every built-in rule for it sets all five.
pub const AIO_FLAGS: [&str; 5] = [
    "DAILY_BACKUP",
    "CHECK_BACKUP",
    "STOP_CONTAINERS",
    "START_CONTAINERS",
    "AUTOMATIC_UPDATES",
];

/// The built-in rules for `daily-backup.sh`: name, role, and the values allowed
/// for each of [`AIO_FLAGS`] (in that order). The script stops the containers on
/// every run that is not a check, and starts them again only with
/// `START_CONTAINERS=1` or `AUTOMATIC_UPDATES=1`: a run that leaves them stopped is
/// what `aio/stop` does, so it needs the admin role.
const AIO_DAILY_BACKUP: &[(&str, Role, [&[&str]; 5])] = &[
    (
        "aio-backup",
        Role::Write,
        [&["1"], &["0"], &["0", "1"], &["1"], &["0", "1"]],
    ),
    (
        "aio-backup-then-update",
        Role::Write,
        [&["1"], &["0"], &["0", "1"], &["0"], &["1"]],
    ),
    (
        "aio-check",
        Role::Write,
        [&["0"], &["1"], &["0"], &["0", "1"], &["0", "1"]],
    ),
    (
        "aio-start",
        Role::Write,
        [&["0"], &["0"], &["0"], &["1"], &["0", "1"]],
    ),
    (
        "aio-backup-leave-stopped",
        Role::Admin,
        [&["1"], &["0"], &["0", "1"], &["0"], &["0"]],
    ),
    (
        "aio-stop",
        Role::Admin,
        [&["0"], &["0"], &["0", "1"], &["0"], &["0"]],
    ),
];

impl ExecPolicy {
    /// What Nextcloud AIO needs: `/daily-backup.sh` with the flag combinations of
    /// the `aio/*` commands (each with its role), and `/healthcheck.sh`.
    pub fn builtin(mastercontainer: &str) -> Self {
        let mut rules: Vec<Rule> = AIO_DAILY_BACKUP
            .iter()
            .map(|(name, role, values)| Rule {
                name: name.to_string(),
                source: Source::BuiltIn,
                container: mastercontainer.into(),
                argv: strings(&["/daily-backup.sh"]),
                role: *role,
                env: AIO_FLAGS
                    .iter()
                    .zip(values)
                    .map(|(k, v)| (k.to_string(), strings(v)))
                    .collect(),
            })
            .collect();
        rules.push(Rule {
            name: "aio-healthcheck".into(),
            source: Source::BuiltIn,
            container: mastercontainer.into(),
            argv: strings(&["/healthcheck.sh"]),
            role: Role::Read,
            env: BTreeMap::new(),
        });
        Self { rules, file: None }
    }
}
