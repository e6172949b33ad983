//! The exec policy: no write-role flag combination stops Nextcloud, only exact
//! argv, env and container match, env values are never echoed, policy files add
//! rules but cannot weaken the policy, and the deny-list wins over any rule.
//!
//! Test code: may import any module (`scripts/import-cycles` counts production code only).

use super::*;
use crate::config::DockerSettings;
use crate::domain::Role;

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
