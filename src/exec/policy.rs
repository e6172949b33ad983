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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::deny::{self, DenyHit};
use crate::auth::Role;
use crate::command::{shorten, ContainerName, ExecArgv};
use crate::config::DockerSettings;

/// AIO's `daily-backup.sh` flags; every built-in rule for it sets all five.
pub const AIO_FLAGS: [&str; 5] = [
    "DAILY_BACKUP",
    "CHECK_BACKUP",
    "STOP_CONTAINERS",
    "START_CONTAINERS",
    "AUTOMATIC_UPDATES",
];
/// Longest env value accepted.
pub const MAX_ENV_VALUE: usize = 256;

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

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    BuiltIn,
    File,
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub name: String,
    pub source: Source,
    pub container: String,
    /// The exact argv.
    pub argv: Vec<String>,
    /// The least role a request must have (`container/exec` itself needs write).
    pub role: Role,
    /// The exact env: each name must be set, to one of its values.
    pub env: BTreeMap<String, Vec<String>>,
}

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

/// The effective policy: the built-in AIO rules plus the file's rules.
#[derive(Debug, Clone)]
pub struct ExecPolicy {
    rules: Vec<Rule>,
    file: Option<PathBuf>,
}

/// Why a request was refused (shown to the client; never contains env values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the command must not be empty")]
    Empty,
    #[error("{0}")]
    Denied(DenyHit),
    #[error("env {0} must be printable and at most {MAX_ENV_VALUE} characters")]
    EnvValue(String),
    #[error("no exec policy rule allows this exact command in container {0}")]
    NotAllowed(String),
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

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn valid_env_name(n: &str) -> bool {
    n.len() <= 128
        && n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_env_value(v: &str) -> bool {
    v.chars().count() <= MAX_ENV_VALUE && !v.chars().any(|c| c.is_control())
}

impl Rule {
    /// Why this rule does not allow `env`, or `None` when it does.
    fn env_mismatch(&self, env: &BTreeMap<String, String>) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        strings(a)
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const M: &str = "nextcloud-aio-mastercontainer";

    fn aio(d: &str, c: &str, stop: &str, start: &str, auto: &str) -> BTreeMap<String, String> {
        env(&[
            ("DAILY_BACKUP", d),
            ("CHECK_BACKUP", c),
            ("STOP_CONTAINERS", stop),
            ("START_CONTAINERS", start),
            ("AUTOMATIC_UPDATES", auto),
        ])
    }

    /// What AIO's `daily-backup.sh` does with these flags (unset counts as not
    /// `1`, as in the script): whether the run ends with the containers stopped.
    fn leaves_nextcloud_stopped(e: &BTreeMap<String, String>) -> bool {
        let on = |k: &str| e.get(k).map(String::as_str) == Some("1");
        if on("DAILY_BACKUP") && on("CHECK_BACKUP") {
            return false; // the script refuses and exits before touching anything
        }
        let stops = on("DAILY_BACKUP") // the backup itself stops them
            || (!on("CHECK_BACKUP") && (!on("DAILY_BACKUP") || on("STOP_CONTAINERS")));
        let starts = on("AUTOMATIC_UPDATES") || on("START_CONTAINERS");
        stops && !starts
    }

    #[test]
    fn no_write_role_flag_combination_does_what_aio_stop_does() {
        let p = ExecPolicy::builtin(M);
        let values = [None, Some("0"), Some("1"), Some("yes")];
        let mut write_allowed = 0;
        let mut admin_only = 0;
        for code in 0..values.len().pow(5) {
            let mut e = BTreeMap::new();
            let mut c = code;
            for flag in AIO_FLAGS {
                if let Some(v) = values[c % values.len()] {
                    e.insert(flag.to_string(), v.to_string());
                }
                c /= values.len();
            }
            match p.decide(M, &argv(&["/daily-backup.sh"]), &e) {
                Ok(rule) if rule.role <= Role::Write => {
                    write_allowed += 1;
                    assert!(
                        !leaves_nextcloud_stopped(&e),
                        "{e:?} stops Nextcloud with rule {}",
                        rule.name
                    );
                    assert_eq!(e.len(), 5, "{e:?}: an unset flag is inherited");
                }
                Ok(rule) => {
                    admin_only += 1;
                    assert_eq!(rule.role, Role::Admin);
                }
                Err(_) => {}
            }
        }
        assert!(write_allowed > 0 && admin_only > 0);
        // The example: write cannot stop Nextcloud; it needs admin.
        let stop = env(&[("DAILY_BACKUP", "0"), ("STOP_CONTAINERS", "1")]);
        assert!(matches!(
            p.decide(M, &argv(&["/daily-backup.sh"]), &stop),
            Err(PolicyError::Env(_))
        ));
        let rule = p
            .decide(
                M,
                &argv(&["/daily-backup.sh"]),
                &aio("0", "0", "1", "0", "0"),
            )
            .unwrap();
        assert_eq!((rule.name.as_str(), rule.role), ("aio-stop", Role::Admin));
        let rule = p
            .decide(
                M,
                &argv(&["/daily-backup.sh"]),
                &aio("1", "0", "0", "1", "0"),
            )
            .unwrap();
        assert_eq!((rule.name.as_str(), rule.role), ("aio-backup", Role::Write));
    }

    #[test]
    fn other_env_names_argv_spellings_and_containers_match_no_rule() {
        let p = ExecPolicy::builtin(M);
        let ok = aio("1", "0", "0", "1", "0");
        for extra in [
            "LOCK_FILE_PRESENT",
            "SKIP_IF_UP_TO_DATE",
            "AIO_LOG_LEVEL",
            "LD_PRELOAD",
            "PATH",
            "BASH_ENV",
        ] {
            let mut e = ok.clone();
            e.insert(extra.into(), "0".into());
            let err = p.decide(M, &argv(&["/daily-backup.sh"]), &e).unwrap_err();
            // Client values are quoted at most 16 characters long (redact::quote).
            assert!(
                err.to_string().contains(&extra[..extra.len().min(16)]),
                "{err}"
            );
        }
        for spelling in [
            "//daily-backup.sh",
            "/./daily-backup.sh",
            "daily-backup.sh",
            "./daily-backup.sh",
            "/tmp/../daily-backup.sh",
            "/Daily-Backup.sh",
            "/daily-backup.sh ",
        ] {
            assert!(
                matches!(
                    p.decide(M, &argv(&[spelling]), &ok),
                    Err(PolicyError::NotAllowed(_))
                ),
                "{spelling}"
            );
        }
        // Extra arguments are not the allowed command (the predecessor's prefix rule).
        assert!(p
            .decide(M, &argv(&["/daily-backup.sh", "--evil"]), &ok)
            .is_err());
        for container in [
            "Nextcloud-AIO-Mastercontainer",
            "nextcloud-aio-nextcloud",
            "0123456789ab",
        ] {
            assert!(p
                .decide(container, &argv(&["/daily-backup.sh"]), &ok)
                .is_err());
        }
        // `/daily-backup.sh` contains "sh" and must still be allowed (the
        // predecessor's substring rule blocked it).
        assert!(p.decide(M, &argv(&["/daily-backup.sh"]), &ok).is_ok());
    }

    #[test]
    fn env_values_are_checked_and_never_echoed() {
        let p = ExecPolicy::builtin(M);
        let mut e = aio("1", "0", "0", "1", "0");
        e.insert("DAILY_BACKUP".into(), "x".repeat(300));
        assert!(matches!(
            p.decide(M, &argv(&["/daily-backup.sh"]), &e),
            Err(PolicyError::EnvValue(_))
        ));
        e.insert("DAILY_BACKUP".into(), "1\nSCRIPT_EXIT=0".into());
        let err = p.decide(M, &argv(&["/daily-backup.sh"]), &e).unwrap_err();
        assert!(!err.to_string().contains("SCRIPT_EXIT"), "{err}");
        e.insert("DAILY_BACKUP".into(), "secret-value-9".into());
        let err = p.decide(M, &argv(&["/daily-backup.sh"]), &e).unwrap_err();
        assert!(!err.to_string().contains("secret-value-9"), "{err}");
        // healthcheck takes no env at all.
        assert!(p
            .decide(
                M,
                &argv(&["/healthcheck.sh"]),
                &env(&[("DAILY_BACKUP", "1")])
            )
            .is_err());
        let rule = p
            .decide(M, &argv(&["/healthcheck.sh"]), &BTreeMap::new())
            .unwrap();
        assert_eq!(rule.role, Role::Read);
    }

    fn settings_with(file: &str) -> (tempfile::TempDir, DockerSettings) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("policy.toml");
        std::fs::write(&f, file).unwrap();
        let s = DockerSettings {
            exec_policy_file: Some(f),
            ..DockerSettings::default()
        };
        (dir, s)
    }

    #[test]
    fn policy_files_add_rules_with_a_role_and_exact_env() {
        let (_d, s) = settings_with(
            "[[allow]]\nname = \"report\"\ncontainer = \"c\"\nargv = [\"/x.sh\", \"--fast\"]\nrole = \"write\"\nenv = { MODE = [\"a\", \"b\"] }\n\n\
             [[allow]]\ncontainer = \"c\"\nargv = [\"/x.sh\", \"--fast\"]\nrole = \"admin\"\nenv = { MODE = [\"c\"] }\n",
        );
        let p = ExecPolicy::from_settings(&s).unwrap();
        assert_eq!(p.rules().len(), ExecPolicy::builtin(M).rules().len() + 2);
        let fast = argv(&["/x.sh", "--fast"]);
        let r = p.decide("c", &fast, &env(&[("MODE", "a")])).unwrap();
        assert_eq!((r.name.as_str(), r.role), ("report", Role::Write));
        let r = p.decide("c", &fast, &env(&[("MODE", "c")])).unwrap();
        assert_eq!((r.name.as_str(), r.role), ("rule-2", Role::Admin));
        assert!(p.decide("c", &fast, &env(&[("MODE", "d")])).is_err());
        assert!(p.decide("c", &fast, &BTreeMap::new()).is_err());
        // The built-in AIO rules stay.
        assert!(p
            .decide(
                M,
                &argv(&["/daily-backup.sh"]),
                &aio("1", "0", "0", "1", "0")
            )
            .is_ok());
    }

    #[test]
    fn policy_files_that_would_weaken_the_policy_are_refused() {
        for (file, needle) in [
            // No role: a rule must say which role it needs.
            (
                "[[allow]]\ncontainer = \"c\"\nargv = [\"/x\"]\n",
                "missing field `role`",
            ),
            // The old form: env names without values.
            (
                "[[allow]]\ncontainer = \"c\"\nargv = [\"/x\"]\nrole = \"write\"\nenv = [\"A\"]\n",
                "NAME = [allowed values]",
            ),
            (
                "[[allow]]\ncontainer = \"c\"\nargv = [\"/x\"]\nrole = \"read\"\n",
                "needs write",
            ),
            (
                "[[allow]]\ncontainer = \"nextcloud-aio-mastercontainer\"\nargv = [\"/daily-backup.sh\"]\nrole = \"write\"\n",
                "need role = \"admin\"",
            ),
            (
                "[[allow]]\nname = \"aio-stop\"\ncontainer = \"c\"\nargv = [\"/x\"]\nrole = \"admin\"\n",
                "two rules are named",
            ),
            (
                "[[allow]]\ncontainer = \"c\"\nargv = []\nrole = \"write\"\n",
                "1 to 64",
            ),
            (
                "[[allow]]\ncontainer = \"../c\"\nargv = [\"/x\"]\nrole = \"write\"\n",
                "container must be",
            ),
            (
                "[[allow]]\ncontainer = \"c\"\nargv = [\"/x\"]\nrole = \"write\"\nenv = { A = [] }\n",
                "list of allowed values",
            ),
            (
                "[[allow]]\ncontainer = \"c\"\nargs = [\"/x\"]\nrole = \"write\"\n",
                "unknown field",
            ),
        ] {
            let (_d, s) = settings_with(file);
            let err = ExecPolicy::from_settings(&s).unwrap_err();
            assert!(err.contains(needle), "{file}: {err}");
        }
    }

    #[test]
    fn the_deny_list_overrides_any_rule() {
        let cases = [
            &["sh", "-c", "id"][..],
            &["env", "sh", "-c", "id"],
            &["/opt/x", "--with=/bin/bash"],
            &["find", "/", "-delete"],
        ];
        let mut file = String::new();
        for a in cases {
            file.push_str(&format!(
                "[[allow]]\ncontainer = \"c\"\nargv = {a:?}\nrole = \"admin\"\n\n"
            ));
        }
        let (_d, s) = settings_with(&file);
        let p = ExecPolicy::from_settings(&s).unwrap();
        for a in cases {
            let err = p.decide("c", &argv(a), &BTreeMap::new()).unwrap_err();
            assert_eq!(err.kind(), "deny_list", "{a:?}: {err}");
        }
    }
}
