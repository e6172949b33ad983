//! Tokens and roles. Every token is compared in constant time against every
//! configured token, so timing reveals neither a token nor which role matched.
//!
//! Imports `config` (the token settings, `Secret`) and `domain` (`Role`) only.

use subtle::ConstantTimeEq;

use crate::config::{AuthSettings, Secret};

/// Roles live in the domain core; re-exported where tokens grant them.
pub use crate::domain::Role;

/// The configured tokens.
#[derive(Clone)]
pub struct Tokens {
    read: Secret,
    write: Secret,
    admin: Option<Secret>,
}

impl Tokens {
    /// `None` when the required tokens are missing (start-up refuses before this).
    pub fn from_settings(auth: &AuthSettings) -> Option<Tokens> {
        Some(Tokens {
            read: auth.read_token.clone()?,
            write: auth.write_token.clone()?,
            admin: auth.admin_token.clone(),
        })
    }

    /// Whether admin commands can be authorised at all.
    pub fn has_admin(&self) -> bool {
        self.admin.is_some()
    }

    /// The role a presented token grants. All comparisons always run.
    pub fn authenticate(&self, presented: &str) -> Option<Role> {
        let p = presented.as_bytes();
        let read = ct_eq(p, &self.read);
        let write = ct_eq(p, &self.write);
        let admin = match &self.admin {
            Some(a) => ct_eq(p, a),
            None => {
                // Same amount of work whether or not an admin token exists.
                let _ = ct_eq(p, &self.read);
                false
            }
        };
        if admin {
            Some(Role::Admin)
        } else if write {
            Some(Role::Write)
        } else if read {
            Some(Role::Read)
        } else {
            None
        }
    }
}

fn ct_eq(presented: &[u8], secret: &Secret) -> bool {
    // `ct_eq` on slices of unequal length returns false early, leaking only the
    // length; tokens are long random strings, so their length is no secret worth it.
    presented.ct_eq(secret.expose().as_bytes()).into()
}

/// Reads `authorization: Bearer <token>` (any case of the key and the scheme).
pub fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.trim())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(admin: bool) -> Tokens {
        Tokens {
            read: Secret::new("r".repeat(24)),
            write: Secret::new("w".repeat(24)),
            admin: admin.then(|| Secret::new("a".repeat(24))),
        }
    }

    #[test]
    fn roles_follow_tokens() {
        let t = tokens(true);
        assert_eq!(t.authenticate(&"r".repeat(24)), Some(Role::Read));
        assert_eq!(t.authenticate(&"w".repeat(24)), Some(Role::Write));
        assert_eq!(t.authenticate(&"a".repeat(24)), Some(Role::Admin));
        assert_eq!(t.authenticate(&"r".repeat(23)), None);
        assert_eq!(t.authenticate(""), None);
        assert_eq!(tokens(false).authenticate(&"a".repeat(24)), None);
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }
}
