//! Settings of the tools the worker drives: `[borgmatic]`, `[docker]`, `[ssh]` and
//! `[repositories.<label>]`. Plain data with defaults; imports only
//! [`super::Secret`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

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
