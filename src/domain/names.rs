//! Names that select a configured thing: a repository label, an SSH key file, a
//! host. Each is checked in the form in which it is finally used.
//!
//! Imports nothing outside `domain`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{quote, FieldError};

/// The label of one borgmatic configuration file: `^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$`,
/// so `<config_dir>/<label>.yaml` cannot leave the config directory, and a label is
/// never an option wherever it is quoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepositoryLabel(String);

impl RepositoryLabel {
    /// The rule of [`RepositoryLabel::parse`] (and of key names) as a JSON-schema
    /// pattern, for the OpenAPI document.
    pub const PATTERN: &'static str = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$";

    /// The label, if it is one; the error says which rule it breaks.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let ok_chars = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if s.is_empty() || s.len() > 64 || !ok_chars || s.starts_with(['.', '-']) {
            return Err(FieldError(format!(
                "repository must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,63}}, got {}",
                quote(s)
            )));
        }
        Ok(Self(s.to_string()))
    }
    /// The label as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepositoryLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Files an SSH directory holds that are not keys: a key may never take their name
/// (`ssh` would read a key called `config` as its configuration).
const NOT_KEY_NAMES: &[&str] = &[
    "known_hosts",
    "known_hosts.old",
    "config",
    "authorized_keys",
    "authorized_keys2",
    "environment",
    "rc",
];

/// The name of an SSH key file under `ssh.key_dir`: the same rules as a label
/// (`^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$`), so it cannot leave the directory; never
/// `<x>.pub` (the public half of another key) nor the name of a file ssh reads for
/// something else ([`NOT_KEY_NAMES`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyName(String);

impl KeyName {
    /// The rule of [`KeyName::parse`] as a JSON-schema pattern (a label's).
    pub const PATTERN: &'static str = RepositoryLabel::PATTERN;

    /// The key name, if it is one; the error says which rule it breaks.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let label = RepositoryLabel::parse(s).map_err(|_| {
            FieldError(format!(
                "name must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,63}}, got {}",
                quote(s)
            ))
        })?;
        if s.ends_with(".pub") || NOT_KEY_NAMES.contains(&s) {
            return Err(FieldError(format!(
                "name {} is not a key name (no .pub suffix, not known_hosts, config, authorized_keys…)",
                quote(s)
            )));
        }
        Ok(Self(label.0))
    }
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A host name or address as it may appear in a repository URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl HostName {
    /// The host, if it looks like a host name or an IP address (IPv6 brackets removed).
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        // The final form is the address without IPv6 brackets: that is what is
        // compared and quoted, so that is what is checked.
        let host = s
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(s);
        let ok = !host.is_empty()
            && host.len() <= 253
            && host.starts_with(|c: char| c.is_ascii_alphanumeric() || c == ':')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c));
        if !ok {
            return Err(FieldError(format!(
                "host must be a host name or address, got {}",
                quote(s)
            )));
        }
        Ok(Self(host.to_string()))
    }
    /// The host without brackets: what is compared and quoted.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of a database as a borgmatic database hook names it (`name:` of an
/// entry of `sqlite_databases`, `postgresql_databases`, …): 1 to 255 printable
/// characters, never an option, and never a pattern (borgmatic `restore` matches
/// `--data-source` with `fnmatch`, so `*`, `?`, `[`, `]` would select others).
/// Whether the repository's configuration names it is the handler's check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatabaseName(String);

impl DatabaseName {
    /// The name, if it is one (never a pattern, never an option).
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        if s.is_empty()
            || s.len() > 255
            || !super::argv_safe(s)
            || s.ends_with(char::is_whitespace)
            || s.contains(['*', '?', '[', ']', '\\'])
        {
            return Err(FieldError(format!(
                "database must be a configured database name (1 to 255 printable characters, no glob characters, not starting with '-' or a blank), got {}",
                quote(s)
            )));
        }
        Ok(Self(s.to_string()))
    }
    /// The name as borgmatic receives it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

super::string_newtype_conversions!(RepositoryLabel, KeyName, HostName, DatabaseName);

/// Checks a topic prefix: no wildcards, no empty levels, no leading `$`.
pub fn validate_topic_base(base: &str) -> Result<(), String> {
    if base.is_empty()
        || base.starts_with('$')
        || base.contains(['#', '+', '\0'])
        || base.split('/').any(|l| l.is_empty())
    {
        return Err(format!(
            "{base:?} is not a usable topic prefix (no wildcards, no empty levels, no leading $)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_refuse_traversal_and_shell_tricks() {
        for bad in [
            "",
            "..",
            ".",
            "../etc",
            "a/b",
            "a b",
            "x;rm -rf /",
            "$(id)",
            "`id`",
            ".hidden",
            "a\0b",
            "ü",
        ] {
            assert!(RepositoryLabel::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = "a".repeat(65);
        assert!(RepositoryLabel::parse(&long).is_err());
        for good in ["nextcloud", "a", "Repo_1.main-2", &"a".repeat(64)] {
            assert!(RepositoryLabel::parse(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn key_names_are_not_other_ssh_files() {
        assert!(KeyName::parse("id_borg").is_ok());
        for bad in ["id.pub", "config", "known_hosts", "../id", "-x"] {
            assert!(KeyName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_are_names_or_addresses() {
        assert_eq!(HostName::parse("[::1]").unwrap().as_str(), "::1");
        assert!(HostName::parse("nas.local").is_ok());
        for bad in ["", "-oProxyCommand=x", "a b", "a;b"] {
            assert!(HostName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
