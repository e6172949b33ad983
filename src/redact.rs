//! Scrubs known secret values out of any text before it leaves the process: job
//! lines, error messages, log records. The last line of defence; secrets are also
//! kept out of argv and records by construction.

use std::borrow::Cow;
use std::sync::Arc;

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
}
