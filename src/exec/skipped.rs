//! What a backup left out: borg's per-file warnings during `create`, counted by
//! reason, so that a backup which could not read part of its sources never looks
//! like a success.
//!
//! borg (1.2 and 1.4) reports a file it could not read as a warning, continues,
//! and exits 1; borgmatic then calls the run a warning and exits 0. The archive is
//! written, but without those files. The only record of them is the warning text
//! (borg 1.2: `print_warning('%s: %s', path, BackupOSError)`, i.e.
//! `<path>: <op>: [Errno 13] Permission denied: '<name>'`); borg 1.4 adds a
//! `msgid` naming the class (`BackupPermissionWarning`, …). Both are read here.
//! `create --list` (file status `E`) cannot be combined with `--json`, so the
//! warnings are the one source.
//!
//! Imports nothing of the crate.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// Paths kept per job; the count covers all of them.
pub const KEEP_PATHS: usize = 20;

/// Why borg left a file out (or stored it unreliably).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// EACCES/EPERM: typically root without `CAP_DAC_READ_SEARCH`.
    PermissionDenied,
    /// ENOENT: listed in its directory, gone when borg opened it.
    Vanished,
    /// borg's race check: the file's type or inode changed under it; skipped.
    RaceCondition,
    /// Any other error reading the file (EIO, ENXIO, …).
    IoError,
    /// A file type borg cannot store.
    UnsupportedType,
}

impl Reason {
    /// The wire name used in results and metrics (`permission_denied`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PermissionDenied => "permission_denied",
            Reason::Vanished => "vanished",
            Reason::RaceCondition => "race_condition",
            Reason::IoError => "io_error",
            Reason::UnsupportedType => "unsupported_type",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Reason::PermissionDenied => "permission denied",
            Reason::Vanished => "vanished",
            Reason::RaceCondition => "changed type or inode",
            Reason::IoError => "I/O error",
            Reason::UnsupportedType => "unsupported file type",
        }
    }
}

/// One borg warning about a file.
#[derive(Debug, Clone, PartialEq)]
pub enum FileIssue {
    /// Not in the archive.
    Skipped {
        /// The file's path as borg printed it.
        path: String,
        /// Why borg could not read it.
        reason: Reason,
        /// borg's own words (`open: [Errno 13] Permission denied: …`).
        error: String,
    },
    /// In the archive, but changed while borg read it (`status C`).
    Changed {
        /// The file's path as borg printed it.
        path: String,
    },
}

/// Reads one output line of `borgmatic create` (a `--log-json` record or plain
/// text); only borg's warnings about a file give an issue.
pub fn classify(line: &str, log_json: bool) -> Option<FileIssue> {
    if !log_json {
        return classify_text(line, None);
    }
    let Ok(Value::Object(outer)) = serde_json::from_str::<Value>(line) else {
        // Not a record (borgmatic < 2.1 style, or a stray line): read the text,
        // unless it is the last line of a Python traceback, whose
        // `FileNotFoundError: [Errno 2] …` names an exception, not a file.
        return classify_text(line, None).filter(|i| !names_an_exception(i));
    };
    // borg's record arrives either as the record itself or as JSON in `message`.
    let nested = outer
        .get("message")
        .and_then(Value::as_str)
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
        .filter(|v| v.get("type").is_some());
    let record = nested.as_ref().and_then(Value::as_object).unwrap_or(&outer);
    if record.get("type").and_then(Value::as_str) != Some("log_message") {
        return None;
    }
    // Only borg's own warnings: borgmatic's records are about borgmatic.
    let from_borg = record
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| n == "borg" || n.starts_with("borg."));
    let level = record.get("levelname").and_then(Value::as_str);
    if !from_borg || !matches!(level, Some("WARNING") | Some("ERROR")) {
        return None;
    }
    let message = record.get("message").and_then(Value::as_str)?;
    classify_text(message, record.get("msgid").and_then(Value::as_str))
}

/// Whether the "path" of an issue is a Python exception's name (`OSError`,
/// `FileNotFoundError`): borgmatic crashing, not borg skipping a file.
fn names_an_exception(issue: &FileIssue) -> bool {
    let path = match issue {
        FileIssue::Skipped { path, .. } | FileIssue::Changed { path } => path,
    };
    let ident = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    ident && (path.ends_with("Error") || path.ends_with("Exception"))
}

/// borg's warning text, with borg 1.4's message id when there is one.
fn classify_text(text: &str, msgid: Option<&str>) -> Option<FileIssue> {
    let text = text.trim_end();
    if let Some(path) = text.strip_suffix(": file changed while we backed it up") {
        return Some(FileIssue::Changed { path: path.into() });
    }
    if msgid == Some("FileChangedWarning") {
        let path = text.split_once(": ").map_or(text, |(p, _)| p);
        return Some(FileIssue::Changed { path: path.into() });
    }
    if let Some(path) = text.strip_prefix("Unknown file type: ") {
        return Some(skipped(path, Reason::UnsupportedType, "unknown file type"));
    }
    // `<path>: <op>: [Errno N] <strerror>: '<name>'` or `<path>: [Errno N] …`
    if let Some(at) = text.find(": [Errno ") {
        let before = &text[..at];
        let error = &text[at + 2..];
        let errno: Option<i32> = error["[Errno ".len()..]
            .split(']')
            .next()
            .and_then(|n| n.parse().ok());
        let (path, error) = match before.rsplit_once(": ") {
            Some((path, op)) if is_op(op) => (path, format!("{op}: {error}")),
            _ => (before, error.to_string()),
        };
        let reason = match msgid {
            Some("BackupPermissionWarning") => Reason::PermissionDenied,
            Some("BackupFileNotFoundWarning") => Reason::Vanished,
            Some("BackupRaceConditionWarning") => Reason::RaceCondition,
            Some(_) | None => match errno {
                Some(13) | Some(1) => Reason::PermissionDenied,
                Some(2) => Reason::Vanished,
                _ => Reason::IoError,
            },
        };
        return Some(skipped(path, reason, &error));
    }
    // borg's BackupError (not an OSError): `<path>: <why>, skipping file` and the
    // other per-file failures that leave the file out.
    if let Some((path, why)) = text.rsplit_once(": ") {
        if why.contains("(race condition), skipping file") {
            return Some(skipped(path, Reason::RaceCondition, why));
        }
        if why.starts_with("Size inconsistency detected") || why.contains("damaged (all-zero)") {
            return Some(skipped(path, Reason::IoError, why));
        }
    }
    match msgid {
        Some("BackupRaceConditionWarning")
        | Some("BackupWarning")
        | Some("BackupOSWarning")
        | Some("BackupIOWarning") => {
            let (path, why) = text.split_once(": ").unwrap_or((text, ""));
            let reason = if msgid == Some("BackupRaceConditionWarning") {
                Reason::RaceCondition
            } else {
                Reason::IoError
            };
            Some(skipped(path, reason, why))
        }
        _ => None,
    }
}

/// borg's `backup_io` operation names: lower-case words (`open`, `dir_open`,
/// `extended stat (xattrs)`), never a path.
fn is_op(op: &str) -> bool {
    !op.is_empty()
        && op.len() <= 40
        && !op.contains('/')
        && op
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || " _()".contains(c))
}

fn skipped(path: &str, reason: Reason, error: &str) -> FileIssue {
    FileIssue::Skipped {
        path: path.into(),
        reason,
        error: error.into(),
    }
}

/// The tally of one backup's issues: counts by reason, the first paths.
#[derive(Debug, Default, Clone)]
pub struct Skipped {
    total: u64,
    by_reason: BTreeMap<Reason, u64>,
    first: Vec<Value>,
    changed: u64,
    first_changed: Vec<String>,
}

impl Skipped {
    /// Counts one issue, keeping the first few paths.
    pub fn add(&mut self, issue: FileIssue) {
        match issue {
            FileIssue::Skipped {
                path,
                reason,
                error,
            } => {
                self.total += 1;
                *self.by_reason.entry(reason).or_default() += 1;
                if self.first.len() < KEEP_PATHS {
                    self.first.push(json!({
                        "path": path, "reason": reason.as_str(), "error": error,
                    }));
                }
            }
            FileIssue::Changed { path } => {
                self.changed += 1;
                if self.first_changed.len() < KEEP_PATHS {
                    self.first_changed.push(path);
                }
            }
        }
    }

    /// Files or directories left out (an unreadable directory counts once: borg
    /// never saw what it holds).
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The sentence a user reads, when something was left out.
    pub fn reason(&self, archive: Option<&str>) -> Option<String> {
        if self.total == 0 {
            return None;
        }
        let why: Vec<String> = self
            .by_reason
            .iter()
            .map(|(r, n)| format!("{}: {n}", r.words()))
            .collect();
        let archive = archive
            .map(|a| format!("archive {a} was written but is incomplete"))
            .unwrap_or_else(|| "the archive is incomplete".into());
        Some(format!(
            "borg could not read {} file(s) or directories ({}); {archive}",
            self.total,
            why.join(", ")
        ))
    }

    /// The result fields: `partial`, `skipped_files`, `skipped_reasons`,
    /// `skipped` (first paths), `changed_files`, `changed` (first paths).
    pub fn fields(&self) -> serde_json::Map<String, Value> {
        let reasons: serde_json::Map<String, Value> = self
            .by_reason
            .iter()
            .map(|(r, n)| (r.as_str().to_string(), json!(n)))
            .collect();
        let mut m = serde_json::Map::new();
        m.insert("partial".into(), json!(self.total > 0));
        m.insert("skipped_files".into(), json!(self.total));
        m.insert("skipped_reasons".into(), Value::Object(reasons));
        m.insert("skipped".into(), json!(self.first));
        m.insert("changed_files".into(), json!(self.changed));
        m.insert("changed".into(), json!(self.first_changed));
        m
    }
}

#[cfg(test)]
mod tests;
