//! The ssh argv builder (`ssh-key/test`): the only place an ssh command line is made.
//!
//! The user and host come from a borgmatic configuration, the key name from a
//! client; each is checked here in the form ssh receives it, and the destination
//! follows `--`, so none of them can become an ssh option (`-oProxyCommand=…`).
//!
//! Imports nothing of the crate.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Why an ssh command was not built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} cannot be passed to ssh (it would start with '-', or holds a blank, '@' or a control character)")]
pub struct SshArgError(pub &'static str);

/// `[user@]host`, each part non-empty, never starting with `-`, without blanks,
/// control characters or a second `@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshDestination(String);

fn plain(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '@')
}

impl SshDestination {
    /// The destination, if `user` and `host` cannot be taken for ssh options.
    pub fn new(user: Option<&str>, host: &str) -> Result<Self, SshArgError> {
        if !plain(host) {
            return Err(SshArgError("the host"));
        }
        match user {
            Some(u) if !plain(u) => Err(SshArgError("the user")),
            Some(u) => Ok(Self(format!("{u}@{host}"))),
            None => Ok(Self(host.to_string())),
        }
    }
}

/// `ssh -i KEY -p PORT -o … -- DESTINATION true`: authenticate, run nothing.
#[derive(Debug, Clone)]
pub struct SshProbe {
    /// An absolute path (a relative one could start with `-`).
    key: PathBuf,
    port: u16,
    known_hosts: PathBuf,
    destination: SshDestination,
    /// Let ssh ask the askpass helper for the key passphrase.
    askpass: bool,
}

impl SshProbe {
    /// The probe, if both paths are absolute; `askpass` lets ssh ask for the key passphrase.
    pub fn new(
        key: &Path,
        port: u16,
        known_hosts: &Path,
        destination: SshDestination,
        askpass: bool,
    ) -> Result<Self, SshArgError> {
        let absolute = |p: &Path| p.is_absolute() && !p.to_string_lossy().contains(['\n', '\0']);
        if !absolute(key) {
            return Err(SshArgError("the key path"));
        }
        if !absolute(known_hosts) {
            return Err(SshArgError("the known_hosts path"));
        }
        Ok(Self {
            key: key.to_path_buf(),
            port,
            known_hosts: known_hosts.to_path_buf(),
            destination,
            askpass,
        })
    }

    /// The arguments after `ssh`: the key alone, no password prompts, the destination after `--`.
    pub fn argv(&self) -> Vec<OsString> {
        let mut known = OsString::from("UserKnownHostsFile=");
        known.push(self.known_hosts.as_os_str());
        let mut args: Vec<OsString> = vec![
            "-i".into(),
            self.key.clone().into(),
            "-p".into(),
            self.port.to_string().into(),
        ];
        let mut opt = |o: OsString| {
            args.push("-o".into());
            args.push(o);
        };
        for o in [
            "IdentitiesOnly=yes",
            "PasswordAuthentication=no",
            "KbdInteractiveAuthentication=no",
            "StrictHostKeyChecking=accept-new",
        ] {
            opt(o.into());
        }
        opt(known);
        opt("ConnectTimeout=10".into());
        if self.askpass {
            // BatchMode would stop ssh from asking the askpass helper.
            opt("BatchMode=no".into());
            opt("NumberOfPasswordPrompts=1".into());
        } else {
            opt("BatchMode=yes".into());
        }
        args.extend([
            "--".into(),
            self.destination.0.clone().into(),
            "true".into(),
        ]);
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_that_ssh_could_read_as_options_are_refused() {
        for (user, host) in [
            (None, "-oProxyCommand=id"),
            (Some("-oProxyCommand=id"), "h"),
            (None, ""),
            (Some("a b"), "h"),
            (None, "h\nx"),
            (Some("a@b"), "h"),
        ] {
            assert!(
                SshDestination::new(user, host).is_err(),
                "{user:?} {host:?}"
            );
        }
        let d = SshDestination::new(Some("root"), "127.0.0.1").unwrap();
        let p = SshProbe::new(
            Path::new("/k/id"),
            22,
            Path::new("/k/known_hosts"),
            d,
            false,
        )
        .unwrap();
        let argv = p.argv();
        let dd = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(argv[dd + 1], "root@127.0.0.1");
        assert_eq!(argv.len(), dd + 3);
        assert!(SshProbe::new(
            Path::new("-k"),
            22,
            Path::new("/k/known_hosts"),
            SshDestination::new(None, "h").unwrap(),
            false
        )
        .is_err());
    }
}
