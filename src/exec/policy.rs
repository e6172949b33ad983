//! The exec policy: which `docker exec` requests may run.
//!
//! A request runs only if an allow rule names its container and its *exact* argv
//! (no prefix, no substring, no shell), and every env name it sets. On top, a
//! deny-list no rule can override: shells, interpreters given inline code, and the
//! predecessor's list of dangerous tools, compared on the basename of argv[0] and of
//! the applet a multi-call binary (busybox, toybox) is asked to run.
//!
//! The predecessor's mistakes are the tests: a substring rule that blocked
//! `/daily-backup.sh` for containing `sh`, a prefix rule that let extra arguments
//! through, checks done with `assert` (which `python -O` removes).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub container: String,
    /// The exact argv.
    pub argv: Vec<String>,
    /// Env names the request may set.
    #[serde(default)]
    pub env: Vec<String>,
}

/// The allow-list (from a file, or the built-in default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecPolicy {
    #[serde(default)]
    pub allow: Vec<Rule>,
}

/// AIO's `daily-backup.sh` flags.
pub const AIO_FLAGS: [&str; 5] = [
    "DAILY_BACKUP",
    "CHECK_BACKUP",
    "STOP_CONTAINERS",
    "START_CONTAINERS",
    "AUTOMATIC_UPDATES",
];

const SHELLS: &[&str] = &[
    "sh",
    "bash",
    "ash",
    "dash",
    "zsh",
    "fish",
    "ksh",
    "mksh",
    "csh",
    "tcsh",
    "busybox-sh",
];
const MULTI_CALL: &[&str] = &["busybox", "toybox"];
const INTERPRETERS: &[(&str, &[&str])] = &[
    ("python", &["-c"]),
    ("perl", &["-e", "-E"]),
    ("ruby", &["-e"]),
    ("node", &["-e", "-p", "--eval", "--print"]),
    ("nodejs", &["-e", "-p", "--eval", "--print"]),
    ("php", &["-r"]),
];
const DANGEROUS: &[&str] = &[
    "rm", "rmdir", "dd", "nc", "netcat", "ncat", "curl", "wget", "chmod", "chown", "useradd",
    "passwd", "iptables", "ip", "mount", "umount", "kill", "killall", "pkill",
];
/// Longest env value accepted.
pub const MAX_ENV_VALUE: usize = 256;

/// Why a request was refused (shown to the client; never contains env values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0} is never allowed (deny-list: shells, inline interpreters and dangerous tools)")]
    Denied(String),
    #[error("no exec policy rule allows this exact command in container {0}")]
    NotAllowed(String),
    #[error("env {0} is not allowed by the matching rule")]
    EnvNotAllowed(String),
    #[error("env {0} must be printable and at most {MAX_ENV_VALUE} characters")]
    EnvValue(String),
    #[error("the command must not be empty")]
    Empty,
}

fn basename(s: &str) -> &str {
    Path::new(s)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(s)
}

/// The deny-list check of one argv (independent of any rule).
pub fn denied(argv: &[String]) -> Option<String> {
    let first = basename(argv.first()?);
    let mut names = vec![first];
    if MULTI_CALL.contains(&first) {
        if let Some(applet) = argv.get(1) {
            names.push(basename(applet));
        }
    }
    for name in names {
        if SHELLS.contains(&name) || DANGEROUS.contains(&name) {
            return Some(name.to_string());
        }
        for (interp, flags) in INTERPRETERS {
            // python3, python3.11, perl5.36 …
            let is_interp = name == *interp
                || name
                    .strip_prefix(interp)
                    .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'));
            let inline = argv.iter().skip(1).any(|a| {
                flags.contains(&a.as_str())
                    || flags
                        .iter()
                        .any(|f| a.starts_with(f) && a.len() > f.len() && !f.starts_with("--"))
            });
            if is_interp && inline {
                return Some(format!("{name} with inline code"));
            }
        }
    }
    None
}

impl ExecPolicy {
    /// What Nextcloud AIO needs: `/daily-backup.sh` (with its flags) and
    /// `/healthcheck.sh` in the mastercontainer.
    pub fn aio_default(mastercontainer: &str) -> Self {
        Self {
            allow: vec![
                Rule {
                    container: mastercontainer.into(),
                    argv: vec!["/daily-backup.sh".into()],
                    env: AIO_FLAGS.iter().map(|s| s.to_string()).collect(),
                },
                Rule {
                    container: mastercontainer.into(),
                    argv: vec!["/healthcheck.sh".into()],
                    env: vec![],
                },
            ],
        }
    }

    /// Reads a TOML policy file (`[[allow]]` tables).
    pub fn load(path: &Path) -> Result<Self, String> {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::file_exact(path))
            .extract()
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Allows the request, or says why not.
    pub fn check(
        &self,
        container: &str,
        argv: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<(), PolicyError> {
        if argv.is_empty() {
            return Err(PolicyError::Empty);
        }
        if let Some(what) = denied(argv) {
            return Err(PolicyError::Denied(what));
        }
        let rule = self
            .allow
            .iter()
            .find(|r| r.container == container && r.argv == argv)
            .ok_or_else(|| PolicyError::NotAllowed(container.to_string()))?;
        for (name, value) in env {
            if !rule.env.contains(name) {
                return Err(PolicyError::EnvNotAllowed(name.clone()));
            }
            if value.chars().count() > MAX_ENV_VALUE || value.chars().any(|c| c.is_control()) {
                return Err(PolicyError::EnvValue(name.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    const M: &str = "nextcloud-aio-mastercontainer";

    #[test]
    fn the_predecessors_mistakes_are_fixed() {
        let p = ExecPolicy::aio_default(M);
        let none = BTreeMap::new();
        // Substring rule: `/daily-backup.sh` contains "sh" and must still be allowed.
        assert_eq!(p.check(M, &argv(&["/daily-backup.sh"]), &none), Ok(()));
        // Prefix rule: extra arguments are not the allowed command.
        assert!(matches!(
            p.check(M, &argv(&["/daily-backup.sh", "--evil"]), &none),
            Err(PolicyError::NotAllowed(_))
        ));
        // Another container is not allowed either.
        assert!(p
            .check(
                "nextcloud-aio-nextcloud",
                &argv(&["/daily-backup.sh"]),
                &none
            )
            .is_err());
    }

    #[test]
    fn the_deny_list_overrides_any_rule() {
        let mut p = ExecPolicy::aio_default(M);
        let cases: Vec<Vec<String>> = vec![
            argv(&["sh", "-c", "id"]),
            argv(&["/bin/bash"]),
            argv(&["/usr/bin/zsh", "-c", "x"]),
            argv(&["busybox", "sh", "-c", "id"]),
            argv(&["/bin/busybox", "rm", "-rf", "/"]),
            argv(&["toybox", "wget", "http://x"]),
            argv(&["python3", "-c", "print(1)"]),
            argv(&["python3.11", "-c", "print(1)"]),
            argv(&["perl", "-e", "1"]),
            argv(&["ruby", "-e", "1"]),
            argv(&["node", "-e", "1"]),
            argv(&["php", "-r", "echo 1;"]),
            argv(&["/bin/rm", "-rf", "/"]),
            argv(&["dd", "if=/dev/zero"]),
            argv(&["nc", "-l"]),
            argv(&["curl", "x"]),
            argv(&["wget", "x"]),
            argv(&["chmod", "777", "/"]),
            argv(&["chown", "x", "/"]),
            argv(&["useradd", "x"]),
            argv(&["passwd"]),
            argv(&["iptables", "-F"]),
            argv(&["ip", "link"]),
            argv(&["mount", "/dev/sda"]),
            argv(&["umount", "/"]),
            argv(&["kill", "1"]),
            argv(&["killall", "x"]),
            argv(&["pkill", "x"]),
            argv(&["rmdir", "/x"]),
            argv(&["netcat", "x"]),
        ];
        for a in cases {
            // Even an explicit allow rule cannot let these through.
            p.allow.push(Rule {
                container: M.into(),
                argv: a.clone(),
                env: vec![],
            });
            assert!(
                matches!(
                    p.check(M, &a, &BTreeMap::new()),
                    Err(PolicyError::Denied(_))
                ),
                "{a:?} got through"
            );
        }
        // A script file run by an interpreter is not inline code.
        assert_eq!(denied(&argv(&["python3", "/opt/tool.py"])), None);
    }

    #[test]
    fn env_names_and_values_are_checked() {
        let p = ExecPolicy::aio_default(M);
        let ok: BTreeMap<String, String> = [("DAILY_BACKUP".to_string(), "1".to_string())].into();
        assert_eq!(p.check(M, &argv(&["/daily-backup.sh"]), &ok), Ok(()));
        let bad: BTreeMap<String, String> =
            [("LD_PRELOAD".to_string(), "/x.so".to_string())].into();
        assert!(matches!(
            p.check(M, &argv(&["/daily-backup.sh"]), &bad),
            Err(PolicyError::EnvNotAllowed(_))
        ));
        let long: BTreeMap<String, String> = [("DAILY_BACKUP".to_string(), "x".repeat(300))].into();
        assert!(matches!(
            p.check(M, &argv(&["/daily-backup.sh"]), &long),
            Err(PolicyError::EnvValue(_))
        ));
        let ctl: BTreeMap<String, String> =
            [("DAILY_BACKUP".to_string(), "1\n2".to_string())].into();
        assert!(p.check(M, &argv(&["/daily-backup.sh"]), &ctl).is_err());
        // healthcheck takes no env at all.
        assert!(p.check(M, &argv(&["/healthcheck.sh"]), &ok).is_err());
    }

    #[test]
    fn policy_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("policy.toml");
        std::fs::write(
            &f,
            "[[allow]]\ncontainer = \"c\"\nargv = [\"/x.sh\", \"--fast\"]\nenv = [\"A\"]\n",
        )
        .unwrap();
        let p = ExecPolicy::load(&f).unwrap();
        assert_eq!(p.allow.len(), 1);
        assert!(p
            .check("c", &argv(&["/x.sh", "--fast"]), &BTreeMap::new())
            .is_ok());
        std::fs::write(&f, "[[allow]]\ncontainer = \"c\"\nargs = []\n").unwrap();
        assert!(ExecPolicy::load(&f).is_err());
    }
}
