//! How an error message repeats a client value: a short printable prefix, and
//! nothing when the value holds a configured secret.
//!
//! The domain imports nothing of the crate, so it cannot ask `redact` which values
//! are secret: `redact::register` installs a probe here instead.
//!
//! Imports nothing outside `domain`.

use std::sync::OnceLock;

/// Most characters of a client value an error message repeats.
const QUOTE_CHARS: usize = 16;
/// What a withheld value is replaced with.
const WITHHELD: &str = "(a value that holds a configured secret; not shown)";

static PROBE: OnceLock<fn(&str) -> bool> = OnceLock::new();

/// Installs the function that says whether a value holds a configured secret
/// (once; later calls are ignored, the probe reads the live set itself).
pub fn install_secret_probe(probe: fn(&str) -> bool) {
    let _ = PROBE.set(probe);
}

/// A client value as an error message may show it.
pub fn quote(value: &str) -> String {
    if PROBE.get().is_some_and(|holds| holds(value)) {
        return WITHHELD.into();
    }
    let cut: String = value
        .chars()
        .take(QUOTE_CHARS)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if value.chars().count() > QUOTE_CHARS {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_short_and_printable() {
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(quote("a\nb"), "\"a?b\"");
        assert!(quote(&"x".repeat(40)).ends_with('…'));
    }
}
