//! Reading borgmatic configuration files: the repositories they name (for lock
//! status, reachability and AIO checks) and a redacted copy for `config/show`.
//!
//! Only reads; the worker never writes a borgmatic configuration.
//!
//! # Layout
//! - `location`: where a repository lives ([`Location`], [`parse_location`]).
//! - `allow_list`: the options `config/show` may show, as one data table.
//! - `redact`: applying that table; every other value is masked.
//! - `ssh`: the key files a run's `ssh_command` names ([`ssh_identity_files`]).
//!
//! Imports of the crate: `redact::MASK` only.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

mod allow_list;
mod location;
mod redact;
mod ssh;
#[cfg(test)]
mod tests;

pub use location::{parse_location, Location};
pub use ssh::ssh_identity_files;

/// Why a borgmatic configuration file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file, as given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("{path} is not valid YAML: {message}")]
    Yaml {
        /// The file, as given.
        path: String,
        /// The parser's complaint (line and column included).
        message: String,
    },
}

/// One parsed borgmatic configuration file.
#[derive(Debug, Clone)]
pub struct BorgmaticConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// The YAML as JSON (borgmatic's YAML has no features JSON lacks).
    pub doc: Value,
}

/// One entry of `repositories:`.
#[derive(Debug, Clone)]
pub struct RepositoryEntry {
    /// The repository's path or URL as written (`ssh://…`, `user@host:path`, a local path).
    pub path: String,
    /// The entry's `label:`, when it has one.
    pub label: Option<String>,
    /// The entry's `encryption:` mode, when given (the AIO check reads it).
    pub encryption: Option<String>,
    /// Where the path points: local, or a host reached over SSH.
    pub location: Location,
}

impl BorgmaticConfig {
    /// Reads and parses `path`; an empty file is an empty configuration.
    pub fn load(path: &Path) -> Result<BorgmaticConfig, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| ConfigFileError::Yaml {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(BorgmaticConfig {
            path: path.to_path_buf(),
            doc: if doc.is_null() {
                Value::Object(Map::new())
            } else {
                doc
            },
        })
    }

    /// The repositories, in both the list-of-maps and the old list-of-strings form.
    pub fn repositories(&self) -> Vec<RepositoryEntry> {
        self.doc
            .get("repositories")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let (path, label, encryption) = match r {
                    Value::String(s) => (s.clone(), None, None),
                    Value::Object(m) => (
                        m.get("path")?.as_str()?.to_string(),
                        m.get("label").and_then(Value::as_str).map(str::to_string),
                        m.get("encryption")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    ),
                    _ => return None,
                };
                Some(RepositoryEntry {
                    location: parse_location(&path),
                    encryption,
                    path,
                    label,
                })
            })
            .collect()
    }

    /// The `name` of every database the configuration's database hooks dump
    /// (`sqlite_databases`, `postgresql_databases`, … : every top-level
    /// `*_databases` list).
    pub fn database_names(&self) -> Vec<String> {
        let Some(top) = self.doc.as_object() else {
            return Vec::new();
        };
        top.iter()
            .filter(|(k, _)| k.ends_with("_databases"))
            .filter_map(|(_, v)| v.as_array())
            .flatten()
            .filter_map(|db| db.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    }

    /// A top-level option's value, when it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.doc.get(key).and_then(Value::as_str)
    }

    /// The configuration as `config/show` shows it: only options known to be
    /// harmless, every other value masked (see `allow_list::TOP`).
    pub fn redacted(&self) -> Value {
        match &self.doc {
            Value::Object(m) => redact::table(allow_list::TOP, m),
            other => redact::mask_unknown(other),
        }
    }
}
