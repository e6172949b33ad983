//! Scrubs known secret values out of any text before it leaves the process: job
//! lines, error messages, log records. The last line of defence; secrets are also
//! kept out of argv and records by construction.
//!
//! [`quote`] is the one way an error message may repeat a client's value: a short,
//! printable prefix, and nothing at all when the value holds one of
//! the worker's configured secrets. Those are [`register`]ed once at start-up,
//! because values are quoted deep in parsers that have no settings at hand.
//!
//! Imports only `domain` (the quoting probe it installs there, `RequestId`);
//! everything else may use it.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// What a secret is replaced with.
pub const MASK: &str = "[redacted]";

/// The set of secret values to scrub. Cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    /// Values shorter than 4 characters are ignored: masking them would mangle text.
    pub fn new(mut secrets: Vec<String>) -> Self {
        secrets.retain(|s| s.len() >= 4);
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            secrets: Arc::new(secrets),
        }
    }

    /// This redactor plus more secrets.
    pub fn with(&self, extra: Vec<String>) -> Redactor {
        let mut all: Vec<String> = self.secrets.iter().cloned().collect();
        all.extend(extra);
        Redactor::new(all)
    }

    /// Whether there is no secret to mask.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Whether `text` contains one of the secrets. Only a whole secret counts: an
    /// answer that changed when a value merely shared characters with a secret would
    /// let a client find the secret piece by piece.
    pub fn holds(&self, text: &str) -> bool {
        self.secrets.iter().any(|s| text.contains(s.as_str()))
    }

    /// `text` with every secret replaced by [`MASK`]; borrowed when none is in it.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), MASK));
            }
        }
        out
    }
}

/// Most characters of a client value an error message repeats.
pub const QUOTE_CHARS: usize = 16;
/// What a withheld value is replaced with.
pub const WITHHELD: &str = "(a value that holds a configured secret; not shown)";

static KNOWN: RwLock<Option<Redactor>> = RwLock::new(None);

/// Adds the worker's configured secrets (tokens, passphrases, broker password) to
/// the set [`quote`], [`scrub`] and [`holds_secret`] look for.
pub fn register(secrets: Vec<String>) {
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    let next = match known.as_ref() {
        Some(r) => r.with(secrets),
        None => Redactor::new(secrets),
    };
    *known = Some(next);
    drop(known);
    // The domain core quotes values too, and may not import this module.
    crate::domain::install_secret_probe(|v| self::known().holds(v));
}

/// The registered secrets (empty before [`register`]).
pub fn known() -> Redactor {
    KNOWN
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Masks every registered secret in `text`.
pub fn scrub(text: &str) -> String {
    known().redact(text).into_owned()
}

/// A client value as an error message may show it: at most [`QUOTE_CHARS`]
/// printable ASCII characters in quotes (others become `?`), `…` when cut, and
/// [`WITHHELD`] when the value holds a configured secret.
pub fn quote(value: &str) -> String {
    quote_with(&known(), value, QUOTE_CHARS)
}

/// A configuration key name as an error may show it (longer than a value, so a
/// typo stays recognisable).
pub fn quote_key(key: &str) -> String {
    quote_with(&known(), key, 64).trim_matches('"').to_string()
}

fn quote_with(known: &Redactor, value: &str, max: usize) -> String {
    if known.holds(value) {
        return WITHHELD.into();
    }
    let cut: String = value
        .chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if value.chars().count() > max {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Whether any string in `value` (keys included) holds a registered secret: such a
/// request is refused before anything runs or is recorded.
pub fn holds_secret(value: &Value) -> bool {
    holds_in(&known(), value)
}

fn holds_in(k: &Redactor, v: &Value) -> bool {
    match v {
        Value::String(s) => k.holds(s),
        Value::Array(a) => a.iter().any(|x| holds_in(k, x)),
        Value::Object(m) => m.iter().any(|(key, x)| k.holds(key) || holds_in(k, x)),
        _ => false,
    }
}

/// Fields designed to carry a new secret (`ssh-key/create`'s `passphrase`,
/// `key/change-passphrase`'s `new_passphrase`): typed as secrets, never echoed, and
/// allowed to equal a configured one.
const SECRET_FIELDS: &[&str] = &["passphrase", "new_passphrase"];

/// Whether a request's id or any of its fields (other than [`SECRET_FIELDS`]) holds
/// a configured secret: a client put a token or passphrase in the wrong place.
pub fn request_holds_secret(
    request_id: Option<&str>,
    fields: &serde_json::Map<String, Value>,
) -> bool {
    let known = known();
    if known.is_empty() {
        return false;
    }
    request_id.is_some_and(|r| known.holds(r))
        || fields.iter().any(|(k, v)| {
            !SECRET_FIELDS.contains(&k.as_str()) && (known.holds(k) || holds_in(&known, v))
        })
}

/// The refusal of a request that holds a configured secret in the wrong field.
pub const SECRET_IN_REQUEST: &str = "a field of this request (or its request_id) holds a configured secret \
     (a token, passphrase or password); nothing was run or recorded, and the value is not repeated. \
     Send a token only in `token` or the authorization header, and change the secret: it may have been seen";

/// Drops an echoed request id that holds a configured secret (refusals that happen
/// before the request's fields are looked at still echo the id).
pub fn withhold_request_id(request_id: &mut Option<crate::domain::RequestId>) {
    if request_id
        .as_ref()
        .is_some_and(|r| known().holds(r.as_str()))
    {
        *request_id = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence() {
        let r = Redactor::new(vec!["hunter22".into(), "abc".into(), "hunter2".into()]);
        assert_eq!(
            r.redact("pw=hunter22 and hunter2, abc"),
            "pw=[redacted] and [redacted], abc"
        );
        assert!(matches!(r.redact("clean"), Cow::Borrowed(_)));
    }

    #[test]
    fn quotes_are_short_printable_and_never_a_secret() {
        let r = Redactor::new(vec!["tok-0123456789abcdef-XYZ".into()]);
        assert_eq!(quote_with(&r, "nc", 16), "\"nc\"");
        assert_eq!(
            quote_with(&r, "aaaaaaaaaaaaaaaaaaaaaaaa", 16),
            "\"aaaaaaaaaaaaaaaa\"…"
        );
        assert_eq!(quote_with(&r, "a\u{1b}[2Jb\u{202e}", 16), "\"a?[2Jb?\"");
        for leaky in [
            "tok-0123456789abcdef-XYZ",
            "prefix-tok-0123456789abcdef-XYZ-suffix",
        ] {
            assert_eq!(quote_with(&r, leaky, 16), WITHHELD, "{leaky}");
        }
        // A piece is not withheld: that would tell a client which pieces are right.
        assert_eq!(quote_with(&r, "tok-0123", 16), "\"tok-0123\"");
    }

    #[test]
    fn secrets_are_found_anywhere_in_a_request() {
        register(vec!["registered-secret-4242".into()]);
        assert!(holds_secret(
            &serde_json::json!({"a": ["x", {"b": "registered-secret-4242"}]})
        ));
        assert!(holds_secret(
            &serde_json::json!({"x-registered-secret-4242": 1})
        ));
        // A piece of a secret is not refused (that would reveal it piece by piece).
        assert!(!holds_secret(
            &serde_json::json!({"repository": "registered-secret"})
        ));
        assert!(!holds_secret(
            &serde_json::json!({"repository": "nc", "n": 5})
        ));
        assert_eq!(scrub("x registered-secret-4242 y"), "x [redacted] y");
    }
}
