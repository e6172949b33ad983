//! Paths a client names: inside an archive, or below one of the worker's roots.
//!
//! Imports nothing outside `domain`.

use serde::{Deserialize, Serialize};

use super::{argv_safe, printable, quote, FieldError};

/// A path inside an archive, held in the form borg stores it and the worker passes
/// it: relative (leading `/` removed), normalised (no empty, `.` or `..` component,
/// no trailing `/`), and then checked, so the checked string is the passed string.
/// It never starts with `-` or a blank and holds no control character.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArchivePath(String);

impl ArchivePath {
    /// The path in its final form (leading and trailing `/` removed), if it is one.
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
                quote(s)
            )));
        }
        Ok(Self(normal.to_string()))
    }
    /// The path as borg receives it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Whether `item` (a path as borg lists it) is this path or lies below it.
    pub fn contains(&self, item: &str) -> bool {
        item.strip_prefix(self.0.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// A relative path below one of the worker's roots (restore root, mount root): only
/// plain components, so joining it to the root cannot climb out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubPath(String);

impl SubPath {
    /// The path, if it has only plain components and no shell syntax.
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
                quote(s)
            )));
        }
        Ok(Self(s.to_string()))
    }
    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An absolute directory on a remote host that `borg serve --restrict-to-path`
/// confines a key to. It is written into an `authorized_keys` `command="…"`, which
/// sshd hands to the remote user's shell, so only characters that no shell or
/// `authorized_keys` parser reads specially are allowed: ASCII letters, digits and
/// `/ . _ - + @ : , =`. It is absolute, has no empty, `.` or `..` component, and
/// never starts with `-` (it starts with `/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RestrictPath(String);

impl RestrictPath {
    /// The path in its final form (one trailing `/` removed), if it is one.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let normal = match s.strip_suffix('/') {
            Some(n) if !n.is_empty() => n,
            _ => s,
        };
        let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+@:,=".contains(c);
        let ok = normal.len() > 1
            && normal.len() <= 1024
            && normal.starts_with('/')
            && normal.chars().all(plain)
            && normal[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && argv_safe(c));
        if !ok {
            return Err(FieldError(format!(
                "path must be an absolute directory other than / (letters, digits and / . _ - + @ : , = only; no '.', '..' or empty component, no component starting with '-'), got {}",
                quote(s)
            )));
        }
        Ok(Self(normal.to_string()))
    }
    /// The path as written into the forced command.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

super::string_newtype_conversions!(ArchivePath, SubPath, RestrictPath);

/// A path below one of the worker's roots as a client may write it: relative to the
/// root (a [`SubPath`]), or absolute and inside the root (as the worker's own
/// answers give it back). Either way its components follow [`SubPath`]'s rules;
/// [`RootPath::below`] turns it into the [`SubPath`] below a root, the form that is
/// finally confined and used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RootPath(String);

impl RootPath {
    /// The path, if it is a [`SubPath`] or `/` followed by one.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        SubPath::parse(s.strip_prefix('/').unwrap_or(s)).map_err(|_| {
            FieldError(format!(
                "must be a path below the configured root, relative to it or absolute (no '.' or '..', no empty component, no component starting with '-' or a blank, no shell syntax), got {}",
                quote(s)
            ))
        })?;
        Ok(Self(s.to_string()))
    }
    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The part of this path below the first of `roots` (absolute paths) it lies
    /// in, or itself when it is relative; `None` when it is absolute and lies in
    /// none of them, or names a root itself.
    pub fn below(&self, roots: &[&std::path::Path]) -> Option<SubPath> {
        if !self.0.starts_with('/') {
            return SubPath::parse(&self.0).ok();
        }
        let path = std::path::Path::new(&self.0);
        roots.iter().find_map(|root| {
            let rest = path.strip_prefix(root).ok()?.to_str()?;
            SubPath::parse(rest).ok()
        })
    }
}

super::string_newtype_conversions!(RootPath);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_are_normalised_then_checked() {
        assert_eq!(
            ArchivePath::parse("/srv/data/x").unwrap().as_str(),
            "srv/data/x"
        );
        for bad in ["../etc", "srv/../../etc", "-rf", "", "/", "a\0b", "/ -x"] {
            assert!(ArchivePath::parse(bad).is_err(), "{bad:?}");
        }
        let p = ArchivePath::parse("srv/data").unwrap();
        assert!(p.contains("srv/data") && p.contains("srv/data/x"));
        assert!(!p.contains("srv/database") && !p.contains("srv"));
    }

    #[test]
    fn restrict_paths_are_absolute_and_inert_in_a_shell() {
        assert_eq!(
            RestrictPath::parse("/srv/borg/nc/").unwrap().as_str(),
            "/srv/borg/nc"
        );
        assert!(RestrictPath::parse("/srv/borg-1/nc_2.x").is_ok());
        for bad in [
            "",
            "/",
            "//",
            "srv/borg",
            "-/x",
            "/srv/../etc",
            "/srv/./x",
            "/srv//x",
            "/srv/-x",
            "/srv/a b",
            "/srv/a\tb",
            "/srv/a\nb",
            "/srv/\"x",
            "/srv/'x",
            "/srv/$(id)",
            "/srv/`id`",
            "/srv/a;b",
            "/srv/~",
            "/srv/a\\b",
            "/srv/Ärger",
        ] {
            assert!(RestrictPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn root_paths_are_relative_or_inside_a_root() {
        let root = std::path::Path::new("/restore");
        let canonical = std::path::Path::new("/data/restore");
        let below = |s: &str| {
            RootPath::parse(s)
                .unwrap()
                .below(&[root, canonical])
                .map(|p| p.as_str().to_string())
        };
        assert_eq!(below("a/b").as_deref(), Some("a/b"));
        assert_eq!(below("/restore/a/b").as_deref(), Some("a/b"));
        assert_eq!(below("/data/restore/x").as_deref(), Some("x"));
        assert_eq!(below("/restore"), None, "the root itself");
        assert_eq!(below("/restored/x"), None, "a sibling sharing a prefix");
        assert_eq!(below("/etc/passwd"), None);
        for bad in [
            "",
            "/",
            "//x",
            "/restore/../etc",
            "/restore/./x",
            "-x",
            "/restore/-x",
            "/a//b",
            "/x;id",
        ] {
            assert!(RootPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subpaths_stay_below_their_root() {
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
}
