//! The binary's `askpass` mode: ssh runs `$SSH_ASKPASS "<prompt>"` to get a key
//! passphrase. The worker points `SSH_ASKPASS` at its own binary and hands the
//! passphrase over in the environment (never argv), together with the key files it
//! expects ssh to use. Only the exact key-passphrase prompt for one of those files
//! is answered: a password prompt, a host-key confirmation or a prompt naming any
//! other key gets nothing, so the secret can only ever unlock the key it belongs to.
//!
//! Imports `config::Secret` only.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::Secret;

/// Environment variable that carries the passphrase to the askpass process.
pub const SECRET_ENV: &str = "BORGMATIC_MQTT_ASKPASS_SECRET";
/// Environment variable naming the key files (one per line) whose prompt is answered.
pub const KEYS_ENV: &str = "BORGMATIC_MQTT_ASKPASS_KEYS";

/// OpenSSH prints at most this many bytes of the key path (`'%.100s'`).
const SSH_PROMPT_PATH_MAX: usize = 100;

/// Whether this process was started by ssh as the askpass helper.
pub fn requested() -> bool {
    std::env::var_os(SECRET_ENV).is_some()
}

/// Environment that makes ssh ask this binary (in askpass mode) for the passphrase
/// of one of `keys`; the secret travels in the environment, never in argv.
pub fn env(passphrase: &Secret, keys: &[PathBuf]) -> Vec<(String, Secret)> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "borgmatic-mqtt".into());
    let keys: Vec<String> = keys
        .iter()
        .filter_map(|k| k.to_str())
        .filter(|k| !k.contains('\n'))
        .map(str::to_string)
        .collect();
    vec![
        ("SSH_ASKPASS".into(), Secret::new(exe)),
        ("SSH_ASKPASS_REQUIRE".into(), Secret::new("force")),
        ("DISPLAY".into(), Secret::new("borgmatic-mqtt:0")),
        (KEYS_ENV.into(), Secret::new(keys.join("\n"))),
        (SECRET_ENV.into(), passphrase.clone()),
    ]
}

/// Answers one prompt: prints the passphrase for the expected key-passphrase prompt
/// (exit 0), refuses anything else (exit 1).
pub fn run(prompt: &[u8]) -> i32 {
    let Ok(secret) = std::env::var(SECRET_ENV) else {
        return 1;
    };
    let keys = std::env::var(KEYS_ENV).unwrap_or_default();
    if !is_expected_prompt(prompt, keys.lines().map(Path::new)) {
        eprintln!(
            "borgmatic-mqtt askpass: refusing to answer {:?} (only the passphrase prompt of the configured key is answered)",
            String::from_utf8_lossy(prompt)
        );
        return 1;
    }
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{secret}")
        .and_then(|()| out.flush())
        .is_err()
    {
        return 1;
    }
    0
}

/// Exactly `Enter passphrase for key '<path>': ` for one of `keys`, with the path
/// cut at 100 bytes as OpenSSH cuts it.
fn is_expected_prompt<'a>(prompt: &[u8], keys: impl Iterator<Item = &'a Path>) -> bool {
    keys.filter(|k| !k.as_os_str().is_empty()).any(|k| {
        let path = k.as_os_str().as_bytes();
        let path = &path[..path.len().min(SSH_PROMPT_PATH_MAX)];
        let mut expected = b"Enter passphrase for key '".to_vec();
        expected.extend_from_slice(path);
        expected.extend_from_slice(b"': ");
        prompt == expected.as_slice()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(prompt: &str, keys: &[&str]) -> bool {
        is_expected_prompt(prompt.as_bytes(), keys.iter().map(Path::new))
    }

    #[test]
    fn only_the_configured_keys_prompt_is_answered() {
        let key = "/root/.ssh/id_ed25519";
        assert!(answers(
            "Enter passphrase for key '/root/.ssh/id_ed25519': ",
            &[key]
        ));
        for other in [
            "Enter passphrase for key '/root/.ssh/other': ",
            "Enter passphrase for key '/root/.ssh/id_ed25519': x",
            "enter passphrase for key '/root/.ssh/id_ed25519': ",
            "Enter passphrase for key '/root/.ssh/id_ed25519'",
            "Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
            "root@host's password: ",
            "Enter passphrase for /root/.ssh/id_ed25519: ",
            "(root@host) Password: passphrase for key '/root/.ssh/id_ed25519': ",
        ] {
            assert!(!answers(other, &[key]), "{other}");
        }
        assert!(!answers("Enter passphrase for key '': ", &[""]));
        assert!(!answers("Enter passphrase for key '/k': ", &[]));
    }

    #[test]
    fn long_paths_are_cut_like_openssh_cuts_them() {
        let long = format!("/{}", "d".repeat(150));
        let shown = &long[..100];
        assert!(answers(
            &format!("Enter passphrase for key '{shown}': "),
            &[&long]
        ));
        assert!(!answers(
            &format!("Enter passphrase for key '{long}': "),
            &[&long]
        ));
    }
}
