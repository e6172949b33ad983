//! Start-up guards and `check-config`: every refusal names the key and the fix, and
//! no secret is ever printed.

use std::path::Path;
use std::process::{Command, Output};

use crate::helpers::*;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], env: &[(&str, String)]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_borgmatic-mqtt"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

type Env = Vec<(&'static str, String)>;

fn good_env(config_dir: &Path) -> Env {
    vec![
        ("BMQTT_AUTH__READ_TOKEN", READ_TOKEN.into()),
        ("BMQTT_AUTH__WRITE_TOKEN", WRITE_TOKEN.into()),
        ("BMQTT_MQTT__PASSWORD", WORKER_PASSWORD.into()),
        (
            "BMQTT_BORGMATIC__CONFIG_DIR",
            config_dir.display().to_string(),
        ),
        (
            "BMQTT_BORGMATIC__BINARY",
            borgmatic_bin().display().to_string(),
        ),
        ("BMQTT_REPOSITORIES__NC__PASSPHRASE", PASSPHRASE.into()),
    ]
}

fn with(mut env: Env, key: &'static str, value: Option<&str>) -> Env {
    env.retain(|(k, _)| *k != key);
    if let Some(v) = value {
        env.push((key, v.to_string()));
    }
    env
}

#[test]
fn check_config_prints_the_effective_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&["check-config"], &good_env(dir.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let shown: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(shown["auth"]["read_token"], "[redacted]");
    assert_eq!(shown["mqtt"]["password"], "[redacted]");
    assert_eq!(shown["repositories"]["nc"]["passphrase"], "[redacted]");
    assert!(shown["borgmatic_version"]
        .as_str()
        .unwrap()
        .starts_with('2'));
    assert_no_secrets("check-config output", &format!("{}{}", r.stdout, r.stderr));
}

#[test]
fn every_start_up_refusal_names_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_env(dir.path());
    let old = dir.path().join("old-borgmatic");
    std::fs::write(&old, "#!/bin/sh\necho 1.8.14\n").unwrap();
    std::process::Command::new("chmod")
        .args(["+x", old.to_str().unwrap()])
        .status()
        .unwrap();
    let same = "s".repeat(30);
    let cases: Vec<(Env, &str, &str)> = vec![
        (
            with(
                good.clone(),
                "BMQTT_REPOSITORIES__NC__SSH_PASSPHRASE",
                Some(PASSPHRASE),
            ),
            "repositories.nc.ssh_passphrase",
            "equals the repository's borg passphrase",
        ),
        (
            with(good.clone(), "BMQTT_AUTH__READ_TOKEN", None),
            "auth.read_token",
            "missing",
        ),
        (
            with(good.clone(), "BMQTT_AUTH__WRITE_TOKEN", None),
            "auth.write_token",
            "missing",
        ),
        (
            with(good.clone(), "BMQTT_AUTH__READ_TOKEN", Some("")),
            "auth.read_token",
            "empty",
        ),
        (
            with(good.clone(), "BMQTT_AUTH__WRITE_TOKEN", Some("too-short")),
            "auth.write_token",
            "shorter than 24",
        ),
        (
            with(
                with(good.clone(), "BMQTT_AUTH__READ_TOKEN", Some(&same)),
                "BMQTT_AUTH__WRITE_TOKEN",
                Some(&same),
            ),
            "auth.write_token",
            "equals auth.read_token",
        ),
        (
            with(good.clone(), "BMQTT_AUTH__ADMIN_TOKEN", Some(READ_TOKEN)),
            "auth.admin_token",
            "equals auth.read_token",
        ),
        (
            with(
                good.clone(),
                "BMQTT_BORGMATIC__CONFIG_DIR",
                Some("/nonexistent/borgmatic.d"),
            ),
            "borgmatic.config_dir",
            "not a directory",
        ),
        (
            with(
                good.clone(),
                "BMQTT_BORGMATIC__BINARY",
                Some("/nonexistent/borgmatic"),
            ),
            "borgmatic.binary",
            "cannot be run",
        ),
        (
            with(
                good.clone(),
                "BMQTT_BORGMATIC__BINARY",
                Some(old.to_str().unwrap()),
            ),
            "borgmatic.binary",
            "older than 1.9.0",
        ),
    ];
    for (env, key, needle) in cases {
        for args in [&["check-config"][..], &["run"][..]] {
            let r = run(args, &env);
            assert_ne!(r.code, 0, "{args:?} accepted a bad configuration ({key})");
            let line = r
                .stderr
                .lines()
                .find(|l| l.contains(&format!("{key}:")))
                .unwrap_or_else(|| panic!("{args:?}: no line names {key}: {}", r.stderr));
            assert!(line.contains(needle), "{args:?}: {line:?} lacks {needle:?}");
            assert_no_secrets("start-up errors", &format!("{}{}", r.stdout, r.stderr));
        }
    }
}

#[test]
fn unknown_keys_and_secret_files_and_toml_layering() {
    let dir = tempfile::tempdir().unwrap();
    // A typo in an environment key is refused, naming it.
    let r = run(
        &["check-config"],
        &with(good_env(dir.path()), "BMQTT_MQTT__HOTS", Some("x")),
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("hots"), "{}", r.stderr);

    // Tokens from `_FILE` (Docker secrets) and the rest from a TOML file, which the
    // environment overrides.
    let token_file = dir.path().join("read_token");
    std::fs::write(&token_file, format!("{READ_TOKEN}\n")).unwrap();
    let toml = dir.path().join("config.toml");
    std::fs::write(
        &toml,
        "[mqtt]\nhost = \"broker.lan\"\nport = 1884\nbase_topic = \"backups/nas\"\n",
    )
    .unwrap();
    let env = with(
        with(good_env(dir.path()), "BMQTT_AUTH__READ_TOKEN", None),
        "BMQTT_AUTH__READ_TOKEN_FILE",
        Some(token_file.to_str().unwrap()),
    );
    let env = with(env, "BMQTT_MQTT__PORT", Some("1999"));
    let r = run(&["--config", toml.to_str().unwrap(), "check-config"], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let shown: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(shown["mqtt"]["host"], "broker.lan");
    assert_eq!(shown["mqtt"]["port"], 1999);
    assert_eq!(shown["effective_base_topic"], "backups/nas");
    assert_eq!(shown["auth"]["read_token"], "[redacted]");
    assert_no_secrets("check-config output", &r.stdout);

    // Both a value and its file is ambiguous.
    let r = run(
        &["check-config"],
        &with(
            good_env(dir.path()),
            "BMQTT_AUTH__READ_TOKEN_FILE",
            Some(token_file.to_str().unwrap()),
        ),
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("auth.read_token_file"), "{}", r.stderr);
}

/// A value that must never be printed, whatever form the error takes.
const PLANTED: &str = "31337424242";

#[test]
fn config_errors_never_print_a_secret_value() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("config.toml");
    let cases: Vec<(&str, Option<&str>, Env, &str)> = vec![
        // TOML: a numeric password, a passphrase of the wrong type, an unquoted one.
        (
            "numeric mqtt.password in TOML",
            Some("[mqtt]\npassword = 31337424242\n"),
            with(good_env(dir.path()), "BMQTT_MQTT__PASSWORD", None),
            "mqtt.password",
        ),
        (
            "list passphrase in TOML",
            Some("[repositories.nc]\npassphrase = [31337424242]\n"),
            with(
                good_env(dir.path()),
                "BMQTT_REPOSITORIES__NC__PASSPHRASE",
                None,
            ),
            "repositories.nc.passphrase",
        ),
        (
            "unquoted ssh_passphrase in TOML",
            Some("[repositories.nc]\nssh_passphrase = 31337424242-x\n"),
            good_env(dir.path()),
            "configuration",
        ),
        // Environment: a table where a string belongs.
        (
            "table mqtt in the environment",
            None,
            with(
                with(good_env(dir.path()), "BMQTT_MQTT__PASSWORD", None),
                "BMQTT_MQTT",
                Some("{password=31337424242}"),
            ),
            "mqtt.password",
        ),
        (
            "table repository in the environment",
            None,
            with(
                with(
                    good_env(dir.path()),
                    "BMQTT_REPOSITORIES__NC__PASSPHRASE",
                    None,
                ),
                "BMQTT_REPOSITORIES__NC",
                Some("{passphrase=[31337424242]}"),
            ),
            "repositories.nc.passphrase",
        ),
    ];
    for (what, file, env, key) in cases {
        let mut args: Vec<&str> = Vec::new();
        if let Some(text) = file {
            std::fs::write(&toml, text).unwrap();
            args.extend(["--config", toml.to_str().unwrap()]);
        }
        for command in ["check-config", "run"] {
            let mut a = args.clone();
            a.push(command);
            let r = run(&a, &env);
            assert_eq!(r.code, 2, "{what} ({command}) was accepted: {}", r.stderr);
            assert!(
                r.stderr.contains(&format!("{key}:")),
                "{what} ({command}): no line names {key}: {}",
                r.stderr
            );
            let all = format!("{}{}", r.stdout, r.stderr);
            assert!(
                !all.contains(PLANTED),
                "{what} ({command}) printed the value: {all}"
            );
            assert_no_secrets(what, &all);
        }
    }
}

#[test]
fn a_numeric_secret_in_the_environment_is_taken_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    // figment reads `000…001` as the number 1 (and refused a number where a string
    // belongs, printing it). Taken verbatim, this token is 24 characters long and
    // passes the length check; read as a number it would not.
    let numeric_token = "000000000000000000000001";
    for (key, value) in [
        ("BMQTT_AUTH__READ_TOKEN", numeric_token),
        ("BMQTT_MQTT__PASSWORD", "0012345678"),
        ("BMQTT_REPOSITORIES__NC__PASSPHRASE", "[1,2]"),
        ("BMQTT_REPOSITORIES__NC__SSH_PASSPHRASE", "{a=1}"),
    ] {
        let env = with(good_env(dir.path()), key, Some(value));
        let r = run(&["check-config"], &env);
        assert_eq!(r.code, 0, "{key}={value}: {}", r.stderr);
        assert!(!r.stdout.contains(value), "{}", r.stdout);
        assert_no_secrets("check-config output", &r.stdout);
    }
}
