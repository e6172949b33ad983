//! The binary's `askpass` mode: ssh runs `$SSH_ASKPASS "<prompt>"` to get a key
//! passphrase. The worker points `SSH_ASKPASS` at its own binary and hands the
//! passphrase over in the environment (never argv). Only key-passphrase prompts are
//! answered: a host-key confirmation or a password prompt gets nothing, so a wrong
//! prompt can never receive the secret.

use std::io::Write;

/// Environment variable that carries the passphrase to the askpass process.
pub const SECRET_ENV: &str = "BORGMATIC_MQTT_ASKPASS_SECRET";

/// Whether this process was started by ssh as the askpass helper.
pub fn requested() -> bool {
    std::env::var_os(SECRET_ENV).is_some()
}

/// Answers one prompt: prints the passphrase for a key-passphrase prompt (exit 0),
/// refuses anything else (exit 1).
pub fn run(prompt: &str) -> i32 {
    let Ok(secret) = std::env::var(SECRET_ENV) else {
        return 1;
    };
    if !is_key_passphrase_prompt(prompt) {
        eprintln!("borgmatic-mqtt askpass: refusing to answer {prompt:?}");
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

fn is_key_passphrase_prompt(prompt: &str) -> bool {
    let p = prompt.to_ascii_lowercase();
    p.contains("passphrase for") || p.starts_with("enter passphrase")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_key_prompts_are_answered() {
        assert!(is_key_passphrase_prompt(
            "Enter passphrase for key '/root/.ssh/id_ed25519': "
        ));
        assert!(!is_key_passphrase_prompt(
            "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
        ));
        assert!(!is_key_passphrase_prompt("root@host's password: "));
    }
}
