//! The exec deny-list: programs and arguments no exec policy rule can allow.
//!
//! The allow-list (exact argv, exact env) is the control; this table is the
//! backstop for a rule written carelessly. It is one data table, so what it covers
//! is exactly what README's security section says, and every entry is tested.
//!
//! Programs are compared on the lower-cased basename of **every** argv element (and
//! of the value after the last `=` of an element), not only argv[0]: a wrapper such
//! as `env sh` or `timeout 5 /bin/sh` hides the program it runs in a later element.
//! A table name matches the basename itself and any versioned or suffixed form
//! (`python3.11`, `php8.2`, `sh.distrib`, `mkfs.ext4`); a name ending in `*` matches
//! any basename starting with it (`ld-linux-x86-64.so.2`).
//!
//! # Layout
//! - `table`: the data ([`PROGRAMS`], [`ARGUMENTS`]).
//! - here: matching an argv against it ([`check`]) and listing it ([`listing`]).
//!
//! Imports nothing of the crate.

use serde::Serialize;

mod table;
#[cfg(test)]
mod tests;

pub use table::{ARGUMENTS, PROGRAMS};
use table::{SCRIPT_EXTENSIONS, TAR_NAMES, TAR_SHORT};

/// What kind of entry refused an argv.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyClass {
    /// A command shell: runs whatever its arguments say.
    Shell,
    /// A language interpreter, editor or build tool that can run code or a shell.
    Interpreter,
    /// Runs another program given in its arguments (or as another user).
    Wrapper,
    /// Destroys data, changes permissions, users or the network, or controls
    /// containers and the host.
    Tool,
    /// An argument that makes an otherwise harmless program run code or delete.
    Argument,
}

impl DenyClass {
    /// The class in words, for the refusal message.
    pub fn describe(self) -> &'static str {
        match self {
            DenyClass::Shell => "a shell",
            DenyClass::Interpreter => "an interpreter that can run code",
            DenyClass::Wrapper => "a wrapper that runs another program",
            DenyClass::Tool => "a destructive or privileged tool",
            DenyClass::Argument => "an argument that runs code or deletes files",
        }
    }
}

/// Shortest abbreviation of a long option that counts as that option.
const MIN_ABBREVIATION: usize = 5;

/// One refusal: which element, which entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DenyHit {
    /// What kind of entry matched.
    pub class: DenyClass,
    /// The table entry that matched.
    pub entry: &'static str,
    /// Index of the argv element that matched.
    pub argv_index: usize,
}

impl std::fmt::Display for DenyHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "argv[{}] is {} (deny-list entry `{}`); no exec policy rule can allow it",
            self.argv_index,
            self.class.describe(),
            self.entry
        )
    }
}

fn basename(s: &str) -> String {
    s.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(s)
        .to_lowercase()
}

/// Whether `base` is the program `entry` (see the module header for the forms).
fn program_matches(entry: &str, base: &str) -> bool {
    if let Some(prefix) = entry.strip_suffix('*') {
        return base.starts_with(prefix);
    }
    let Some(rest) = base.strip_prefix(entry) else {
        return false;
    };
    let version = rest.trim_start_matches('-');
    rest.is_empty()
        || version.starts_with(|c: char| c.is_ascii_digit())
        || (rest.starts_with('.') && !SCRIPT_EXTENSIONS.contains(&&rest[1..]))
}

fn program_hit(element: &str) -> Option<(DenyClass, &'static str)> {
    let mut names = vec![basename(element)];
    if let Some((_, value)) = element.rsplit_once('=') {
        names.push(basename(value));
    }
    for name in names.iter().filter(|n| !n.is_empty()) {
        for (class, entries) in PROGRAMS {
            if let Some(e) = entries.iter().find(|e| program_matches(e, name)) {
                return Some((*class, e));
            }
        }
    }
    None
}

fn argument_hit(element: &str) -> Option<&'static str> {
    let option = element.split('=').next().unwrap_or(element).to_lowercase();
    ARGUMENTS.iter().copied().find(|a| {
        option == *a
            || (a.starts_with("--")
                && option.starts_with("--")
                && option.len() >= MIN_ABBREVIATION
                && a.starts_with(option.as_str()))
    })
}

fn tar_cluster_hit(argv: &[String]) -> Option<(usize, &'static str)> {
    let program = basename(argv.first()?);
    if !TAR_NAMES.contains(&program.as_str()) {
        return None;
    }
    argv.iter().enumerate().skip(1).find_map(|(i, a)| {
        // `-xIf` anywhere, or the old-style first argument `xIf` without a dash.
        let cluster = match a.strip_prefix('-') {
            Some(rest) if !rest.starts_with('-') => rest,
            None if i == 1 => a.as_str(),
            _ => return None,
        };
        // A cluster's letters end at the first option that takes an argument, but
        // refusing any I/F in it is the conservative reading.
        cluster
            .chars()
            .find(|c| TAR_SHORT.contains(c))
            .map(|c| (i, if c == 'I' { "tar -I" } else { "tar -F" }))
    })
}

/// The whole table, for `security/exec-policy`.
pub fn listing() -> serde_json::Value {
    let programs: serde_json::Map<String, serde_json::Value> = PROGRAMS
        .iter()
        .map(|(class, names)| {
            let key = serde_json::to_value(class)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            (key, serde_json::json!(names))
        })
        .collect();
    serde_json::json!({
        "programs": programs,
        "arguments": ARGUMENTS,
        "tar_short_options": TAR_SHORT.iter().map(|c| format!("-{c}")).collect::<Vec<_>>(),
        "matching": "the lower-cased basename of every argv element, and of the value after its last '='; \
                     a name also matches its versioned or suffixed forms (python3.11, php8.2, sh.distrib, mkfs.ext4) \
                     but not a script file of that name (env.sh); long arguments also as --opt=value and abbreviated",
    })
}

/// The deny-list verdict on one argv: `None` when no entry matches.
pub fn check(argv: &[String]) -> Option<DenyHit> {
    for (i, element) in argv.iter().enumerate() {
        if let Some((class, entry)) = program_hit(element) {
            return Some(DenyHit {
                class,
                entry,
                argv_index: i,
            });
        }
        if let Some(entry) = argument_hit(element) {
            return Some(DenyHit {
                class: DenyClass::Argument,
                entry,
                argv_index: i,
            });
        }
    }
    tar_cluster_hit(argv).map(|(i, entry)| DenyHit {
        class: DenyClass::Argument,
        entry,
        argv_index: i,
    })
}
