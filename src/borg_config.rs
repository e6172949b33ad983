//! Reading borgmatic configuration files: the repositories they name (for lock
//! status, reachability and AIO checks) and a redacted copy for `config/show`.
//!
//! Only reads; the worker never writes a borgmatic configuration.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::redact::MASK;

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {message}")]
    Yaml { path: String, message: String },
}

/// One parsed borgmatic configuration file.
#[derive(Debug, Clone)]
pub struct BorgmaticConfig {
    pub path: PathBuf,
    /// The YAML as JSON (borgmatic's YAML has no features JSON lacks).
    pub doc: Value,
}

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// `ssh://[user@]host[:port]/path` or `[user@]host:path`.
    Ssh {
        user: Option<String>,
        host: String,
        port: u16,
        path: String,
    },
    /// Anything else (e.g. `s3://`, which borg 2 may support).
    Other(String),
}

impl Location {
    /// A printable form with no credentials.
    pub fn display(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::Ssh {
                user,
                host,
                port,
                path,
            } => {
                let user = user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
                format!("ssh://{user}{host}:{port}{path}")
            }
            Location::Other(s) => redact_url(s),
        }
    }
}

/// One entry of `repositories:`.
#[derive(Debug, Clone)]
pub struct RepositoryEntry {
    pub path: String,
    pub label: Option<String>,
    pub encryption: Option<String>,
    pub location: Location,
}

impl BorgmaticConfig {
    pub fn load(path: &Path) -> Result<BorgmaticConfig, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| ConfigFileError::Yaml {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(BorgmaticConfig {
            path: path.to_path_buf(),
            doc: if doc.is_null() {
                Value::Object(Map::new())
            } else {
                doc
            },
        })
    }

    /// The repositories, in both the list-of-maps and the old list-of-strings form.
    pub fn repositories(&self) -> Vec<RepositoryEntry> {
        self.doc
            .get("repositories")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let (path, label, encryption) = match r {
                    Value::String(s) => (s.clone(), None, None),
                    Value::Object(m) => (
                        m.get("path")?.as_str()?.to_string(),
                        m.get("label").and_then(Value::as_str).map(str::to_string),
                        m.get("encryption")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    ),
                    _ => return None,
                };
                Some(RepositoryEntry {
                    location: parse_location(&path),
                    encryption,
                    path,
                    label,
                })
            })
            .collect()
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.doc.get(key).and_then(Value::as_str)
    }

    /// The whole configuration with every secret masked.
    pub fn redacted(&self) -> Value {
        redact_value(None, &self.doc)
    }
}

/// Parses a borg repository path into where it lives.
pub fn parse_location(path: &str) -> Location {
    if let Some(rest) = path.strip_prefix("ssh://") {
        let (authority, repo_path) = rest.split_once('/').unwrap_or((rest, ""));
        // Credentials (`user:pw@`) are dropped here; only the user is kept.
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.split(':').next().unwrap_or(u).to_string()), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport);
        return Location::Ssh {
            user,
            host,
            port,
            path: format!("/{repo_path}"),
        };
    }
    if path.starts_with('/')
        || path.starts_with("file://")
        || path.starts_with('~')
        || !path.contains(':')
    {
        return Location::Local(PathBuf::from(path.trim_start_matches("file://")));
    }
    if path.contains("://") {
        return Location::Other(path.to_string());
    }
    // scp-style `[user@]host:path`
    let (authority, repo_path) = path.split_once(':').unwrap_or((path, ""));
    let (user, host) = match authority.split_once('@') {
        Some((u, h)) => (Some(u.to_string()), h.to_string()),
        None => (None, authority.to_string()),
    };
    Location::Ssh {
        user,
        host,
        port: 22,
        path: repo_path.to_string(),
    }
}

fn split_host_port(hostport: &str) -> (String, u16) {
    if let Some(rest) = hostport.strip_prefix('[') {
        // [ipv6]:port
        if let Some((h, p)) = rest.split_once(']') {
            let port = p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(22);
            return (h.to_string(), port);
        }
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h.to_string(), p.parse().unwrap_or(22))
        }
        _ => (hostport.to_string(), 22),
    }
}

/// Keys whose values are always secret, whatever their content.
const SECRET_KEY_PARTS: &[&str] = &["pass", "secret", "token", "key", "credential", "auth"];
/// Keys holding URLs that carry a secret in their path or query (ping/push URLs).
const SECRET_URL_KEYS: &[&str] = &[
    "ping_url",
    "push_url",
    "url",
    "urls",
    "server",
    "integration_key",
];
/// Hooks whose `ping_url`/`url` values embed the secret itself.
const TOKEN_URL_HOOKS: &[&str] = &[
    "healthchecks",
    "cronitor",
    "cronhub",
    "uptime_kuma",
    "apprise",
    "loki",
    "sentry",
    "ntfy",
    "pagerduty",
    "pushover",
    "zabbix",
];

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    // `keep_*` and `*_keys` options such as `keep_daily` or `exclude_if_present` are
    // not secrets; `key` as a word part is.
    if k.starts_with("keep_") {
        return false;
    }
    SECRET_KEY_PARTS.iter().any(|p| k.contains(p)) || k == "user" // pushover's user key
}

fn redact_value(parent: Option<&str>, v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let in_token_hook = parent.is_some_and(|p| TOKEN_URL_HOOKS.contains(&p));
            let mut out = Map::new();
            for (k, val) in m {
                let masked = if is_secret_key(k) && !val.is_object() && !val.is_array() {
                    Value::String(MASK.into())
                } else if in_token_hook
                    && (SECRET_URL_KEYS.contains(&k.as_str())
                        || k.ends_with("_url")
                        || val.as_str().is_some_and(|s| s.contains("://")))
                {
                    mask_all_strings(val)
                } else if k == "ssh_command" {
                    val.as_str()
                        .map(|s| Value::String(redact_ssh_command(s)))
                        .unwrap_or_else(|| val.clone())
                } else if k == "path" || k == "repositories" || k.ends_with("_url") || k == "url" {
                    redact_urls(&redact_value(Some(k), val))
                } else {
                    redact_value(Some(k), val)
                };
                out.insert(k.clone(), masked);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| redact_value(parent, x)).collect()),
        Value::String(s) if parent.is_some_and(|p| TOKEN_URL_HOOKS.contains(&p)) => {
            Value::String(redact_url(s))
        }
        other => other.clone(),
    }
}

fn mask_all_strings(v: &Value) -> Value {
    match v {
        Value::String(_) => Value::String(MASK.into()),
        Value::Array(a) => Value::Array(a.iter().map(mask_all_strings).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), mask_all_strings(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn redact_urls(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(redact_url(s)),
        Value::Array(a) => Value::Array(a.iter().map(redact_urls).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), redact_urls(v))).collect())
        }
        other => other.clone(),
    }
}

/// `scheme://user:password@host/…` → `scheme://user:[redacted]@host/…`.
fn redact_url(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:{MASK}@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => s.to_string(),
    }
}

/// Masks the key file of `ssh -i <file>` (and `-oIdentityFile=`), keeping the rest.
fn redact_ssh_command(cmd: &str) -> String {
    let mut out = Vec::new();
    let mut mask_next = false;
    for word in cmd.split_whitespace() {
        if mask_next {
            out.push(MASK.to_string());
            mask_next = false;
        } else if word == "-i" {
            out.push(word.to_string());
            mask_next = true;
        } else if let Some(rest) = word.strip_prefix("-i") {
            let _ = rest;
            out.push(format!("-i{MASK}"));
        } else if word.to_ascii_lowercase().contains("identityfile") {
            let (k, _) = word.split_once('=').unwrap_or((word, ""));
            out.push(format!("{k}={MASK}"));
        } else {
            out.push(word.to_string());
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("/srv/repo"),
            Location::Local("/srv/repo".into())
        );
        assert_eq!(
            parse_location("ssh://u:pw@backup.lan:2222/./repo"),
            Location::Ssh {
                user: Some("u".into()),
                host: "backup.lan".into(),
                port: 2222,
                path: "/./repo".into()
            }
        );
        assert_eq!(
            parse_location("u@host:repo"),
            Location::Ssh {
                user: Some("u".into()),
                host: "host".into(),
                port: 22,
                path: "repo".into()
            }
        );
        assert!(matches!(
            parse_location("s3://bucket/x"),
            Location::Other(_)
        ));
    }

    /// A configuration holding a secret in every place the issue lists.
    const SECRETFUL: &str = r#"
source_directories: [/srv]
repositories:
  - path: ssh://borg:S1-url-password@backup.example.com:2222/./repo
    label: remote
  - path: /srv/local-repo
encryption_passphrase: S2-encryption-passphrase
encryption_passcommand: cat /run/S3-passcommand-file
ssh_command: ssh -i /root/.ssh/S4-key-file -p 2222
borg_keys_directory: /keys/S5-keys-dir
keep_daily: 7
postgresql_databases:
  - name: nextcloud
    username: nc
    password: S6-db-password
    restore_password: S7-restore-password
mariadb_databases:
  - name: x
    password: S8-mariadb-password
ntfy:
  topic: backups
  server: https://ntfy.sh
  username: u
  password: S9-ntfy-password
  access_token: S10-ntfy-token
pagerduty:
  integration_key: S11-pagerduty-key
pushover:
  token: S12-pushover-token
  user: S13-pushover-user
zabbix:
  server: http://zabbix/api
  password: S14-zabbix-password
  api_key: S15-zabbix-api-key
healthchecks:
  ping_url: https://hc-ping.com/S16-healthchecks-uuid
cronitor:
  ping_url: https://cronitor.link/S17-cronitor-key/abc
uptime_kuma:
  push_url: https://kuma.example.com/api/push/S18-kuma-token
apprise:
  urls:
    - url: gotify://hostname/S19-apprise-token
      label: gotify
loki:
  url: http://user:S20-loki-password@loki:3100/loki/api/v1/push
  labels:
    app: borgmatic
sentry:
  data_source_name_url: https://S21-sentry-key@o1.ingest.sentry.io/1
  monitor_slug: x
some_api_secret: S22-generic-secret
my_token: S23-generic-token
"#;

    #[test]
    fn redaction_leaves_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, SECRETFUL).unwrap();
        let c = BorgmaticConfig::load(&p).unwrap();
        let shown = c.redacted().to_string();
        for i in 1..=23 {
            assert!(
                !shown.contains(&format!("S{i}-")),
                "secret S{i} survived: {shown}"
            );
        }
        // What is not secret stays readable.
        assert!(shown.contains("backup.example.com"));
        assert!(shown.contains("\"keep_daily\":7"));
        assert!(shown.contains("/srv/local-repo"));
        assert!(shown.contains("ssh -i [redacted] -p 2222"));
        assert_eq!(c.repositories().len(), 2);
        assert_eq!(c.repositories()[0].label.as_deref(), Some("remote"));
    }
}
