//! The exec policy: which `docker exec` requests may run, and which role each needs.
//!
//! A request runs only if an allow rule names its container, its *exact* argv (no
//! prefix, no substring, no shell) and its *exact* env: every name the rule lists
//! set, to one of the values the rule lists, and no other name. Values matter as
//! much as names: AIO's `daily-backup.sh` with `DAILY_BACKUP=0 STOP_CONTAINERS=1`
//! is `aio/stop`, so each rule says the role it needs, and the built-in AIO rules
//! give the write role only combinations that end with Nextcloud running. An unset
//! name is not "off": an exec inherits the container's own environment.
//!
//! On top, the deny-list ([`super::deny`]) no rule can override.
//!
//! The predecessor's mistakes are the tests: a substring rule that blocked
//! `/daily-backup.sh` for containing `sh`, a prefix rule that let extra arguments
//! through, env names checked without their values.
//!
//! May import: `domain`, `config`, `redact` (quoting) and the sibling `deny`; runs
//! nothing.

//!
//! # Layout
//! - `rules`: one allow [`Rule`] and how its env is matched.
//! - `builtin`: the AIO rules every worker has.
//! - `file`: reading and checking the operator's policy file.
//! - here: [`ExecPolicy::decide`], the decision, and [`PolicyError`].
//!
//! Imports of the crate: `auth::Role`, `command`'s value types, `config`'s Docker
//! settings and the deny-list; nothing that runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::deny::{self, DenyHit};
use crate::redact::quote as shorten;

mod builtin;
mod file;
mod rules;
#[cfg(test)]
mod tests;

pub use builtin::AIO_FLAGS;
pub use rules::{Rule, Source};

/// Longest env value accepted.
pub const MAX_ENV_VALUE: usize = 256;

/// The effective policy: the built-in AIO rules plus the file's rules.
#[derive(Debug, Clone)]
pub struct ExecPolicy {
    pub(super) rules: Vec<Rule>,
    pub(super) file: Option<PathBuf>,
}

/// Why a request was refused (shown to the client; never contains env values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The argv is empty.
    #[error("the command must not be empty")]
    Empty,
    /// The deny list refuses an element of the argv; no rule can allow it.
    #[error("{0}")]
    Denied(DenyHit),
    /// An env value is not printable or too long (the name is quoted, never the value).
    #[error("env {0} must be printable and at most {MAX_ENV_VALUE} characters")]
    EnvValue(String),
    /// No rule names this container with exactly this argv.
    #[error("no exec policy rule allows this exact command in container {0}")]
    NotAllowed(String),
    /// A rule matches the argv but not the env; says what each rule allows.
    #[error("no exec policy rule allows this env for this command: {0}")]
    Env(String),
}

impl PolicyError {
    /// A stable name for the kind of refusal (the `check` dry run's `refused_by`).
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::Empty => "empty",
            PolicyError::Denied(_) => "deny_list",
            PolicyError::EnvValue(_) => "env_value",
            PolicyError::NotAllowed(_) => "no_rule",
            PolicyError::Env(_) => "env",
        }
    }
}

pub(super) fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

pub(super) fn valid_env_value(v: &str) -> bool {
    v.chars().count() <= MAX_ENV_VALUE && !v.chars().any(|c| c.is_control())
}

impl ExecPolicy {
    /// Every rule, built-in first.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The policy file, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The rule that allows this request (the one needing the least role when
    /// several do), or why none does. The caller compares the rule's role with the
    /// requester's.
    pub fn decide(
        &self,
        container: &str,
        argv: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<&Rule, PolicyError> {
        if argv.is_empty() {
            return Err(PolicyError::Empty);
        }
        if let Some(hit) = deny::check(argv) {
            return Err(PolicyError::Denied(hit));
        }
        if let Some((k, _)) = env.iter().find(|(_, v)| !valid_env_value(v)) {
            return Err(PolicyError::EnvValue(shorten(k)));
        }
        let candidates: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.container == container && r.argv == argv)
            .collect();
        if candidates.is_empty() {
            return Err(PolicyError::NotAllowed(container.to_string()));
        }
        let mut reasons = Vec::new();
        let mut best: Option<&Rule> = None;
        for r in candidates {
            match r.env_mismatch(env) {
                Some(why) => reasons.push(why),
                None if best.is_none_or(|b| r.role < b.role) => best = Some(r),
                None => {}
            }
        }
        best.ok_or_else(|| PolicyError::Env(reasons.join("; ")))
    }
}
