//! The operator's policy file (`docker.exec_policy_file`): `[[allow]]` tables read
//! and checked, so that no file rule can weaken what the built-in rules and the
//! deny-list guarantee.
//!
//! May import: `domain`, `config` (the setting naming the file), `redact` (quoting),
//! the sibling `deny`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::{valid_env_value, ExecPolicy, Rule, Source, MAX_ENV_VALUE};
use crate::config::DockerSettings;
use crate::domain::Role;
use crate::domain::{ContainerName, ExecArgv};
use crate::exec::deny;
use crate::redact::quote as shorten;

/// A rule as written in the policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    #[serde(default)]
    name: Option<String>,
    container: String,
    argv: Vec<String>,
    role: FileRole,
    #[serde(default)]
    env: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FileRole {
    Read,
    Write,
    Admin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    allow: Vec<FileRule>,
}

fn valid_env_name(n: &str) -> bool {
    n.len() <= 128
        && n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ExecPolicy {
    /// The built-in rules plus those of `docker.exec_policy_file`.
    pub fn from_settings(docker: &DockerSettings) -> Result<Self, String> {
        let master = docker.mastercontainer();
        let mut policy = Self::builtin(&master);
        if let Some(path) = &docker.exec_policy_file {
            let extra = Self::load_file(path, &master)?;
            let mut names: BTreeSet<String> = policy.rules.iter().map(|r| r.name.clone()).collect();
            for r in &extra {
                if !names.insert(r.name.clone()) {
                    return Err(format!(
                        "{}: two rules are named {:?} (built-in rules: {})",
                        path.display(),
                        r.name,
                        policy
                            .rules
                            .iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            for r in &extra {
                if let Some(hit) = deny::check(&r.argv) {
                    tracing::warn!(rule = %r.name, "exec policy rule can never match: {hit}");
                }
            }
            policy.rules.extend(extra);
            policy.file = Some(path.clone());
        }
        Ok(policy)
    }

    /// Reads and checks a TOML policy file (`[[allow]]` tables).
    fn load_file(path: &Path, mastercontainer: &str) -> Result<Vec<Rule>, String> {
        use figment::providers::{Format, Toml};
        let hint = "each [[allow]] needs container, argv, role = \"write\" or \"admin\", and env as a table NAME = [allowed values]";
        let file: PolicyFile = figment::Figment::from(Toml::file_exact(path))
            .extract()
            .map_err(|e| format!("{}: {e} ({hint})", path.display()))?;
        let mut out = Vec::new();
        for (i, r) in file.allow.into_iter().enumerate() {
            let name = r.name.clone().unwrap_or_else(|| format!("rule-{}", i + 1));
            let at = format!("{}: rule {name}", path.display());
            let ok_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok_name {
                return Err(format!("{at}: a name is 1 to 64 of [A-Za-z0-9_.-]"));
            }
            ContainerName::parse(&r.container).map_err(|e| format!("{at}: {e}"))?;
            ExecArgv::try_from(r.argv.clone()).map_err(|e| format!("{at}: {e}"))?;
            let role = match r.role {
                FileRole::Read => {
                    return Err(format!(
                        "{at}: role \"read\" cannot run container/exec, which needs write; use \"write\" or \"admin\""
                    ))
                }
                FileRole::Write => Role::Write,
                FileRole::Admin => Role::Admin,
            };
            if r.container == mastercontainer && role != Role::Admin {
                return Err(format!(
                    "{at}: rules for {mastercontainer} need role = \"admin\": it holds the Docker socket, \
                     and the built-in rules already give the write role what aio/* commands do"
                ));
            }
            for (k, values) in &r.env {
                if !valid_env_name(k) {
                    return Err(format!("{at}: env name {} is not a NAME", shorten(k)));
                }
                if values.is_empty() || !values.iter().all(|v| valid_env_value(v)) {
                    return Err(format!(
                        "{at}: env {k} needs a list of allowed values, each printable and at most {MAX_ENV_VALUE} characters"
                    ));
                }
            }
            out.push(Rule {
                name,
                source: Source::File,
                container: r.container,
                argv: r.argv,
                role,
                env: r.env,
            });
        }
        Ok(out)
    }
}
