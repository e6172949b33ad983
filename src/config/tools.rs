//! Settings of the tools the worker drives: `[borgmatic]`, `[docker]`, `[ssh]` and
//! `[repositories.<label>]`. Plain data with defaults; imports only
//! [`super::Secret`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

/// `[borgmatic]`: the program, its configurations, and where restores and mounts may go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BorgmaticSettings {
    /// One `<label>.yaml` per repository; a label names the file.
    pub config_dir: PathBuf,
    /// The borgmatic program (looked up in `PATH` when not a path).
    pub binary: PathBuf,
    /// `archive/extract` destinations live below it.
    pub restore_root: PathBuf,
    /// `archive/mount` mount points live below it.
    pub mount_root: PathBuf,
    /// Where `key/export` writes key files (mode 0700, files 0600); default
    /// `<state_dir>/keys` (see [`super::Settings::key_export_dir`]).
    pub key_export_dir: Option<PathBuf>,
}

impl Default for BorgmaticSettings {
    fn default() -> Self {
        Self {
            config_dir: PathBuf::from("/etc/borgmatic.d"),
            binary: PathBuf::from("borgmatic"),
            restore_root: PathBuf::from("/restore"),
            mount_root: PathBuf::from("/mnt/borgmatic"),
            key_export_dir: None,
        }
    }
}

/// Where the SSH keys of remote repositories live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshSettings {
    /// The directory of the keys `ssh-key/*` manages (shared with other files; see
    /// [`crate::ssh_keys`]).
    pub key_dir: PathBuf,
}

impl Default for SshSettings {
    fn default() -> Self {
        Self {
            key_dir: PathBuf::from("/root/.ssh"),
        }
    }
}

/// `[docker]`: the Docker engine and Nextcloud AIO's names.
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
    /// The AIO master container's name.
    pub fn mastercontainer(&self) -> String {
        format!("{}mastercontainer", self.aio_prefix)
    }
    /// The AIO borgbackup container's name.
    pub fn borgbackup_container(&self) -> String {
        format!("{}borgbackup", self.aio_prefix)
    }
    /// The prefix of AIO's volume names (`-` becomes `_`).
    pub fn volume_prefix(&self) -> String {
        self.aio_prefix.replace('-', "_")
    }
}

/// `[repositories.<label>]`: one repository's secrets, and whether AIO backs up into it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepositorySettings {
    /// The borg passphrase, handed to borgmatic only through `BORG_PASSPHRASE`.
    pub passphrase: Option<Secret>,
    /// A file holding `passphrase`; set one of the two.
    pub passphrase_file: Option<PathBuf>,
    /// The passphrase of the SSH key used for this repository, given to ssh through
    /// the askpass helper.
    pub ssh_passphrase: Option<Secret>,
    /// A file holding `ssh_passphrase`; set one of the two.
    pub ssh_passphrase_file: Option<PathBuf>,
    /// The repository Nextcloud AIO backs up into: `backup/run` and `aio/backup`
    /// never run at the same time on it.
    pub aio: bool,
}
