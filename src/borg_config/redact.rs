//! Applying the allow-list ([`super::allow_list`]) to a configuration: listed
//! options follow their rule, every other value is masked with [`MASK`].
//!
//! Imports `redact::MASK` only.

use serde_json::{Map, Value};

use super::allow_list::{Repo, Rule, Show, Table, Tables, Url};
use super::location::{parse_location, Location};
use crate::redact::MASK;

/// URL schemes whose host part is a host (an apprise `tgram://<bot token>/…` puts a
/// token where the host would be, so other schemes show nothing but the scheme).
const NETWORK_SCHEMES: &[&str] = &[
    "http", "https", "ssh", "sftp", "ftp", "ftps", "rest", "s3", "b2", "file",
];

fn masked() -> Value {
    Value::String(MASK.into())
}

fn apply(rule: Rule, v: &Value) -> Value {
    match (rule, v) {
        (Show, Value::Array(a)) => Value::Array(a.iter().map(show_scalar).collect()),
        (Show, v) => show_scalar(v),
        (Repo, Value::String(s)) => Value::String(redact_repository(s)),
        (Url, Value::String(s)) => Value::String(reduce_url(s)),
        (Repo | Url, Value::Array(a)) => Value::Array(a.iter().map(|x| apply(rule, x)).collect()),
        (Table(fields), Value::Object(m)) => table(fields, m),
        (Tables(fields), Value::Array(a)) => Value::Array(
            a.iter()
                .map(|x| match x {
                    Value::Object(m) => table(fields, m),
                    // The old list-of-strings form of `repositories`.
                    Value::String(_) => apply(Repo, x),
                    other => mask_unknown(other),
                })
                .collect(),
        ),
        (_, other) => mask_unknown(other),
    }
}

pub(super) fn table(fields: &[(&str, Rule)], m: &Map<String, Value>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| {
                let shown = match fields.iter().find(|(name, _)| name == k) {
                    Some((_, rule)) => apply(*rule, v),
                    None => mask_unknown(v),
                };
                (k.clone(), shown)
            })
            .collect(),
    )
}

fn show_scalar(v: &Value) -> Value {
    match v {
        Value::Array(_) | Value::Object(_) => masked(),
        other => other.clone(),
    }
}

/// A value of a key not known to be harmless: masked, unless it cannot hold a
/// secret at all (`null`, `true`/`false`: e.g. `zfs:` enabling a hook).
pub(super) fn mask_unknown(v: &Value) -> Value {
    match v {
        Value::Null | Value::Bool(_) => v.clone(),
        _ => masked(),
    }
}

/// A repository as `config/show` shows it: a local path as it is, anything remote
/// as scheme and host (`user@host:path` as `ssh://host`).
fn redact_repository(s: &str) -> String {
    match parse_location(s) {
        Location::Local(p) => p.display().to_string(),
        Location::Ssh { host, port: 22, .. } => format!("ssh://{host}"),
        Location::Ssh { host, port, .. } => format!("ssh://{host}:{port}"),
        Location::Other(s) => reduce_url(&s),
    }
}

/// `scheme://host[:port]` of a network URL; `scheme://[redacted]` of any other URL;
/// `[redacted]` of anything that is not a URL (a bare healthchecks UUID, say).
pub(super) fn reduce_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(u) if NETWORK_SCHEMES.contains(&u.scheme()) && u.host_str().is_some() => {
            let host = u.host_str().unwrap_or_default();
            match u.port() {
                Some(p) => format!("{}://{host}:{p}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        }
        Ok(u) if u.scheme() == "file" => "file://".to_string(),
        Ok(u) => format!("{}://{MASK}", u.scheme()),
        Err(_) => match s.split_once("://") {
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) =>
            {
                format!("{scheme}://{MASK}")
            }
            _ => MASK.into(),
        },
    }
}
