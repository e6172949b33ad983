//! Loading settings: tokens, unknown keys, `_file` secrets, errors that quote no
//! value, node ids, timeout keys.
//!
//! Test code: may import any module (`scripts/import-cycles` counts production code only).

use super::*;
use figment::providers::Serialized;

fn with(toml: &str) -> Result<Settings, Vec<Problem>> {
    Settings::from_figment(
        Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(toml)),
    )
}

fn keys(s: &Settings) -> Vec<String> {
    s.problems().into_iter().map(|p| p.key).collect()
}

#[test]
fn missing_tokens_are_named() {
    let s = with("").unwrap();
    let k = keys(&s);
    assert!(k.contains(&"auth.read_token".to_string()));
    assert!(k.contains(&"auth.write_token".to_string()));
    assert!(!k.contains(&"auth.admin_token".to_string()));
}

#[test]
fn short_empty_and_equal_tokens_are_refused() {
    let s = with("[auth]\nread_token = \"short\"\nwrite_token = \"\"\n").unwrap();
    let p = s.problems();
    assert!(p
        .iter()
        .any(|p| p.key == "auth.read_token" && p.message.contains("shorter")));
    assert!(p
        .iter()
        .any(|p| p.key == "auth.write_token" && p.message.contains("empty")));
    let same = "x".repeat(30);
    let s = with(&format!(
        "[auth]\nread_token = \"{same}\"\nwrite_token = \"{same}\"\n"
    ))
    .unwrap();
    assert!(s
        .problems()
        .iter()
        .any(|p| p.key == "auth.write_token" && p.message.contains("equals")));
}

#[test]
fn unknown_keys_are_refused() {
    let err = with("[mqtt]\nhots = \"x\"\n").unwrap_err();
    assert!(err[0].message.contains("hots"), "{err:?}");
}

#[test]
fn secrets_are_read_from_files_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("tok");
    std::fs::write(&f, "file-token-value-0123456789abc\n").unwrap();
    let s = with(&format!("[auth]\nread_token_file = \"{}\"\n", f.display())).unwrap();
    assert_eq!(
        s.auth.read_token.as_ref().unwrap().expose(),
        "file-token-value-0123456789abc"
    );
    let printed = format!("{s:?} {}", toml_string(&s));
    assert!(!printed.contains("file-token-value"));
}

fn toml_string(s: &Settings) -> String {
    serde_json::to_string(s).unwrap()
}

#[test]
fn equal_borg_and_ssh_passphrases_are_refused() {
    let s = with(
        "[repositories.nc]\npassphrase = \"same-secret-1\"\nssh_passphrase = \"same-secret-1\"\n",
    )
    .unwrap();
    assert!(s
        .problems()
        .iter()
        .any(|p| p.key == "repositories.nc.ssh_passphrase"));
}

#[test]
fn config_errors_never_quote_a_value() {
    for toml in [
        "[mqtt]\npassword = 31337424242\n",
        "[repositories.nc]\npassphrase = 31337424242\n",
        "[repositories.nc]\nssh_passphrase = [31337424242]\n",
        "[auth]\nread_token = { x = \"31337424242\" }\n",
        "[mqtt]\nport = 31337424242\n",
        "[log]\nformat = \"31337424242\"\n",
        "[mqtt]\npassword = 31337424242abc\n",
        "[mqtt]\npassword = \"31337424242\n",
    ] {
        let problems = with(toml).unwrap_err();
        let text = format!("{problems:?}");
        assert!(!problems.is_empty());
        assert!(!text.contains("31337424242"), "{toml}: {text}");
    }
    let p = with("[mqtt]\npassword = 12345678\n").unwrap_err();
    assert_eq!(p[0].key, "mqtt.password");
    assert!(p[0].message.contains("expected a string"), "{p:?}");
    assert!(p[0].message.contains("_file"), "{p:?}");
}

/// Every secret key, set through its `_file` form, takes effect, and is in
/// [`Settings::secret_values`] (so output is scrubbed of it).
#[test]
fn every_secret_has_a_working_file_form() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        ("mqtt", "password"),
        ("auth", "read_token"),
        ("auth", "write_token"),
        ("auth", "admin_token"),
        ("http", "from_header"),
        ("repositories.nc", "passphrase"),
        ("repositories.nc", "ssh_passphrase"),
    ];
    let mut toml = String::new();
    for (table, key) in keys {
        let f = dir.path().join(format!("{table}.{key}"));
        std::fs::write(&f, format!("from-file-{table}-{key}\n")).unwrap();
        toml.push_str(&format!("{table}.{key}_file = \"{}\"\n", f.display()));
    }
    let mut s = with(&toml).unwrap();
    let values = s.secret_values();
    let slots: Vec<(String, String)> = s
        .secret_slots()
        .into_iter()
        .map(|slot| {
            (
                slot.key.clone(),
                slot.value
                    .as_ref()
                    .map(|v| v.expose().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(slots.len(), keys.len());
    for (table, key) in keys {
        let want = format!("from-file-{table}-{key}");
        let full = format!("{table}.{key}");
        assert!(
            slots.contains(&(full.clone(), want.clone())),
            "{full} not read from its file: {slots:?}"
        );
        assert!(values.contains(&want));
        assert!(is_secret_key(&full));
    }
    assert_eq!(
        s.ssh_passphrase_for("nc").map(Secret::expose),
        Some("from-file-repositories.nc-ssh_passphrase")
    );
}

#[test]
fn node_id_is_sanitised() {
    let s = with("[mqtt]\nnode_id = \"My Host.example\"\n").unwrap();
    assert_eq!(s.node_id(), "myhostexample");
    assert_eq!(s.base_topic(), "borgmatic/myhostexample");
}

#[test]
fn timeouts_accept_both_key_forms() {
    let s = with(
        "[jobs]\ndefault_timeout_secs = 5\n[jobs.timeouts]\n\"backup/run\" = 7\narchive_list = 9\n",
    )
    .unwrap();
    assert_eq!(s.jobs.timeout_for("backup/run").as_secs(), 7);
    assert_eq!(s.jobs.timeout_for("archive/list").as_secs(), 9);
    assert_eq!(s.jobs.timeout_for("job/get").as_secs(), 5);
}
