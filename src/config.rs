//! Settings: built-in defaults < TOML file < `BMQTT_` environment, plus the start-up
//! guards that refuse to run an unsafe or broken configuration.
//!
//! Every secret also accepts `<key>_file` (`BMQTT_AUTH__READ_TOKEN_FILE`), the form
//! Docker secrets use. Secrets live in [`Secret`], which never prints its value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Where the TOML file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/borgmatic-mqtt/config.toml";
/// Shortest token accepted: long enough that guessing is hopeless.
pub const MIN_TOKEN_LEN: usize = 24;

/// Secrets live in the domain core; re-exported here, where settings hold them.
pub use crate::domain::Secret;

/// The whole configuration, as the spec's "Configuration surface" names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub mqtt: MqttSettings,
    pub auth: AuthSettings,
    pub borgmatic: BorgmaticSettings,
    pub http: HttpSettings,
    pub state_dir: PathBuf,
    pub docker: DockerSettings,
    pub log: LogSettings,
    pub jobs: JobSettings,
    pub limits: LimitSettings,
    pub audit: AuditSettings,
    pub ssh: SshSettings,
    pub homeassistant: HomeAssistantSettings,
    /// Repository health probes (see `health`).
    pub health: crate::health::HealthSettings,
    /// Per-repository settings, keyed by repository label.
    pub repositories: BTreeMap<String, RepositorySettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mqtt: MqttSettings::default(),
            auth: AuthSettings::default(),
            borgmatic: BorgmaticSettings::default(),
            http: HttpSettings::default(),
            state_dir: PathBuf::from("/var/lib/borgmatic-mqtt"),
            docker: DockerSettings::default(),
            log: LogSettings::default(),
            jobs: JobSettings::default(),
            limits: LimitSettings::default(),
            audit: AuditSettings::default(),
            ssh: SshSettings::default(),
            homeassistant: HomeAssistantSettings::default(),
            health: crate::health::HealthSettings::default(),
            repositories: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Defaults to `borgmatic/<node_id>`.
    pub base_topic: Option<String>,
    /// Defaults to the host name, lower-cased, `[a-z0-9_-]` only.
    pub node_id: Option<String>,
    /// Keep-alive interval in seconds.
    pub keep_alive_secs: u64,
    /// Largest packet the worker sends (a larger answer becomes a small error answer;
    /// the broker's own limit, from its v5 CONNACK, applies too). What it accepts
    /// follows from `limits.max_request_bytes`.
    pub max_packet_bytes: u32,
    /// Ceiling of the reconnect backoff, in seconds.
    pub reconnect_max_secs: u64,
    /// The MQTT client id. Unset: a random id made once and kept in
    /// `<state_dir>/mqtt_client_id`, so no other broker user can guess it and take
    /// over the worker's session.
    pub client_id: Option<String>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 1883,
            username: None,
            password: None,
            password_file: None,
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            base_topic: None,
            node_id: None,
            keep_alive_secs: 30,
            max_packet_bytes: 64 * 1024 * 1024,
            reconnect_max_secs: 30,
            client_id: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub read_token: Option<Secret>,
    pub read_token_file: Option<PathBuf>,
    pub write_token: Option<Secret>,
    pub write_token_file: Option<PathBuf>,
    pub admin_token: Option<Secret>,
    pub admin_token_file: Option<PathBuf>,
    /// Accept `borg_passphrase` / `ssh_passphrase` in requests.
    pub allow_request_secrets: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BorgmaticSettings {
    pub config_dir: PathBuf,
    pub binary: PathBuf,
    /// `archive/extract` destinations live below it.
    pub restore_root: PathBuf,
    /// `archive/mount` mount points live below it.
    pub mount_root: PathBuf,
}

impl Default for BorgmaticSettings {
    fn default() -> Self {
        Self {
            config_dir: PathBuf::from("/etc/borgmatic.d"),
            binary: PathBuf::from("borgmatic"),
            restore_root: PathBuf::from("/restore"),
            mount_root: PathBuf::from("/mnt/borgmatic"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// `host:port`, or `off`.
    pub listen: String,
    /// When set, every API request must carry `X-From-NodeRed: <value>`.
    pub from_header: Option<Secret>,
    pub from_header_file: Option<PathBuf>,
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// Seconds a request (not a stream) may take.
    pub request_timeout_secs: u64,
    /// `/metrics` needs the read token when true.
    pub metrics_require_token: bool,
    /// Seconds a client has to send a request's headers (also how long an idle
    /// keep-alive connection waits for its next request).
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may go without moving a byte either way before it is
    /// closed (a reader that stopped reading, a stalled stream); at least
    /// `request_timeout_secs` + 5.
    pub idle_timeout_secs: u64,
    /// Open connections at once (event streams included); more are refused at once.
    /// Lowered at start-up so that this plus `fd_reserve` fits the open-file limit.
    pub max_connections: usize,
    /// Server-Sent Event streams open at once; more get 503.
    pub max_event_streams: usize,
    /// File descriptors kept free of HTTP connections, for jobs, the job store and
    /// the broker connection.
    pub fd_reserve: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8484".into(),
            from_header: None,
            from_header_file: None,
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            metrics_require_token: false,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 1024,
            max_event_streams: 512,
            fd_reserve: 256,
        }
    }
}

/// Home Assistant MQTT discovery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantSettings {
    /// Publish discovery configs and accept button presses on `<base>/ha/…`.
    pub discovery: bool,
    /// Home Assistant's discovery prefix.
    pub prefix: String,
    /// The devices' "Visit" link (default: the HTTP sidecar on a specific address).
    pub configuration_url: Option<String>,
}

impl Default for HomeAssistantSettings {
    fn default() -> Self {
        Self {
            discovery: false,
            prefix: "homeassistant".into(),
            configuration_url: None,
        }
    }
}

/// Where the SSH keys of remote repositories live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshSettings {
    pub key_dir: PathBuf,
}

impl Default for SshSettings {
    fn default() -> Self {
        Self {
            key_dir: PathBuf::from("/root/.ssh"),
        }
    }
}

/// Requests per minute per principal, by command class, and the bounds that keep
/// one client from exhausting the worker's memory or its request handling.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    pub read_per_minute: u32,
    pub write_per_minute: u32,
    pub admin_per_minute: u32,
    /// Largest request body, checked before it is parsed (both transports).
    pub max_request_bytes: usize,
    /// Deepest nesting of arrays and objects in a request, checked before parsing.
    pub max_request_depth: usize,
    /// Memory for remembered answers to `request_id`s (oldest forgotten first).
    pub dedup_cache_bytes: usize,
    /// MQTT requests handled at once; more wait in a short queue, then are `busy`.
    pub max_in_flight: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            read_per_minute: 600,
            write_per_minute: 60,
            admin_per_minute: 20,
            max_request_bytes: 64 * 1024,
            max_request_depth: 16,
            dedup_cache_bytes: 8 * 1024 * 1024,
            max_in_flight: 32,
        }
    }
}

/// The audit trail's size bounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// `audit.jsonl` is rotated to `audit.jsonl.1` when it would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` … `.N`); older ones are deleted.
    pub keep_files: u32,
    /// Unauthenticated refusals are written one by one up to a few per window, the
    /// rest as one line per transport and client with their count.
    pub refusal_window_secs: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024 * 1024,
            keep_files: 4,
            refusal_window_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerSettings {
    /// Docker commands (and the engine in readiness); `false` answers them
    /// `unavailable`.
    pub enabled: bool,
    /// Defaults to `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// Names of Nextcloud AIO's containers start with it (volumes with it, `-` → `_`).
    pub aio_prefix: String,
    /// Extra exec allow rules (TOML `[[allow]]` tables, each with its role and
    /// exact env values), added to the built-in AIO rules.
    pub exec_policy_file: Option<PathBuf>,
    /// How long an AIO backup waits for the borgbackup container to start.
    pub borgbackup_start_grace_secs: u64,
}

impl Default for DockerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            host: None,
            aio_prefix: "nextcloud-aio-".into(),
            exec_policy_file: None,
            borgbackup_start_grace_secs: 120,
        }
    }
}

impl DockerSettings {
    pub fn mastercontainer(&self) -> String {
        format!("{}mastercontainer", self.aio_prefix)
    }
    pub fn borgbackup_container(&self) -> String {
        format!("{}borgbackup", self.aio_prefix)
    }
    pub fn volume_prefix(&self) -> String {
        self.aio_prefix.replace('-', "_")
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `borgmatic_mqtt=debug`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// Jobs running at once across all repositories; the rest wait as `queued`.
    pub max_concurrent: usize,
    /// Log lines kept in memory per job (the seq count never resets).
    pub log_lines_kept: usize,
    /// Log lines of a finished job kept in the store.
    pub stored_lines: usize,
    /// QoS of `jobs/<id>/log` messages (0 or 1).
    pub log_qos: u8,
    /// Seconds a finished job is kept before it is forgotten.
    pub ttl_secs: u64,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled.
    pub kill_grace_secs: u64,
    /// Default timeout of a job, in seconds.
    pub default_timeout_secs: u64,
    /// Per-command timeouts in seconds, keyed `backup/run` (or `backup_run`).
    pub timeouts: BTreeMap<String, u64>,
    /// Jobs of read-role commands that may wait `queued` at once; more are `busy`.
    pub max_queued_read: usize,
    /// The same for write-role and admin-role commands (a separate allowance, and
    /// they start before any queued read job, so reads cannot starve them).
    pub max_queued_write: usize,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            max_concurrent: 2,
            log_lines_kept: 10_000,
            stored_lines: 1_000,
            log_qos: 0,
            ttl_secs: 7 * 24 * 3600,
            kill_grace_secs: 30,
            default_timeout_secs: 24 * 3600,
            timeouts: BTreeMap::new(),
            max_queued_read: 8,
            max_queued_write: 32,
        }
    }
}

impl JobSettings {
    /// The timeout of one command, `archive/list` or its environment form `archive_list`.
    pub fn timeout_for(&self, command: &str) -> std::time::Duration {
        let secs = self
            .timeouts
            .iter()
            .find(|(k, _)| normalise_command_key(k) == command)
            .map(|(_, v)| *v)
            .unwrap_or(self.default_timeout_secs);
        std::time::Duration::from_secs(secs)
    }
}

fn normalise_command_key(key: &str) -> String {
    if key.contains('/') {
        key.to_string()
    } else {
        key.replacen('_', "/", 1)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepositorySettings {
    /// The borg passphrase, handed to borgmatic only through `BORG_PASSPHRASE`.
    pub passphrase: Option<Secret>,
    pub passphrase_file: Option<PathBuf>,
    /// The passphrase of the SSH key used for this repository, given to ssh through
    /// the askpass helper.
    pub ssh_passphrase: Option<Secret>,
    pub ssh_passphrase_file: Option<PathBuf>,
    /// The repository Nextcloud AIO backs up into: `backup/run` and `aio/backup`
    /// never run at the same time on it.
    pub aio: bool,
}

/// One thing wrong with the configuration: the key, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

impl Settings {
    /// Layers defaults, the TOML file (explicit path, else the default path when it
    /// exists) and the `BMQTT_` environment, then reads `_file` secrets.
    pub fn load(path: Option<&Path>) -> Result<Settings, Vec<Problem>> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match path {
            Some(p) => {
                if !p.is_file() {
                    return Err(vec![problem(
                        "--config",
                        format!("{} does not exist or is not a file", p.display()),
                    )]);
                }
                figment = figment.merge(Toml::file(p));
            }
            None => {
                if Path::new(DEFAULT_CONFIG_FILE).is_file() {
                    figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE));
                }
            }
        }
        // Secret values are taken verbatim: figment would parse `0012` as the number 12
        // (or refuse it as a number), silently changing or rejecting a password.
        let env = Env::prefixed("BMQTT_").split("__");
        figment = figment.merge(env.clone().filter(|k| !is_secret_key(k.as_str())));
        for (key, value) in env.iter() {
            if is_secret_key(key.as_str()) {
                figment = figment.merge((key.as_str().to_string(), value));
            }
        }
        Self::from_figment(figment)
    }

    /// Extracts and resolves settings from an already layered figment (tests use this).
    pub fn from_figment(figment: Figment) -> Result<Settings, Vec<Problem>> {
        let mut settings: Settings = figment.extract().map_err(|e| {
            e.into_iter()
                .map(|err| config_error(&err))
                .collect::<Vec<_>>()
        })?;
        settings.resolve_secret_files()?;
        Ok(settings)
    }

    fn resolve_secret_files(&mut self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        for slot in self.secret_slots() {
            resolve(&slot.key, slot.value, slot.file, &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Every secret setting with its `_file` form: the one list that `_file`
    /// resolution, [`Settings::secret_values`] and the tests walk, so a new secret
    /// cannot be forgotten by one of them.
    fn secret_slots(&mut self) -> Vec<SecretSlot<'_>> {
        let mut slots = vec![
            SecretSlot::new(
                "mqtt.password",
                &mut self.mqtt.password,
                &self.mqtt.password_file,
            ),
            SecretSlot::new(
                "auth.read_token",
                &mut self.auth.read_token,
                &self.auth.read_token_file,
            ),
            SecretSlot::new(
                "auth.write_token",
                &mut self.auth.write_token,
                &self.auth.write_token_file,
            ),
            SecretSlot::new(
                "auth.admin_token",
                &mut self.auth.admin_token,
                &self.auth.admin_token_file,
            ),
            SecretSlot::new(
                "http.from_header",
                &mut self.http.from_header,
                &self.http.from_header_file,
            ),
        ];
        for (label, repo) in self.repositories.iter_mut() {
            slots.push(SecretSlot::new(
                format!("repositories.{label}.passphrase"),
                &mut repo.passphrase,
                &repo.passphrase_file,
            ));
            slots.push(SecretSlot::new(
                format!("repositories.{label}.ssh_passphrase"),
                &mut repo.ssh_passphrase,
                &repo.ssh_passphrase_file,
            ));
        }
        slots
    }

    /// Checks everything that can be checked without running anything.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let tokens = [
            ("auth.read_token", self.auth.read_token.as_ref(), true),
            ("auth.write_token", self.auth.write_token.as_ref(), true),
            ("auth.admin_token", self.auth.admin_token.as_ref(), false),
        ];
        for (key, value, required) in tokens {
            match value {
                None if required => problems.push(problem(
                    key,
                    format!(
                        "missing; set it (at least {MIN_TOKEN_LEN} random characters, e.g. `openssl rand -hex 24`) \
                         in the config file, as BMQTT_{} or through BMQTT_{}_FILE",
                        env_name(key),
                        env_name(key)
                    ),
                )),
                None => {}
                Some(s) if s.is_empty() => problems.push(problem(
                    key,
                    "is empty; set a random value of at least 24 characters or remove the key",
                )),
                Some(s) if s.expose().chars().count() < MIN_TOKEN_LEN => problems.push(problem(
                    key,
                    format!(
                        "is shorter than {MIN_TOKEN_LEN} characters; use a longer random value (`openssl rand -hex 24`)"
                    ),
                )),
                Some(_) => {}
            }
        }
        for (i, (ka, a, _)) in tokens.iter().enumerate() {
            for (kb, b, _) in tokens.iter().skip(i + 1) {
                if let (Some(a), Some(b)) = (a, b) {
                    if !a.is_empty() && a == b {
                        problems.push(problem(
                            *kb,
                            format!("equals {ka}; every role needs its own token"),
                        ));
                    }
                }
            }
        }
        if !self.borgmatic.config_dir.is_dir() {
            problems.push(problem(
                "borgmatic.config_dir",
                format!(
                    "{} is not a directory; create it and put one borgmatic configuration per repository in it (<label>.yaml)",
                    self.borgmatic.config_dir.display()
                ),
            ));
        }
        if let Err(reason) = crate::command::validate_topic_base(&self.base_topic()) {
            problems.push(problem("mqtt.base_topic", reason));
        }
        if self.docker.exec_policy_file.is_some() {
            if let Err(e) = crate::exec::policy::ExecPolicy::from_settings(&self.docker) {
                problems.push(problem("docker.exec_policy_file", e));
            }
        }
        if self.http.listen != "off" && self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(problem(
                "http.listen",
                format!(
                    "{:?} is not host:port (e.g. 127.0.0.1:8484) or off",
                    self.http.listen
                ),
            ));
        }
        if self.http.max_connections == 0 {
            problems.push(problem("http.max_connections", "must be at least 1"));
        }
        if self.http.header_read_timeout_secs == 0 {
            problems.push(problem(
                "http.header_read_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.audit.max_bytes < 4096 {
            problems.push(problem("audit.max_bytes", "must be at least 4096"));
        }
        if self.audit.refusal_window_secs == 0 {
            problems.push(problem("audit.refusal_window_secs", "must be at least 1"));
        }
        if let Some(id) = &self.mqtt.client_id {
            if id.len() < 16 || id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic()) {
                problems.push(problem(
                    "mqtt.client_id",
                    "must be 16 to 128 printable ASCII characters; leave it unset for a random one",
                ));
            }
        }
        if self.jobs.max_concurrent == 0 {
            problems.push(problem("jobs.max_concurrent", "must be at least 1"));
        }
        if self.limits.max_request_bytes < 1024 || self.limits.max_request_bytes > 16 << 20 {
            problems.push(problem(
                "limits.max_request_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if !(2..=128).contains(&self.limits.max_request_depth) {
            problems.push(problem(
                "limits.max_request_depth",
                "must be between 2 and 128",
            ));
        }
        if self.limits.max_in_flight == 0 {
            problems.push(problem("limits.max_in_flight", "must be at least 1"));
        }
        if self.jobs.log_qos > 1 {
            problems.push(problem("jobs.log_qos", "must be 0 or 1"));
        }
        for (label, repo) in &self.repositories {
            if let (Some(borg), Some(ssh)) = (&repo.passphrase, &repo.ssh_passphrase) {
                if borg == ssh && !borg.is_empty() {
                    problems.push(problem(
                        format!("repositories.{label}.ssh_passphrase"),
                        "equals the repository's borg passphrase; use distinct secrets so one leak does not give away both",
                    ));
                }
            }
            if crate::command::RepositoryLabel::parse(label).is_err() {
                problems.push(problem(
                    format!("repositories.{label}"),
                    "is not a valid repository label ([A-Za-z0-9._-], 1 to 64 characters)",
                ));
            }
        }
        if self.mqtt.tls {
            for (key, file) in [
                ("mqtt.ca_file", &self.mqtt.ca_file),
                ("mqtt.client_cert_file", &self.mqtt.client_cert_file),
                ("mqtt.client_key_file", &self.mqtt.client_key_file),
            ] {
                if let Some(f) = file {
                    if !f.is_file() {
                        problems.push(problem(key, format!("{} does not exist", f.display())));
                    }
                }
            }
            if self.mqtt.ca_file.is_none() {
                problems.push(problem(
                    "mqtt.ca_file",
                    "TLS needs the CA certificate that signed the broker's certificate",
                ));
            }
            if self.mqtt.client_cert_file.is_some() != self.mqtt.client_key_file.is_some() {
                problems.push(problem(
                    "mqtt.client_key_file",
                    "a client certificate needs its key and the other way round",
                ));
            }
        }
        problems
    }

    /// The node id: configured, else the host name reduced to `[a-z0-9_-]`.
    pub fn node_id(&self) -> String {
        let raw = match &self.mqtt.node_id {
            Some(id) => id.clone(),
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "borgmatic".into()),
        };
        let id: String = raw
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        if id.is_empty() {
            "borgmatic".into()
        } else {
            id
        }
    }

    /// The topic prefix every topic of this worker lives under.
    pub fn base_topic(&self) -> String {
        match &self.mqtt.base_topic {
            Some(b) => b.trim_end_matches('/').to_string(),
            None => format!("borgmatic/{}", self.node_id()),
        }
    }

    /// The configured passphrase of one repository, if any.
    pub fn passphrase_for(&self, label: &str) -> Option<&Secret> {
        self.repositories
            .get(label)
            .and_then(|r| r.passphrase.as_ref())
    }

    /// The configured SSH key passphrase of one repository, if any.
    pub fn ssh_passphrase_for(&self, label: &str) -> Option<&Secret> {
        self.repositories
            .get(label)
            .and_then(|r| r.ssh_passphrase.as_ref())
    }

    /// Labels of the repositories marked `aio = true`.
    pub fn aio_repositories(&self) -> Vec<String> {
        self.repositories
            .iter()
            .filter(|(_, r)| r.aio)
            .map(|(l, _)| l.clone())
            .collect()
    }

    /// Every configured secret value, so that output can be scrubbed of them.
    pub fn secret_values(&self) -> Vec<String> {
        let mut copy = self.clone();
        let mut out: Vec<String> = copy
            .secret_slots()
            .into_iter()
            .filter_map(|slot| slot.value.as_ref().map(|s| s.expose().to_string()))
            .collect();
        out.retain(|s| !s.is_empty());
        out
    }
}

/// One secret setting: its key, its value and its `_file` form.
struct SecretSlot<'a> {
    key: String,
    value: &'a mut Option<Secret>,
    file: &'a Option<PathBuf>,
}

impl<'a> SecretSlot<'a> {
    fn new(
        key: impl Into<String>,
        value: &'a mut Option<Secret>,
        file: &'a Option<PathBuf>,
    ) -> Self {
        Self {
            key: key.into(),
            value,
            file,
        }
    }
}

/// The last part of every secret key (`mqtt.password`, `repositories.<label>.passphrase`, …).
const SECRET_LEAVES: &[&str] = &[
    "password",
    "read_token",
    "write_token",
    "admin_token",
    "from_header",
    "passphrase",
    "ssh_passphrase",
];

/// Whether a dotted key (any case) names a secret value (not its `_file`).
fn is_secret_key(key: &str) -> bool {
    let leaf = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    SECRET_LEAVES.contains(&leaf.as_str())
}

/// A figment error as a [`Problem`] that never quotes a configured value: figment's
/// own text does (`found unsigned int `12345``), and for a password that is the
/// secret itself. Only the key, the expected form and the kind of value found are
/// said; TOML syntax errors lose their source excerpt for the same reason.
fn config_error(err: &figment::Error) -> Problem {
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

fn env_name(key: &str) -> String {
    key.replace('.', "__").to_uppercase()
}

fn resolve(key: &str, value: &mut Option<Secret>, file: &Option<PathBuf>, out: &mut Vec<Problem>) {
    let Some(path) = file else { return };
    if value.is_some() {
        out.push(problem(
            format!("{key}_file"),
            format!("both {key} and {key}_file are set; keep one"),
        ));
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(content) => {
            let trimmed = content.trim_end_matches(['\n', '\r']);
            *value = Some(Secret::new(trimmed));
        }
        Err(e) => out.push(problem(
            format!("{key}_file"),
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn with(toml: &str) -> Result<Settings, Vec<Problem>> {
        Settings::from_figment(
            Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(toml)),
        )
    }

    fn keys(s: &Settings) -> Vec<String> {
        s.problems().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn missing_tokens_are_named() {
        let s = with("").unwrap();
        let k = keys(&s);
        assert!(k.contains(&"auth.read_token".to_string()));
        assert!(k.contains(&"auth.write_token".to_string()));
        assert!(!k.contains(&"auth.admin_token".to_string()));
    }

    #[test]
    fn short_empty_and_equal_tokens_are_refused() {
        let s = with("[auth]\nread_token = \"short\"\nwrite_token = \"\"\n").unwrap();
        let p = s.problems();
        assert!(p
            .iter()
            .any(|p| p.key == "auth.read_token" && p.message.contains("shorter")));
        assert!(p
            .iter()
            .any(|p| p.key == "auth.write_token" && p.message.contains("empty")));
        let same = "x".repeat(30);
        let s = with(&format!(
            "[auth]\nread_token = \"{same}\"\nwrite_token = \"{same}\"\n"
        ))
        .unwrap();
        assert!(s
            .problems()
            .iter()
            .any(|p| p.key == "auth.write_token" && p.message.contains("equals")));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = with("[mqtt]\nhots = \"x\"\n").unwrap_err();
        assert!(err[0].message.contains("hots"), "{err:?}");
    }

    #[test]
    fn secrets_are_read_from_files_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "file-token-value-0123456789abc\n").unwrap();
        let s = with(&format!("[auth]\nread_token_file = \"{}\"\n", f.display())).unwrap();
        assert_eq!(
            s.auth.read_token.as_ref().unwrap().expose(),
            "file-token-value-0123456789abc"
        );
        let printed = format!("{s:?} {}", toml_string(&s));
        assert!(!printed.contains("file-token-value"));
    }

    fn toml_string(s: &Settings) -> String {
        serde_json::to_string(s).unwrap()
    }

    #[test]
    fn equal_borg_and_ssh_passphrases_are_refused() {
        let s = with("[repositories.nc]\npassphrase = \"same-secret-1\"\nssh_passphrase = \"same-secret-1\"\n")
            .unwrap();
        assert!(s
            .problems()
            .iter()
            .any(|p| p.key == "repositories.nc.ssh_passphrase"));
    }

    #[test]
    fn config_errors_never_quote_a_value() {
        for toml in [
            "[mqtt]\npassword = 31337424242\n",
            "[repositories.nc]\npassphrase = 31337424242\n",
            "[repositories.nc]\nssh_passphrase = [31337424242]\n",
            "[auth]\nread_token = { x = \"31337424242\" }\n",
            "[mqtt]\nport = 31337424242\n",
            "[log]\nformat = \"31337424242\"\n",
            "[mqtt]\npassword = 31337424242abc\n",
            "[mqtt]\npassword = \"31337424242\n",
        ] {
            let problems = with(toml).unwrap_err();
            let text = format!("{problems:?}");
            assert!(!problems.is_empty());
            assert!(!text.contains("31337424242"), "{toml}: {text}");
        }
        let p = with("[mqtt]\npassword = 12345678\n").unwrap_err();
        assert_eq!(p[0].key, "mqtt.password");
        assert!(p[0].message.contains("expected a string"), "{p:?}");
        assert!(p[0].message.contains("_file"), "{p:?}");
    }

    /// Every secret key, set through its `_file` form, takes effect, and is in
    /// [`Settings::secret_values`] (so output is scrubbed of it).
    #[test]
    fn every_secret_has_a_working_file_form() {
        let dir = tempfile::tempdir().unwrap();
        let keys = [
            ("mqtt", "password"),
            ("auth", "read_token"),
            ("auth", "write_token"),
            ("auth", "admin_token"),
            ("http", "from_header"),
            ("repositories.nc", "passphrase"),
            ("repositories.nc", "ssh_passphrase"),
        ];
        let mut toml = String::new();
        for (table, key) in keys {
            let f = dir.path().join(format!("{table}.{key}"));
            std::fs::write(&f, format!("from-file-{table}-{key}\n")).unwrap();
            toml.push_str(&format!("{table}.{key}_file = \"{}\"\n", f.display()));
        }
        let mut s = with(&toml).unwrap();
        let values = s.secret_values();
        let slots: Vec<(String, String)> = s
            .secret_slots()
            .into_iter()
            .map(|slot| {
                (
                    slot.key.clone(),
                    slot.value
                        .as_ref()
                        .map(|v| v.expose().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(slots.len(), keys.len());
        for (table, key) in keys {
            let want = format!("from-file-{table}-{key}");
            let full = format!("{table}.{key}");
            assert!(
                slots.contains(&(full.clone(), want.clone())),
                "{full} not read from its file: {slots:?}"
            );
            assert!(values.contains(&want));
            assert!(is_secret_key(&full));
        }
        assert_eq!(
            s.ssh_passphrase_for("nc").map(Secret::expose),
            Some("from-file-repositories.nc-ssh_passphrase")
        );
    }

    #[test]
    fn node_id_is_sanitised() {
        let s = with("[mqtt]\nnode_id = \"My Host.example\"\n").unwrap();
        assert_eq!(s.node_id(), "myhostexample");
        assert_eq!(s.base_topic(), "borgmatic/myhostexample");
    }

    #[test]
    fn timeouts_accept_both_key_forms() {
        let s = with("[jobs]\ndefault_timeout_secs = 5\n[jobs.timeouts]\n\"backup/run\" = 7\narchive_list = 9\n")
            .unwrap();
        assert_eq!(s.jobs.timeout_for("backup/run").as_secs(), 7);
        assert_eq!(s.jobs.timeout_for("archive/list").as_secs(), 9);
        assert_eq!(s.jobs.timeout_for("job/get").as_secs(), 5);
    }
}
