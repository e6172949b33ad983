//! borg's repository encryption modes, as `repo/create` accepts them.
//!
//! Imports nothing outside `domain`.

use serde::{Deserialize, Serialize};

/// A borg 1.2 encryption mode (`borg init --encryption`). A closed set: the value
/// reaches borgmatic's argv only as one of these fixed words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptionMode {
    /// The key lives in the repository, encrypted with the passphrase.
    Repokey,
    /// `repokey` with BLAKE2b authentication.
    RepokeyBlake2,
    /// The key lives in a file on the client (`BORG_KEYS_DIR`).
    Keyfile,
    /// `keyfile` with BLAKE2b authentication.
    KeyfileBlake2,
    /// Authenticated but not encrypted.
    Authenticated,
    /// `authenticated` with BLAKE2b.
    AuthenticatedBlake2,
    /// Neither encrypted nor authenticated.
    #[serde(rename = "none")]
    Unencrypted,
}

impl EncryptionMode {
    /// Every mode, in the order the schema lists them.
    pub const ALL: [EncryptionMode; 7] = [
        EncryptionMode::Repokey,
        EncryptionMode::RepokeyBlake2,
        EncryptionMode::Keyfile,
        EncryptionMode::KeyfileBlake2,
        EncryptionMode::Authenticated,
        EncryptionMode::AuthenticatedBlake2,
        EncryptionMode::Unencrypted,
    ];

    /// borg's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionMode::Repokey => "repokey",
            EncryptionMode::RepokeyBlake2 => "repokey-blake2",
            EncryptionMode::Keyfile => "keyfile",
            EncryptionMode::KeyfileBlake2 => "keyfile-blake2",
            EncryptionMode::Authenticated => "authenticated",
            EncryptionMode::AuthenticatedBlake2 => "authenticated-blake2",
            EncryptionMode::Unencrypted => "none",
        }
    }

    /// The mode named `s` (as written in a borgmatic configuration).
    pub fn parse(s: &str) -> Option<EncryptionMode> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for m in EncryptionMode::ALL {
            let v = serde_json::to_value(m).unwrap();
            assert_eq!(v, m.as_str());
            assert_eq!(serde_json::from_value::<EncryptionMode>(v).unwrap(), m);
            assert_eq!(EncryptionMode::parse(m.as_str()), Some(m));
        }
        assert!(serde_json::from_value::<EncryptionMode>("--repokey".into()).is_err());
        assert!(EncryptionMode::parse("Repokey").is_none());
    }
}
