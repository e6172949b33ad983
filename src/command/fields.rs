//! Domain newtypes whose only constructors validate, so that a value of the type is
//! known to be safe to put into an argv, a path or a topic.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a field value was refused; becomes an `invalid` answer naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldError(pub String);

/// The label of one borgmatic configuration file: `^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$`,
/// so `<config_dir>/<label>.yaml` cannot leave the config directory, and a label is
/// never an option wherever it is quoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepositoryLabel(String);

impl RepositoryLabel {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let ok_chars = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if s.is_empty() || s.len() > 64 || !ok_chars || s.starts_with(['.', '-']) {
            return Err(FieldError(format!(
                "repository must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,63}}, got {}",
                shorten(s)
            )));
        }
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RepositoryLabel {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<RepositoryLabel> for String {
    fn from(l: RepositoryLabel) -> String {
        l.0
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
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let label = RepositoryLabel::parse(s).map_err(|_| {
            FieldError(format!(
                "name must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,63}}, got {}",
                shorten(s)
            ))
        })?;
        if s.ends_with(".pub") || NOT_KEY_NAMES.contains(&s) {
            return Err(FieldError(format!(
                "name {} is not a key name (no .pub suffix, not known_hosts, config, authorized_keys…)",
                shorten(s)
            )));
        }
        Ok(Self(label.0))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A host name or address as it may appear in a repository URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl HostName {
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
                shorten(s)
            )));
        }
        Ok(Self(host.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client's request id: at most 64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Err(FieldError(
                "request_id must be 1 to 64 printable ASCII characters".into(),
            ));
        }
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RequestId {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<RequestId> for String {
    fn from(r: RequestId) -> String {
        r.0
    }
}

/// A job id: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(uuid::Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| FieldError(format!("job_id is not a UUID: {}", shorten(s))))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl TryFrom<String> for JobId {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<JobId> for String {
    fn from(j: JobId) -> String {
        j.0.to_string()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn printable(s: &str) -> bool {
    !s.chars().any(|c| c.is_control())
}

/// Whether `s` could be read as something other than itself where it is passed as
/// one argv element: an option (`-…`, also after leading blanks), a control
/// character (NUL ends a C string, a newline starts a new log line or command).
fn argv_safe(s: &str) -> bool {
    !s.starts_with('-') && !s.starts_with(char::is_whitespace) && !s.chars().any(char::is_control)
}

/// A borg archive name (or `latest`): printable, no `/`, no `::`, never an option,
/// and never a pattern. borgmatic hands it to borg as `REPO::NAME`, and to
/// `check` as `--glob-archives NAME` (its own argv element), where glob characters
/// or a `sh:`/`re:` prefix would select other archives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArchiveName(String);

impl ArchiveName {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let pattern_prefix = s.split_once(':').is_some_and(|(p, _)| {
            (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_lowercase())
        });
        if s.is_empty()
            || s.len() > 255
            || !argv_safe(s)
            || s.ends_with(char::is_whitespace)
            || s.contains(['/', '*', '?', '[', ']', '\\'])
            || s.contains("::")
            || pattern_prefix
        {
            return Err(FieldError(format!(
                "archive must be an archive name (1 to 255 printable characters, no '/', no glob characters, not starting with '-' or a blank), got {}",
                shorten(s)
            )));
        }
        Ok(Self(s.to_string()))
    }
    pub fn latest() -> Self {
        Self("latest".into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A path inside an archive, held in the form borg stores it and the worker passes
/// it: relative (leading `/` removed), normalised (no empty, `.` or `..` component,
/// no trailing `/`), and then checked, so the checked string is the passed string.
/// It never starts with `-` or a blank and holds no control character.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArchivePath(String);

impl ArchivePath {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let normal = s.trim_start_matches('/').trim_end_matches('/');
        let ok = !normal.is_empty()
            && s.len() <= 4096
            && argv_safe(normal)
            && !s.chars().any(char::is_control)
            && normal
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !ok {
            return Err(FieldError(format!(
                "paths must be paths inside the archive (no '.', '..' or empty component, not starting with '-' or a blank once the leading '/' is removed), got {}",
                shorten(s)
            )));
        }
        Ok(Self(normal.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A relative path below one of the worker's roots (restore root, mount root): only
/// plain components, so joining it to the root cannot climb out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubPath(String);

impl SubPath {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        // No shell ever sees it, but no restore needs shell syntax in a path either:
        // refusing it makes a confused or hostile request obvious.
        let no_shell_syntax = !s.chars().any(|c| ";&|$`<>(){}[]*?!#'\"\\".contains(c));
        let ok = !s.is_empty()
            && s.len() <= 1024
            && printable(s)
            && no_shell_syntax
            && !s.starts_with('/')
            && s.split('/')
                .all(|c| argv_safe(c) && c != "." && c != ".." && !c.is_empty());
        if !ok {
            return Err(FieldError(format!(
                "must be a relative path below the configured root (no leading '/', no '.' or '..', no component starting with '-' or a blank, no shell syntax), got {}",
                shorten(s)
            )));
        }
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A container name as Docker allows it: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerName(String);

impl ContainerName {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(FieldError(format!(
                "container must be a container name ([A-Za-z0-9][A-Za-z0-9_.-]*), got {}",
                shorten(s)
            )));
        }
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An exec argv: 1 to 64 arguments, each printable and at most 4096 characters.
/// (Which argv may run is the exec policy's decision, not this type's.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct ExecArgv(Vec<String>);

impl ExecArgv {
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl TryFrom<Vec<String>> for ExecArgv {
    type Error = FieldError;
    fn try_from(v: Vec<String>) -> Result<Self, FieldError> {
        if v.is_empty()
            || v.len() > 64
            || v.iter().any(|a| a.len() > 4096 || !printable(a))
            || !argv_safe(&v[0])
            || v[0].is_empty()
        {
            return Err(FieldError(
                "command must be a list of 1 to 64 printable arguments whose first is a program, not an option (an argv, not a shell line)"
                    .into(),
            ));
        }
        Ok(Self(v))
    }
}

impl From<ExecArgv> for Vec<String> {
    fn from(a: ExecArgv) -> Vec<String> {
        a.0
    }
}

/// The environment of an exec: at most 64 variables, names `[A-Za-z_][A-Za-z0-9_]{0,127}`,
/// values printable and at most 4096 characters. Docker receives `NAME=value`
/// strings, so a `=` or NUL in a name would set a different variable.
pub(crate) fn exec_env<'de, D>(d: D) -> Result<std::collections::BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let env = std::collections::BTreeMap::<String, String>::deserialize(d)?;
    let name_ok = |n: &str| {
        n.len() <= 128
            && n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if env.len() > 64
        || env
            .iter()
            .any(|(k, v)| !name_ok(k) || v.len() > 4096 || !printable(v))
    {
        return Err(serde::de::Error::custom(
            "env must map at most 64 names [A-Za-z_][A-Za-z0-9_]* to printable values",
        ));
    }
    Ok(env)
}

macro_rules! string_newtype_conversions {
    ($($t:ident),*) => {$(
        impl TryFrom<String> for $t {
            type Error = FieldError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    )*};
}

string_newtype_conversions!(
    ArchiveName,
    ArchivePath,
    SubPath,
    ContainerName,
    KeyName,
    HostName
);

/// Quotes a client value for an error message: a short printable prefix, never a
/// configured secret (see [`crate::redact::quote`]).
pub(crate) fn shorten(s: &str) -> String {
    crate::redact::quote(s)
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
    fn archive_names_paths_and_subpaths() {
        assert!(ArchiveName::parse("20251124_020000-nextcloud-aio").is_ok());
        assert!(ArchiveName::parse("host-2026-11-24T10:41:37.465093").is_ok());
        for bad in ["", "-x", "a/b", "repo::arch", "a\nb"] {
            assert!(ArchiveName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ArchivePath::parse("/srv/data/x").unwrap().as_str(),
            "srv/data/x"
        );
        for bad in ["../etc", "srv/../../etc", "-rf", "", "/", "a\0b"] {
            assert!(ArchivePath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(SubPath::parse("nextcloud/2026-11-24").is_ok());
        assert!(SubPath::parse("Nextcloud Daten/Ärger-2026").is_ok());
        for bad in [
            "",
            "/abs",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "-x",
            "a\nb",
            "x; id",
            "$(id)",
            "`id`",
            "a|b",
        ] {
            assert!(SubPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_ids_are_bounded_and_printable() {
        assert!(RequestId::parse("nr-42").is_ok());
        assert!(RequestId::parse("").is_err());
        assert!(RequestId::parse(&"x".repeat(65)).is_err());
        assert!(RequestId::parse("a\nb").is_err());
    }

    #[test]
    fn job_ids_are_v7_and_round_trip() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b, "v7 ids sort by time");
        assert_eq!(JobId::parse(&a.to_string()).unwrap(), a);
        assert!(JobId::parse("not-a-uuid").is_err());
    }
}
