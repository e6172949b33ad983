//! Secret settings as one list ([`SecretSlot`]): their `_file` forms are read
//! here, the list of configured secret values (for scrubbing output) comes from
//! here, and [`is_secret_key`] tells the loader and the error rewriter which keys
//! hold a secret.
//!
//! Imports nothing of the crate beyond its siblings.

use std::path::PathBuf;

use super::guards::problem;
use super::{Problem, Secret, Settings};

impl Settings {
    pub(super) fn resolve_secret_files(&mut self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        for slot in self.secret_slots() {
            resolve(&slot.key, slot.value, slot.file, &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Every secret setting with its `_file` form: the one list that `_file`
    /// resolution, [`Settings::secret_values`] and the tests walk, so a new secret
    /// cannot be forgotten by one of them.
    pub(super) fn secret_slots(&mut self) -> Vec<SecretSlot<'_>> {
        let mut slots = vec![
            SecretSlot::new(
                "mqtt.password",
                &mut self.mqtt.password,
                &self.mqtt.password_file,
            ),
            SecretSlot::new(
                "auth.read_token",
                &mut self.auth.read_token,
                &self.auth.read_token_file,
            ),
            SecretSlot::new(
                "auth.write_token",
                &mut self.auth.write_token,
                &self.auth.write_token_file,
            ),
            SecretSlot::new(
                "auth.admin_token",
                &mut self.auth.admin_token,
                &self.auth.admin_token_file,
            ),
            SecretSlot::new(
                "http.from_header",
                &mut self.http.from_header,
                &self.http.from_header_file,
            ),
        ];
        for (label, repo) in self.repositories.iter_mut() {
            slots.push(SecretSlot::new(
                format!("repositories.{label}.passphrase"),
                &mut repo.passphrase,
                &repo.passphrase_file,
            ));
            slots.push(SecretSlot::new(
                format!("repositories.{label}.ssh_passphrase"),
                &mut repo.ssh_passphrase,
                &repo.ssh_passphrase_file,
            ));
        }
        slots
    }

    /// Every configured secret value, so that output can be scrubbed of them.
    pub fn secret_values(&self) -> Vec<String> {
        let mut copy = self.clone();
        let mut out: Vec<String> = copy
            .secret_slots()
            .into_iter()
            .filter_map(|slot| slot.value.as_ref().map(|s| s.expose().to_string()))
            .collect();
        out.retain(|s| !s.is_empty());
        out
    }
}

/// One secret setting: its key, its value and its `_file` form.
pub(super) struct SecretSlot<'a> {
    pub(super) key: String,
    pub(super) value: &'a mut Option<Secret>,
    pub(super) file: &'a Option<PathBuf>,
}

impl<'a> SecretSlot<'a> {
    fn new(
        key: impl Into<String>,
        value: &'a mut Option<Secret>,
        file: &'a Option<PathBuf>,
    ) -> Self {
        Self {
            key: key.into(),
            value,
            file,
        }
    }
}

/// The last part of every secret key (`mqtt.password`, `repositories.<label>.passphrase`, …).
const SECRET_LEAVES: &[&str] = &[
    "password",
    "read_token",
    "write_token",
    "admin_token",
    "from_header",
    "passphrase",
    "ssh_passphrase",
];

/// Whether a dotted key (any case) names a secret value (not its `_file`).
pub(super) fn is_secret_key(key: &str) -> bool {
    let leaf = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    SECRET_LEAVES.contains(&leaf.as_str())
}

fn resolve(key: &str, value: &mut Option<Secret>, file: &Option<PathBuf>, out: &mut Vec<Problem>) {
    let Some(path) = file else { return };
    if value.is_some() {
        out.push(problem(
            format!("{key}_file"),
            format!("both {key} and {key}_file are set; keep one"),
        ));
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(content) => {
            let trimmed = content.trim_end_matches(['\n', '\r']);
            *value = Some(Secret::new(trimmed));
        }
        Err(e) => out.push(problem(
            format!("{key}_file"),
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}
