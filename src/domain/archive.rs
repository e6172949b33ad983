//! An archive's name, in the form borgmatic hands it to borg.
//!
//! Imports nothing outside `domain`.

use serde::{Deserialize, Serialize};

use super::{argv_safe, quote, FieldError};

/// A borg archive name (or `latest`): printable, no `/`, no `::`, never an option,
/// and never a pattern. borgmatic hands it to borg as `REPO::NAME`, and to
/// `check` as `--glob-archives NAME` (its own argv element), where glob characters
/// or a `sh:`/`re:` prefix would select other archives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArchiveName(String);

impl ArchiveName {
    /// The name, if it is one (never a pattern, never an option).
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
                quote(s)
            )));
        }
        Ok(Self(s.to_string()))
    }
    /// `latest`: borgmatic's name for the newest archive.
    pub fn latest() -> Self {
        Self("latest".into())
    }
    /// The name as borgmatic receives it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

super::string_newtype_conversions!(ArchiveName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names() {
        assert!(ArchiveName::parse("20251124_020000-nextcloud-aio").is_ok());
        assert!(ArchiveName::parse("host-2026-11-24T10:41:37.465093").is_ok());
        for bad in ["", "-x", "a/b", "repo::arch", "a\nb", "sh:*", "re:x", "a*"] {
            assert!(ArchiveName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
