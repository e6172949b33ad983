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
            Location::Other(s) => reduce_url(s),
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

    /// The configuration as `config/show` shows it: only options known to be
    /// harmless, every other value masked (see [`TOP`]).
    pub fn redacted(&self) -> Value {
        match &self.doc {
            Value::Object(m) => table(TOP, m),
            other => mask_unknown(other),
        }
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

/// How `config/show` treats one key's value. The default, for every key not named
/// below (unknown keys included), is to mask it: a configuration is full of tokens
/// in unexpected places (apprise URLs, hook commands, `sshpass -p`, constants), so
/// only what is known to be harmless is shown.
#[derive(Clone, Copy)]
enum Rule {
    /// Harmless: shown as it is (scalars and lists of scalars; anything nested is
    /// masked).
    Show,
    /// A repository: local paths shown, remote ones reduced to scheme and host.
    Repo,
    /// A service URL: scheme and host of a network URL, nothing of anything else.
    Url,
    /// A table whose listed keys follow their rule; every other key is masked.
    Table(&'static [(&'static str, Rule)]),
    /// A list of such tables.
    Tables(&'static [(&'static str, Rule)]),
}

use Rule::{Repo, Show, Table, Tables, Url};

/// borgmatic 2.1's options that are harmless to show, from its `schema.yaml`.
/// Commands (`commands`, `before_*`, `after_*`, `on_error`, `*_command`), secrets,
/// key locations, constants, credentials hooks and `extra_borg_options` are not
/// here, so they are masked.
const TOP: &[(&str, Rule)] = &[
    ("source_directories", Show),
    ("source_directories_must_exist", Show),
    ("repositories", Tables(REPOSITORY)),
    ("working_directory", Show),
    ("one_file_system", Show),
    ("numeric_ids", Show),
    ("atime", Show),
    ("ctime", Show),
    ("birthtime", Show),
    ("read_special", Show),
    ("flags", Show),
    ("files_changed", Show),
    ("files_cache", Show),
    ("local_path", Show),
    ("remote_path", Show),
    ("patterns", Show),
    ("patterns_from", Show),
    ("exclude_patterns", Show),
    ("exclude_from", Show),
    ("exclude_caches", Show),
    ("exclude_if_present", Show),
    ("keep_exclude_tags", Show),
    ("exclude_nodump", Show),
    ("borgmatic_source_directory", Show),
    ("user_runtime_directory", Show),
    ("user_state_directory", Show),
    ("checkpoint_interval", Show),
    ("checkpoint_volume", Show),
    ("chunker_params", Show),
    ("compression", Show),
    ("recompress", Show),
    ("upload_rate_limit", Show),
    ("upload_buffer_size", Show),
    ("retries", Show),
    ("retry_wait", Show),
    ("temporary_directory", Show),
    ("borg_base_directory", Show),
    ("borg_config_directory", Show),
    ("borg_cache_directory", Show),
    ("borg_security_directory", Show),
    ("use_chunks_archive", Show),
    ("borg_files_cache_ttl", Show),
    (
        "borg_exit_codes",
        Tables(&[("code", Show), ("treat_as", Show)]),
    ),
    ("umask", Show),
    ("lock_wait", Show),
    ("archive_name_format", Show),
    ("match_archives", Show),
    ("archive_hostname", Show),
    ("archive_username", Show),
    ("file_list_format", Show),
    ("archive_list_format", Show),
    ("relocated_repo_access_is_ok", Show),
    ("unknown_unencrypted_repo_access_is_ok", Show),
    ("debug_passphrase", Show),
    ("display_passphrase", Show),
    ("check_i_know_what_i_am_doing", Show),
    ("msgpack_version_check", Show),
    ("unsafe_skip_path_validation_before_create", Show),
    ("keep_within", Show),
    ("keep_secondly", Show),
    ("keep_minutely", Show),
    ("keep_hourly", Show),
    ("keep_daily", Show),
    ("keep_weekly", Show),
    ("keep_monthly", Show),
    ("keep_yearly", Show),
    ("keep_13weekly", Show),
    ("keep_3monthly", Show),
    ("prefix", Show),
    ("compact_threshold", Show),
    ("checks", Tables(CHECK)),
    ("check_repositories", Repo),
    ("check_last", Show),
    ("color", Show),
    ("verbosity", Show),
    ("syslog_verbosity", Show),
    ("log_file_verbosity", Show),
    ("log_file", Show),
    ("log_file_format", Show),
    ("monitoring_verbosity", Show),
    ("log_json", Show),
    ("progress", Show),
    ("statistics", Show),
    ("quick_statistics", Show),
    ("list_details", Show),
    ("default_actions", Show),
    ("skip_actions", Show),
    ("bootstrap", Table(&[("store_config_files", Show)])),
    ("postgresql_databases", Tables(DATABASE)),
    ("mariadb_databases", Tables(DATABASE)),
    ("mysql_databases", Tables(DATABASE)),
    ("mongodb_databases", Tables(DATABASE)),
    ("influxdb_databases", Tables(DATABASE)),
    ("sqlite_databases", Tables(DATABASE)),
    ("openldap_databases", Tables(DATABASE)),
    ("ntfy", Table(&[("server", Url), ("states", Show)])),
    ("pushover", Table(&[("states", Show)])),
    ("zabbix", Table(&[("server", Url), ("states", Show)])),
    (
        "apprise",
        Table(&[
            ("services", Tables(&[("url", Url), ("label", Show)])),
            ("send_logs", Show),
            ("logs_size_limit", Show),
            ("states", Show),
        ]),
    ),
    ("healthchecks", Table(PING)),
    ("watchgoose", Table(PING)),
    (
        "uptime_kuma",
        Table(&[("push_url", Url), ("states", Show), ("verify_tls", Show)]),
    ),
    ("cronitor", Table(&[("ping_url", Url)])),
    ("pagerduty", Table(&[("send_logs", Show)])),
    (
        "loki",
        Table(&[("url", Url), ("tls", Show), ("send_logs", Show)]),
    ),
    (
        "sentry",
        Table(&[
            ("data_source_name_url", Url),
            ("monitor_slug", Show),
            ("environment", Show),
            ("states", Show),
        ]),
    ),
];

const REPOSITORY: &[(&str, Rule)] = &[
    ("path", Repo),
    ("label", Show),
    ("encryption", Show),
    ("append_only", Show),
    ("storage_quota", Show),
    ("make_parent_directories", Show),
];

const CHECK: &[(&str, Rule)] = &[
    ("name", Show),
    ("frequency", Show),
    ("only_run_on", Show),
    ("max_duration", Show),
    ("count_tolerance_percentage", Show),
    ("data_sample_percentage", Show),
    ("data_tolerance_percentage", Show),
];

const DATABASE: &[(&str, Rule)] = &[
    ("name", Show),
    ("label", Show),
    ("hostname", Show),
    ("restore_hostname", Show),
    ("port", Show),
    ("restore_port", Show),
    ("container", Show),
    ("restore_container", Show),
    ("format", Show),
    ("compression", Show),
    ("tls", Show),
    ("restore_tls", Show),
    ("no_owner", Show),
    ("add_drop_database", Show),
    ("events", Show),
    ("routines", Show),
    ("tablespaces", Show),
    ("skip_names", Show),
    ("ssl_mode", Show),
    ("path", Show),
    ("restore_path", Show),
];

const PING: &[(&str, Rule)] = &[
    ("ping_url", Url),
    ("verify_tls", Show),
    ("send_logs", Show),
    ("ping_body_limit", Show),
    ("states", Show),
    ("create_slug", Show),
];

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

fn table(fields: &[(&str, Rule)], m: &Map<String, Value>) -> Value {
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
fn mask_unknown(v: &Value) -> Value {
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
fn reduce_url(s: &str) -> String {
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

/// The key files ssh may ask the passphrase of for a borgmatic run with `config`:
/// those named by its `ssh_command` (`-i <file>`, `-o IdentityFile=<file>`), else
/// ssh's default identities in `~/.ssh`. The askpass helper answers only their
/// prompts.
pub fn ssh_identity_files(config: &Path) -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let expand = |p: &str| match (p.strip_prefix("~/"), &home) {
        (Some(rest), Some(h)) => h.join(rest),
        _ => PathBuf::from(p),
    };
    let named: Vec<PathBuf> = BorgmaticConfig::load(config)
        .ok()
        .and_then(|c| c.get_str("ssh_command").map(str::to_string))
        .and_then(|cmd| shlex::split(&cmd))
        .map(|words| identity_options(&words).iter().map(|p| expand(p)).collect())
        .unwrap_or_default();
    if !named.is_empty() {
        return named;
    }
    let Some(home) = home else { return vec![] };
    [
        "id_rsa",
        "id_ecdsa",
        "id_ecdsa_sk",
        "id_ed25519",
        "id_ed25519_sk",
        "id_xmss",
        "id_dsa",
    ]
    .iter()
    .map(|n| home.join(".ssh").join(n))
    .collect()
}

/// The values of `-i <f>`, `-i<f>`, `-o IdentityFile=<f>` and `-oIdentityFile <f>`.
fn identity_options(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = words.iter().peekable();
    while let Some(w) = it.next() {
        let option = if w == "-i" {
            it.next().cloned()
        } else if let Some(f) = w.strip_prefix("-i") {
            Some(f.to_string())
        } else if w == "-o" {
            it.next().and_then(|o| identity_file_option(o))
        } else {
            w.strip_prefix("-o").and_then(identity_file_option)
        };
        out.extend(option);
    }
    out
}

fn identity_file_option(o: &str) -> Option<String> {
    let (k, v) = o.split_once(['=', ' '])?;
    k.trim()
        .eq_ignore_ascii_case("identityfile")
        .then(|| v.trim().to_string())
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

    /// A configuration holding a secret in every kind of place: secret keys, URLs'
    /// userinfo, paths and queries, apprise URLs whose "host" is a token, hook
    /// commands, `sshpass -p`, constants, options strings, unknown keys.
    const SECRETFUL: &str = r#"
constants:
  pw: S1-constant
  pin: 4711471147
source_directories: [/srv]
repositories:
  - path: ssh://borg:S2-url-password@backup.example.com:2222/./S3-repo-path
    label: remote
  - path: /srv/local-repo
    label: local
  - path: S4-user@scp-host.example.com:S5-scp-path
  - path: https://S6-user:S7-rest-pass@rest.example.com/S8-rest-path?token=S9-query
    key_location: /keys/S10-key-location
  - sftp://S11-plain-string-repo@sftp.example.com/S12-path
encryption_passphrase: S13-encryption-passphrase
encryption_passcommand: cat /run/S14-passcommand-file
ssh_command: sshpass -p S15-sshpass-password ssh -i /root/.ssh/S16-key-file -p 2222
borg_keys_directory: /keys/S17-keys-dir
borg_key_file: /keys/S18-key-file
keep_daily: 7
keep_within: 3d
compression: zstd,3
archive_name_format: '{hostname}-{now}'
exclude_patterns: ['*.tmp']
checks:
  - name: repository
    frequency: 2 weeks
  - name: spot
    xxh64sum_command: xxh64sum --key S19-check-command
extra_borg_options:
  create: --remote-ratelimit 5 --S20-extra-option
before_backup:
  - curl -fsS https://hc-ping.com/S21-healthchecks-uuid-in-hook/start
after_backup: [echo S22-after-hook]
on_error: [echo S23-on-error]
commands:
  - before: action
    when: [create]
    run: [curl https://x.example/S24-commands-run]
postgresql_databases:
  - name: nextcloud
    username: S25-db-user
    password: S26-db-password
    restore_password: S27-restore-password
    options: --password=S28-db-options
    pg_dump_command: PGPASSWORD=S29-dump-command pg_dump
mariadb_databases:
  - name: x
    password: S30-mariadb-password
ntfy:
  topic: S31-ntfy-topic
  server: https://S32-ntfy-user:S33-ntfy-pass@ntfy.sh/S34-ntfy-path
  username: u
  password: S35-ntfy-password
  access_token: S36-ntfy-token
  start:
    message: S37-ntfy-message
pagerduty:
  integration_key: S38-pagerduty-key
pushover:
  token: S39-pushover-token
  user: S40-pushover-user
zabbix:
  server: http://zabbix.example.com/api/S41-zabbix-path
  password: S42-zabbix-password
  api_key: S43-zabbix-api-key
  itemid: 55
healthchecks:
  ping_url: S44-bare-healthchecks-uuid
cronitor:
  ping_url: https://cronitor.link/S45-cronitor-key/abc
uptime_kuma:
  push_url: https://kuma.example.com/api/push/S46-kuma-token?status=up
apprise:
  services:
    - url: slack://S47-slack-a/S48-slack-b/S49-slack-c
      label: slack
    - url: tgram://S50-telegram-bot-token/S51-chat
      label: telegram
loki:
  url: http://user:S52-loki-password@loki.example.com:3100/loki/api/v1/push
  labels:
    app: S53-loki-label
sentry:
  data_source_name_url: https://S54-sentry-key@o1.ingest.sentry.io/S55-project
  monitor_slug: x
keepassxc:
  key_file: /S56-keepass-key
zfs:
  zfs_command: S57-zfs-command
some_api_secret: S58-generic-secret
my_token: S59-generic-token
unknown_future_option:
  nested: [S60-unknown-nested]
"#;

    #[test]
    fn redaction_shows_only_what_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, SECRETFUL).unwrap();
        let c = BorgmaticConfig::load(&p).unwrap();
        let shown = c.redacted();
        let text = shown.to_string();
        for i in 1..=60 {
            assert!(
                !text.contains(&format!("S{i}-")),
                "secret S{i} survived: {text}"
            );
        }
        assert!(!text.contains("4711471147"), "{text}");
        // What is harmless stays readable.
        assert_eq!(shown["keep_daily"], 7);
        assert_eq!(shown["keep_within"], "3d");
        assert_eq!(shown["compression"], "zstd,3");
        assert_eq!(shown["exclude_patterns"][0], "*.tmp");
        assert_eq!(shown["checks"][0]["name"], "repository");
        assert_eq!(shown["checks"][0]["frequency"], "2 weeks");
        assert_eq!(shown["checks"][1]["xxh64sum_command"], MASK);
        let repos = &shown["repositories"];
        assert_eq!(repos[0]["path"], "ssh://backup.example.com:2222");
        assert_eq!(repos[0]["label"], "remote");
        assert_eq!(repos[1]["path"], "/srv/local-repo");
        assert_eq!(repos[2]["path"], "ssh://scp-host.example.com");
        assert_eq!(repos[3]["path"], "https://rest.example.com");
        assert_eq!(repos[4], "sftp://sftp.example.com");
        assert_eq!(shown["ssh_command"], MASK);
        assert_eq!(shown["before_backup"], MASK);
        assert_eq!(shown["commands"], MASK);
        assert_eq!(shown["postgresql_databases"][0]["name"], "nextcloud");
        assert_eq!(shown["ntfy"]["server"], "https://ntfy.sh");
        assert_eq!(shown["zabbix"]["server"], "http://zabbix.example.com");
        assert_eq!(shown["healthchecks"]["ping_url"], MASK);
        assert_eq!(shown["uptime_kuma"]["push_url"], "https://kuma.example.com");
        assert_eq!(shown["apprise"]["services"][0]["url"], "slack://[redacted]");
        assert_eq!(shown["apprise"]["services"][1]["label"], "telegram");
        assert_eq!(shown["loki"]["url"], "http://loki.example.com:3100");
        assert_eq!(
            shown["sentry"]["data_source_name_url"],
            "https://o1.ingest.sentry.io"
        );
        assert_eq!(shown["unknown_future_option"], MASK);
        assert_eq!(c.repositories().len(), 5);
        assert_eq!(c.repositories()[0].label.as_deref(), Some("remote"));
    }

    #[test]
    fn identity_files_come_from_ssh_command() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "ssh_command: ssh -i /k/one -o 'IdentityFile=/k/two' -oIdentityFile=/k/three -p 22\n",
        )
        .unwrap();
        assert_eq!(
            ssh_identity_files(&p),
            [PathBuf::from("/k/one"), "/k/two".into(), "/k/three".into()]
        );
        std::fs::write(&p, "keep_daily: 1\n").unwrap();
        let defaults = ssh_identity_files(&p);
        assert!(defaults.iter().any(|k| k.ends_with(".ssh/id_ed25519")));
    }
}
