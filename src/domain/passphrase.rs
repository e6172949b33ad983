//! A new borg or SSH key passphrase chosen by a client.
//!
//! Imports nothing outside `domain`.

use serde::Deserialize;

use super::{FieldError, Secret};

/// 8 to 1024 characters, no control characters; never echoed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct NewPassphrase(Secret);

impl NewPassphrase {
    /// The passphrase, to hand to borg through the environment only.
    pub fn secret(&self) -> &Secret {
        &self.0
    }
}

impl std::fmt::Debug for NewPassphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassphrase([redacted])")
    }
}

impl TryFrom<String> for NewPassphrase {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        let n = s.chars().count();
        if !(8..=1024).contains(&n) || s.chars().any(|c| c.is_control()) {
            // Never echo the value.
            return Err(FieldError(
                "new_passphrase must be 8 to 1024 characters without control characters".into(),
            ));
        }
        Ok(Self(Secret::new(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_do_not_echo() {
        let e = NewPassphrase::try_from("abc\u{1}def-secret".to_string()).unwrap_err();
        assert!(!e.0.contains("def-secret"));
        assert!(NewPassphrase::try_from("long enough".to_string()).is_ok());
    }
}
