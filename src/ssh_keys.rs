//! SSH keys for remote repositories under `ssh.key_dir`: list, show (public half and
//! fingerprint only), create, rotate (the old key kept as `<name>.old`), delete.
//!
//! Keys are made in-process (ed25519, OpenSSH format, encrypted with the
//! passphrase when one is given) rather than with `ssh-keygen -N <passphrase>`,
//! which would put the passphrase in argv. Private keys never leave the machine.
//!
//! The key directory may be a user's `~/.ssh` (the default is `/root/.ssh`), shared
//! with files that are not ours. `show` and `test` use only a *key*: a regular file
//! (never a link) holding an OpenSSH private key whose `.pub`, if present, is a
//! regular file holding its public half. `rotate` and `delete` change only a key this
//! worker made, whose public half carries the [`MARK`] comment (so root's own
//! `id_ed25519`, which borg may need, is safe). `known_hosts`, `config`,
//! `authorized_keys`, links and any other file are refused and left untouched.
//!
//! Imports `domain` (`KeyName`, `RestrictPath`) and `config::Secret`.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::config::Secret;
use crate::domain::{KeyName, RestrictPath};

/// Why a key operation was refused or failed; each message is safe to show a client.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key (or no public half) of that name.
    #[error("no key {0}")]
    NotFound(String),
    /// `ssh-key/create` of a name already taken.
    #[error("key {0} already exists (ssh-key/rotate replaces a key)")]
    Exists(String),
    /// A file that is not a key this worker may use or change; it is left alone.
    #[error("{0} in the key directory is not a key this worker manages; left untouched")]
    NotManaged(String),
    /// Reading or writing the key directory failed.
    #[error("{0}")]
    Io(String),
}

/// What may be shown of a key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// The key's file name in the key directory.
    pub name: String,
    /// The key type, as OpenSSH names it (`ssh-ed25519`).
    pub algorithm: String,
    /// The SHA-256 fingerprint (`SHA256:…`), as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The public key's comment; keys made here start with [`MARK`].
    pub comment: String,
    /// The `.pub` line to put in the remote's `authorized_keys`.
    pub public_key: String,
    /// Whether the private key is protected by a passphrase.
    pub encrypted: bool,
    /// Whether a rotated-out `<name>.old` exists.
    pub has_old: bool,
}

/// The keys in one directory (`ssh.key_dir`); every change goes through it.
pub struct KeyStore {
    dir: PathBuf,
}

fn io(e: impl std::fmt::Display) -> KeyError {
    KeyError::Io(e.to_string())
}

/// The comment prefix of every key this worker makes: only those may be rotated
/// or deleted.
pub const MARK: &str = "borgmatic-mqtt@";

/// Largest key file read (an ed25519 key is well under 1 KiB).
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The text of `path` if it is a regular file and not a link (checked on the
/// opened file too, so a swap in between is noticed); `None` when it is missing.
fn read_regular(path: &Path, name: &str) -> Result<Option<String>, KeyError> {
    let before = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if !before.file_type().is_file() || before.len() > MAX_KEY_FILE {
        return Err(KeyError::NotManaged(name.into()));
    }
    let f = std::fs::File::open(path).map_err(io)?;
    let after = f.metadata().map_err(io)?;
    if (after.dev(), after.ino()) != (before.dev(), before.ino()) {
        return Err(KeyError::NotManaged(name.into()));
    }
    let mut text = String::new();
    f.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|_| KeyError::NotManaged(name.into()))?;
    Ok(Some(text))
}

/// Whether anything (a link included) is at `path`.
fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// A key this worker manages, read from disk.
struct Managed {
    private: PrivateKey,
    /// The `.pub` file's text, when there is one.
    public_text: Option<String>,
    /// Its public half carries [`MARK`]: this worker made it.
    made_here: bool,
}

impl KeyStore {
    /// The store of `dir`; nothing is read until asked.
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

    /// `<name>` if it is a key this worker manages: a regular file holding an
    /// OpenSSH private key, and `<name>.pub`, when present, a regular file holding
    /// its public half. Missing: `NotFound`; anything else: `NotManaged`.
    fn managed(&self, name: &str) -> Result<Managed, KeyError> {
        let text = read_regular(&self.private(name), name)?
            .ok_or_else(|| KeyError::NotFound(name.into()))?;
        let private =
            PrivateKey::from_openssh(text.trim()).map_err(|_| KeyError::NotManaged(name.into()))?;
        let public_text = read_regular(&self.public(name), name)?;
        let mut made_here = false;
        if let Some(t) = &public_text {
            let public =
                PublicKey::from_openssh(t.trim()).map_err(|_| KeyError::NotManaged(name.into()))?;
            if public.key_data() != private.public_key().key_data() {
                return Err(KeyError::NotManaged(name.into()));
            }
            made_here = public.comment().starts_with(MARK);
        }
        Ok(Managed {
            private,
            public_text,
            made_here,
        })
    }

    /// A key this worker made (what `rotate` and `delete` may change).
    fn made_here(&self, name: &str) -> Result<Managed, KeyError> {
        let key = self.managed(name)?;
        if !key.made_here {
            return Err(KeyError::NotManaged(name.into()));
        }
        Ok(key)
    }

    /// The private key file of a managed key (for `ssh -i`).
    pub fn private_path(&self, name: &KeyName) -> Result<PathBuf, KeyError> {
        self.managed(name.as_str())?;
        Ok(self.private(name.as_str()))
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
            if KeyName::parse(name).is_err() {
                continue;
            }
            if let Ok(info) = self.info(name) {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// What may be shown of one key (never its private half).
    pub fn show(&self, name: &KeyName) -> Result<KeyInfo, KeyError> {
        self.info(name.as_str())
    }

    fn info(&self, name: &str) -> Result<KeyInfo, KeyError> {
        let key = self.managed(name)?;
        let text = key
            .public_text
            .ok_or_else(|| KeyError::NotFound(format!("{name}.pub")))?;
        let public = PublicKey::from_openssh(text.trim()).map_err(io)?;
        let encrypted = key.private.is_encrypted();
        Ok(KeyInfo {
            name: name.into(),
            algorithm: public.algorithm().to_string(),
            fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
            comment: public.comment().into(),
            public_key: text.trim().into(),
            encrypted,
            has_old: self.managed(&format!("{name}.old")).is_ok(),
        })
    }

    /// The public half of a key this worker made as an `authorized_keys` line that
    /// lets it run nothing but `borg serve --restrict-to-path <path>` (and
    /// `--append-only` when asked): `command="…",restrict <key> <comment>`. sshd
    /// runs the forced command whatever the client asks for; `restrict` turns off
    /// forwarding, agent, X11 and pty. `path` is inert in a shell by its type.
    pub fn authorized_line(
        &self,
        name: &KeyName,
        path: &RestrictPath,
        append_only: bool,
    ) -> Result<String, KeyError> {
        self.made_here(name.as_str())?;
        let info = self.info(name.as_str())?;
        // The line is rebuilt from the parsed key: one line, nothing but the key
        // and a comment without control characters.
        let public = PublicKey::from_openssh(&info.public_key).map_err(io)?;
        if public.comment().chars().any(char::is_control) {
            return Err(KeyError::NotManaged(name.as_str().into()));
        }
        let key = public.to_openssh().map_err(io)?;
        let append = if append_only { " --append-only" } else { "" };
        Ok(format!(
            "command=\"borg serve --restrict-to-path {}{append}\",restrict {key}",
            path.as_str()
        ))
    }

    /// A new ed25519 key, encrypted with `passphrase` when given.
    pub fn create(
        &self,
        name: &KeyName,
        passphrase: Option<&Secret>,
        comment: &str,
    ) -> Result<KeyInfo, KeyError> {
        if present(&self.private(name.as_str())) || present(&self.public(name.as_str())) {
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
        self.made_here(n)?;
        let old = format!("{n}.old");
        // What the rename replaces must be ours too.
        if present(&self.private(&old)) || present(&self.public(&old)) {
            self.made_here(&old)?;
        }
        std::fs::rename(self.private(n), self.private(&old)).map_err(io)?;
        std::fs::rename(self.public(n), self.public(&old)).map_err(io)?;
        self.write_new(n, passphrase, comment)?;
        self.info(n)
    }

    /// Removes both halves of a key (`<name>.old` is a key of its own).
    pub fn delete(&self, name: &KeyName) -> Result<(), KeyError> {
        let n = name.as_str();
        self.made_here(n)?;
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
        if comment.starts_with(MARK) {
            key.set_comment(comment);
        } else {
            key.set_comment(format!("{MARK}{comment}"));
        }
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
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(self.public(name))
            .and_then(|mut f| f.write_all(format!("{public}\n").as_bytes()))
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
