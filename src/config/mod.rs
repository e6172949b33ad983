//! Settings: built-in defaults < TOML file < `BMQTT_` environment, plus the start-up
//! guards that refuse to run an unsafe or broken configuration.
//!
//! Every secret also accepts `<key>_file` (`BMQTT_AUTH__READ_TOKEN_FILE`), the form
//! Docker secrets use. Secrets live in [`Secret`], which never prints its value.
//!
//! # Layout
//! - `secret`: the [`Secret`] type (imports nothing of the crate).
//! - `transport`, `runtime`, `tools`: one settings struct per TOML section, with
//!   its defaults.
//! - `secret_files`: the list of secret settings, `_file` loading, scrubbing list.
//! - `guards`: [`Settings::problems`], the start-up checks.
//! - `errors`: figment errors rewritten so that no value is quoted.
//!
//! Imports of the crate: `domain` (`Secret`, and the rules `guards` checks against),
//! `redact` (quoting keys in `errors`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod errors;
mod guards;
mod runtime;
mod secret;
mod secret_files;
#[cfg(test)]
mod tests;
mod tools;
mod transport;

use errors::config_error;
use guards::problem;
pub use guards::Problem;
pub use runtime::{
    AuditSettings, HealthSettings, JobSettings, LimitSettings, LogFormat, LogSettings,
};
pub use secret::Secret;
use secret_files::is_secret_key;
pub use tools::{BorgmaticSettings, DockerSettings, RepositorySettings, SshSettings};
pub use transport::{AuthSettings, HomeAssistantSettings, HttpSettings, MqttSettings};

/// Where the TOML file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/borgmatic-mqtt/config.toml";
/// Shortest token accepted: long enough that guessing is hopeless.
pub const MIN_TOKEN_LEN: usize = 24;

/// The whole configuration, as the spec's "Configuration surface" names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `[mqtt]`.
    pub mqtt: MqttSettings,
    /// `[auth]`: the role tokens.
    pub auth: AuthSettings,
    /// `[borgmatic]`.
    pub borgmatic: BorgmaticSettings,
    /// `[http]`: the sidecar.
    pub http: HttpSettings,
    /// The worker's own files: job store, audit trail, MQTT client id, run directories.
    pub state_dir: PathBuf,
    /// `[docker]`.
    pub docker: DockerSettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `[jobs]`.
    pub jobs: JobSettings,
    /// `[limits]`: rates and request bounds.
    pub limits: LimitSettings,
    /// `[audit]`: the audit trail's bounds.
    pub audit: AuditSettings,
    /// `[ssh]`: the key directory.
    pub ssh: SshSettings,
    /// `[homeassistant]`: MQTT discovery.
    pub homeassistant: HomeAssistantSettings,
    /// Repository health probes (see `health`).
    pub health: HealthSettings,
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
            health: HealthSettings::default(),
            repositories: BTreeMap::new(),
        }
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

    /// Where `key/export` writes: `borgmatic.key_export_dir`, else `<state_dir>/keys`.
    pub fn key_export_dir(&self) -> PathBuf {
        self.borgmatic
            .key_export_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("keys"))
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
}
