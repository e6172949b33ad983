//! Figment's errors rewritten as [`Problem`]s that never quote a configured value.
//!
//! Imports `redact::quote_key` only.

use super::guards::problem;
use super::secret_files::is_secret_key;
use super::Problem;

/// A figment error as a [`Problem`] that never quotes a configured value: figment's
/// own text does (`found unsigned int `12345``), and for a password that is the
/// secret itself. Only the key, the expected form and the kind of value found are
/// said; TOML syntax errors lose their source excerpt for the same reason.
pub(super) fn config_error(err: &figment::Error) -> Problem {
    use figment::error::Kind;
    let key = err.path.join(".");
    let message = match &err.kind {
        Kind::InvalidType(actual, expected) => format!(
            "has the wrong type: expected {expected}, found {} (the value is not shown){}",
            actual_kind(actual),
            if is_secret_key(&key) {
                "; put a secret in quotes in TOML, or use the _file form"
            } else {
                ""
            }
        ),
        Kind::InvalidValue(actual, expected) => format!(
            "has an invalid {}: expected {expected} (the value is not shown)",
            actual_kind(actual)
        ),
        Kind::InvalidLength(len, expected) => {
            format!("has {len} elements, expected {expected}")
        }
        Kind::UnknownVariant(_, expected) => format!(
            "is not one of {} (the value is not shown)",
            expected.join(", ")
        ),
        Kind::UnknownField(field, expected) => format!(
            "unknown key `{}`; known keys: {}",
            crate::redact::quote_key(field),
            expected.join(", ")
        ),
        Kind::MissingField(field) => format!("missing key `{field}`"),
        Kind::DuplicateField(field) => format!("key `{field}` is given twice"),
        Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => {
            "is a number out of range (the value is not shown)".into()
        }
        Kind::Unsupported(actual) => {
            format!("has an unsupported type: {}", actual_kind(actual))
        }
        Kind::UnsupportedKey(actual, expected) => format!(
            "has a key of type {}, expected {expected}",
            actual_kind(actual)
        ),
        Kind::Message(m) if is_secret_key(&key) => {
            let _ = m;
            "has the wrong form (the value is not shown)".into()
        }
        Kind::Message(m) => without_source_excerpt(m),
    };
    problem(
        if key.is_empty() {
            "configuration".into()
        } else {
            key
        },
        message,
    )
}

/// What kind of value a figment error found, without the value.
fn actual_kind(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "an empty value",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "a value of another type",
    }
}

/// A parse error minus the lines that quote the source (`3 | password = …`).
fn without_source_excerpt(message: &str) -> String {
    message
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            let t = t
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start();
            !t.starts_with('|') && !t.is_empty()
        })
        .collect::<Vec<_>>()
        .join("; ")
}
