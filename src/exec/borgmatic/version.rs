//! Which borgmatic is installed: [`check_version`] runs `--version` once at
//! start-up and refuses one older than [`MIN_VERSION`].
//!
//! Imports nothing of the crate.

use std::path::Path;
use std::time::Duration;

/// Oldest borgmatic whose commands and JSON output this worker relies on.
pub const MIN_VERSION: Version = Version(1, 9, 0);

/// A borgmatic version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// Reads the first `N.N[.N]` in `borgmatic --version` output.
    pub fn parse(text: &str) -> Option<Version> {
        let word = text
            .split_whitespace()
            .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
        let mut parts = word
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = parts.next().and_then(|p| p.ok()).unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

/// Why the installed borgmatic cannot be used; the worker does not start.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// `--version` could not be run.
    #[error("{binary} cannot be run ({reason}); install borgmatic 1.9 or newer (e.g. `pip install borgmatic`) or set borgmatic.binary")]
    Missing {
        /// `borgmatic.binary`, as configured.
        binary: String,
        /// Why it could not be run (not found, timed out, …).
        reason: String,
    },
    /// Older than [`MIN_VERSION`].
    #[error("{binary} is borgmatic {found}, older than {MIN_VERSION}; upgrade it (`pip install -U borgmatic`)")]
    TooOld {
        /// `borgmatic.binary`, as configured.
        binary: String,
        /// The version it reported.
        found: Version,
    },
    /// Its output holds no version number.
    #[error("could not read a version from `{binary} --version`: {output:?}")]
    Unreadable {
        /// `borgmatic.binary`, as configured.
        binary: String,
        /// What it printed.
        output: String,
    },
}

/// Runs `<binary> --version` and checks it against [`MIN_VERSION`].
pub async fn check_version(binary: &Path) -> Result<Version, VersionError> {
    let name = binary.display().to_string();
    let run = tokio::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(30), run).await {
        Err(_) => {
            return Err(VersionError::Missing {
                binary: name,
                reason: "`--version` did not answer within 30s".into(),
            })
        }
        Ok(Err(e)) => {
            return Err(VersionError::Missing {
                binary: name,
                reason: e.to_string(),
            })
        }
        Ok(Ok(out)) => out,
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(VersionError::Missing {
            binary: name,
            reason: format!("`--version` exited with {}", out.status),
        });
    }
    let version = Version::parse(&text).ok_or_else(|| VersionError::Unreadable {
        binary: name.clone(),
        output: text.chars().take(80).collect(),
    })?;
    if version < MIN_VERSION {
        return Err(VersionError::TooOld {
            binary: name,
            found: version,
        });
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(Version::parse("2.1.10\n"), Some(Version(2, 1, 10)));
        assert_eq!(Version::parse("borgmatic 1.9"), Some(Version(1, 9, 0)));
        assert!(Version::parse("1.8.14").unwrap() < MIN_VERSION);
        assert_eq!(Version::parse("nope"), None);
    }
}
