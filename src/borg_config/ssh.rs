//! The SSH key files a borgmatic run may ask the passphrase of (for the askpass
//! helper), from the configuration's `ssh_command`.
//!
//! Imports nothing of the crate.

use std::path::{Path, PathBuf};

use super::BorgmaticConfig;

/// The key files ssh may ask the passphrase of for a borgmatic run with `config`:
/// those named by its `ssh_command` (`-i <file>`, `-o IdentityFile=<file>`), else
/// ssh's default identities in `~/.ssh`. The askpass helper answers only their
/// prompts.
pub fn ssh_identity_files(config: &Path) -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let expand = |p: &str| match (p.strip_prefix("~/"), &home) {
        (Some(rest), Some(h)) => h.join(rest),
        _ => PathBuf::from(p),
    };
    let named: Vec<PathBuf> = BorgmaticConfig::load(config)
        .ok()
        .and_then(|c| c.get_str("ssh_command").map(str::to_string))
        .and_then(|cmd| shlex::split(&cmd))
        .map(|words| identity_options(&words).iter().map(|p| expand(p)).collect())
        .unwrap_or_default();
    if !named.is_empty() {
        return named;
    }
    let Some(home) = home else { return vec![] };
    [
        "id_rsa",
        "id_ecdsa",
        "id_ecdsa_sk",
        "id_ed25519",
        "id_ed25519_sk",
        "id_xmss",
        "id_dsa",
    ]
    .iter()
    .map(|n| home.join(".ssh").join(n))
    .collect()
}

/// The values of `-i <f>`, `-i<f>`, `-o IdentityFile=<f>` and `-oIdentityFile <f>`.
fn identity_options(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = words.iter().peekable();
    while let Some(w) = it.next() {
        let option = if w == "-i" {
            it.next().cloned()
        } else if let Some(f) = w.strip_prefix("-i") {
            Some(f.to_string())
        } else if w == "-o" {
            it.next().and_then(|o| identity_file_option(o))
        } else {
            w.strip_prefix("-o").and_then(identity_file_option)
        };
        out.extend(option);
    }
    out
}

fn identity_file_option(o: &str) -> Option<String> {
    let (k, v) = o.split_once(['=', ' '])?;
    k.trim()
        .eq_ignore_ascii_case("identityfile")
        .then(|| v.trim().to_string())
}
