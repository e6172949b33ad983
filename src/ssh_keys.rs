//! SSH keys for remote repositories under `ssh.key_dir`: list, show (public half and
//! fingerprint only), create, rotate (the old key kept as `<name>.old`), delete.
//!
//! Keys are made in-process (ed25519, OpenSSH format, encrypted with the
//! passphrase when one is given) rather than with `ssh-keygen -N <passphrase>`,
//! which would put the passphrase in argv. Private keys never leave the machine.

use std::path::{Path, PathBuf};

use serde::Serialize;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::command::KeyName;
use crate::config::Secret;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no key {0}")]
    NotFound(String),
    #[error("key {0} already exists (ssh-key/rotate replaces a key)")]
    Exists(String),
    #[error("{0}")]
    Io(String),
}

/// What may be shown of a key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub algorithm: String,
    pub fingerprint: String,
    pub comment: String,
    pub public_key: String,
    /// Whether the private key is protected by a passphrase.
    pub encrypted: bool,
    /// Whether a rotated-out `<name>.old` exists.
    pub has_old: bool,
}

pub struct KeyStore {
    dir: PathBuf,
}

fn io(e: impl std::fmt::Display) -> KeyError {
    KeyError::Io(e.to_string())
}

impl KeyStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn private(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn public(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pub"))
    }

    /// The private key file of a key (for `ssh -i`).
    pub fn private_path(&self, name: &KeyName) -> Result<PathBuf, KeyError> {
        let p = self.private(name.as_str());
        if p.is_file() {
            Ok(p)
        } else {
            Err(KeyError::NotFound(name.as_str().into()))
        }
    }

    /// Every key with both halves, sorted by name.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(e)),
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().to_string();
            let Some(name) = file.strip_suffix(".pub") else {
                continue;
            };
            if KeyName::parse(name).is_err() || !self.private(name).is_file() {
                continue;
            }
            if let Ok(info) = self.info(name) {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn show(&self, name: &KeyName) -> Result<KeyInfo, KeyError> {
        if !self.private(name.as_str()).is_file() {
            return Err(KeyError::NotFound(name.as_str().into()));
        }
        self.info(name.as_str())
    }

    fn info(&self, name: &str) -> Result<KeyInfo, KeyError> {
        let text = std::fs::read_to_string(self.public(name))
            .map_err(|_| KeyError::NotFound(name.into()))?;
        let public = PublicKey::from_openssh(text.trim()).map_err(io)?;
        let private = std::fs::read_to_string(self.private(name)).map_err(io)?;
        let encrypted = PrivateKey::from_openssh(private.trim())
            .map(|k| k.is_encrypted())
            .unwrap_or(false);
        Ok(KeyInfo {
            name: name.into(),
            algorithm: public.algorithm().to_string(),
            fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
            comment: public.comment().into(),
            public_key: text.trim().into(),
            encrypted,
            has_old: self.private(&format!("{name}.old")).is_file(),
        })
    }

    /// A new ed25519 key, encrypted with `passphrase` when given.
    pub fn create(
        &self,
        name: &KeyName,
        passphrase: Option<&Secret>,
        comment: &str,
    ) -> Result<KeyInfo, KeyError> {
        if self.private(name.as_str()).exists() || self.public(name.as_str()).exists() {
            return Err(KeyError::Exists(name.as_str().into()));
        }
        self.write_new(name.as_str(), passphrase, comment)?;
        self.info(name.as_str())
    }

    /// Moves the key to `<name>.old` and makes a new one in its place.
    pub fn rotate(
        &self,
        name: &KeyName,
        passphrase: Option<&Secret>,
        comment: &str,
    ) -> Result<KeyInfo, KeyError> {
        let n = name.as_str();
        if !self.private(n).is_file() {
            return Err(KeyError::NotFound(n.into()));
        }
        let old = format!("{n}.old");
        std::fs::rename(self.private(n), self.private(&old)).map_err(io)?;
        if self.public(n).exists() {
            std::fs::rename(self.public(n), self.public(&old)).map_err(io)?;
        }
        self.write_new(n, passphrase, comment)?;
        self.info(n)
    }

    /// Removes both halves of a key (`<name>.old` is a key of its own).
    pub fn delete(&self, name: &KeyName) -> Result<(), KeyError> {
        let n = name.as_str();
        if !self.private(n).is_file() && !self.public(n).is_file() {
            return Err(KeyError::NotFound(n.into()));
        }
        for p in [self.private(n), self.public(n)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(())
    }

    fn write_new(
        &self,
        name: &str,
        passphrase: Option<&Secret>,
        comment: &str,
    ) -> Result<(), KeyError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io)?;
        let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(io)?;
        key.set_comment(comment);
        let public = key.public_key().to_openssh().map_err(io)?;
        let stored = match passphrase {
            Some(p) => key.encrypt(&mut OsRng, p.expose().as_bytes()).map_err(io)?,
            None => key,
        };
        let pem = stored.to_openssh(LineEnding::LF).map_err(io)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.private(name))
            .map_err(io)?;
        f.write_all(pem.as_bytes()).map_err(io)?;
        std::fs::write(self.public(name), format!("{public}\n")).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_rotate_delete_and_only_public_halves_shown() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(&dir.path().join("keys"));
        let name = KeyName::parse("backup").unwrap();
        let info = store
            .create(
                &name,
                Some(&Secret::new("key-pass-1234")),
                "borgmatic-mqtt@test",
            )
            .unwrap();
        assert!(info.encrypted);
        assert!(info.public_key.starts_with("ssh-ed25519 "));
        assert!(info.fingerprint.starts_with("SHA256:"));
        assert!(matches!(
            store.create(&name, None, "x"),
            Err(KeyError::Exists(_))
        ));
        let shown = serde_json::to_string(&store.list().unwrap()).unwrap();
        assert!(!shown.contains("PRIVATE KEY"));
        let private = std::fs::read_to_string(dir.path().join("keys/backup")).unwrap();
        assert!(private.contains("OPENSSH PRIVATE KEY"));
        assert!(!private.contains("key-pass-1234"));

        let rotated = store.rotate(&name, None, "c").unwrap();
        assert!(!rotated.encrypted);
        assert!(rotated.has_old);
        assert_ne!(rotated.fingerprint, info.fingerprint);
        let names: Vec<String> = store.list().unwrap().into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["backup", "backup.old"]);
        store
            .delete(&KeyName::parse("backup.old").unwrap())
            .unwrap();
        assert!(!store.show(&name).unwrap().has_old);
        assert!(matches!(
            store.delete(&KeyName::parse("nope").unwrap()),
            Err(KeyError::NotFound(_))
        ));
    }
}
