//! One allow rule ([`Rule`]): where it comes from, the exact container, argv and
//! env it allows, and the role it needs; and why a rule does not match an env.
//!
//! May import: `domain`, `redact` (quoting).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::Role;
use crate::redact::quote as shorten;

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Compiled in (the Nextcloud AIO rules).
    BuiltIn,
    /// From `docker.exec_policy_file`.
    File,
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The rule's name, shown in answers and in `security/exec-policy`.
    pub name: String,
    /// Built in, or from the policy file.
    pub source: Source,
    /// The one container it allows (by name).
    pub container: String,
    /// The exact argv.
    pub argv: Vec<String>,
    /// The least role a request must have (`container/exec` itself needs write).
    pub role: Role,
    /// The exact env: each name must be set, to one of its values.
    pub env: BTreeMap<String, Vec<String>>,
}

impl Rule {
    /// Why this rule does not allow `env`, or `None` when it does.
    pub(super) fn env_mismatch(&self, env: &BTreeMap<String, String>) -> Option<String> {
        let name = &self.name;
        for (k, v) in env {
            match self.env.get(k) {
                None => return Some(format!("rule {name} does not allow env {}", shorten(k))),
                Some(values) if !values.contains(v) => {
                    return Some(format!(
                        "rule {name} allows {k} only as {}",
                        values.join(" or ")
                    ))
                }
                Some(_) => {}
            }
        }
        self.env
            .iter()
            .find(|(k, _)| !env.contains_key(*k))
            .map(|(k, values)| {
                format!(
                    "rule {name} needs {k} set (to {}): unset, it is inherited from the container",
                    values.join(" or ")
                )
            })
    }
}
