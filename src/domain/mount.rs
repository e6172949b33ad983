//! The FUSE mount options a client may ask `archive/mount` for: an allow-list,
//! each value checked, so the options string built from them is safe as one argv
//! element.
//!
//! Imports nothing outside `domain`.

use serde::{Deserialize, Serialize};

use super::{quote, FieldError};

/// The allow-listed options of `borg mount -o` (through borgmatic `mount
/// --options`). Any other key is refused when the request is parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountOptions {
    /// FUSE `allow_other`: users other than the worker's may read the mount.
    #[serde(default)]
    pub allow_other: bool,
    /// The owner every file is shown with.
    #[serde(default)]
    pub uid: Option<OwnerId>,
    /// The group every file is shown with.
    #[serde(default)]
    pub gid: Option<OwnerId>,
    /// Permission bits removed from every file (octal, e.g. `"0027"`).
    #[serde(default)]
    pub umask: Option<Umask>,
}

impl MountOptions {
    /// The options as borg reads them (`allow_other,uid=1000,gid=1000,umask=0027`);
    /// `None` when none is set. Only digits, letters, `_`, `=` and `,`.
    pub fn borg_options(&self) -> Option<String> {
        let mut out: Vec<String> = Vec::new();
        if self.allow_other {
            out.push("allow_other".into());
        }
        if let Some(u) = self.uid {
            out.push(format!("uid={}", u.0));
        }
        if let Some(g) = self.gid {
            out.push(format!("gid={}", g.0));
        }
        if let Some(m) = self.umask {
            out.push(format!("umask={:04o}", m.0));
        }
        (!out.is_empty()).then(|| out.join(","))
    }
}

/// A user or group id: any `u32` but `4294967295` (`(uid_t)-1`, which means "no
/// change" to `chown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct OwnerId(u32);

impl TryFrom<u32> for OwnerId {
    type Error = FieldError;
    fn try_from(v: u32) -> Result<Self, FieldError> {
        if v == u32::MAX {
            return Err(FieldError(format!(
                "uid and gid must be below {}, got {v}",
                u32::MAX
            )));
        }
        Ok(Self(v))
    }
}

impl From<OwnerId> for u32 {
    fn from(v: OwnerId) -> u32 {
        v.0
    }
}

impl OwnerId {
    /// The id.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A umask given as an octal string of one to four digits, at most `0777`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Umask(u16);

impl Umask {
    /// The umask, if `s` is one (`"022"`, `"0027"`).
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let digits = !s.is_empty() && s.len() <= 4 && s.chars().all(|c| ('0'..='7').contains(&c));
        match u16::from_str_radix(s, 8) {
            Ok(v) if digits && v <= 0o777 => Ok(Self(v)),
            _ => Err(FieldError(format!(
                "umask must be an octal string of 1 to 4 digits, at most 0777 (e.g. \"0027\"), got {}",
                quote(s)
            ))),
        }
    }
    /// The bits.
    pub fn bits(self) -> u16 {
        self.0
    }
}

impl TryFrom<String> for Umask {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        Self::parse(&s)
    }
}

impl From<Umask> for String {
    fn from(v: Umask) -> String {
        format!("{:04o}", v.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<MountOptions, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn options_are_allow_listed_and_checked() {
        let o =
            parse(json!({"allow_other": true, "uid": 1000, "gid": 33, "umask": "027"})).unwrap();
        assert_eq!(
            o.borg_options().as_deref(),
            Some("allow_other,uid=1000,gid=33,umask=0027")
        );
        assert_eq!(parse(json!({})).unwrap().borg_options(), None);
        assert_eq!(
            parse(json!({"uid": 0})).unwrap().borg_options().as_deref(),
            Some("uid=0")
        );
        for bad in [
            json!({"default_permissions": true}),
            json!({"uid": -1}),
            json!({"uid": 4294967295u64}),
            json!({"uid": "1000"}),
            json!({"gid": 1.5}),
            json!({"umask": "0999"}),
            json!({"umask": "1777"}),
            json!({"umask": "07777"}),
            json!({"umask": ""}),
            json!({"umask": "+22"}),
            json!({"umask": "022,allow_root"}),
            json!({"umask": 22}),
            json!({"allow_other": "yes"}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
