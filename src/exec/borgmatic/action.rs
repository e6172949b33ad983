//! What a job asks borgmatic to do: [`Action`], one variant per operation with
//! its arguments already validated, plus the repository and secrets it runs with.
//! Plain data: imports only the value types it holds.

use std::path::PathBuf;

use crate::config::Secret;
use crate::domain::{ArchiveName, ArchivePath, RepositoryLabel};
use crate::exec::roots::Confined;

/// A repository label resolved to its existing configuration file.
#[derive(Debug, Clone)]
pub struct Repository {
    pub label: RepositoryLabel,
    pub config: PathBuf,
}

/// The secrets one job may use: the configured ones, or a request's own.
#[derive(Debug, Clone, Default)]
pub struct JobSecrets {
    pub borg: Option<Secret>,
    pub ssh: Option<Secret>,
}

/// One borgmatic operation, with its arguments already validated and resolved.
#[derive(Debug, Clone)]
pub enum Action {
    /// `check --only archives` of one archive (plus `spot` when asked).
    CheckArchive {
        archive: ArchiveName,
        spot: bool,
    },
    /// The archive's files as JSON lines on stdout.
    ListFiles {
        archive: ArchiveName,
    },
    Create {
        dry_run: bool,
        stats: bool,
        progress: bool,
    },
    RepoList {
        last: Option<u32>,
    },
    Info {
        archive: ArchiveName,
    },
    LatestStats,
    RepoInfo,
    Extract {
        archive: ArchiveName,
        paths: Vec<ArchivePath>,
        destination: Confined,
    },
    Mount {
        archive: Option<ArchiveName>,
        mount_point: Confined,
    },
    Umount {
        mount_point: Confined,
    },
    Check {
        repair: bool,
    },
    Prune {
        dry_run: bool,
    },
    Compact {
        dry_run: bool,
    },
    BreakLock,
    ChangePassphrase {
        new: Secret,
    },
    ValidateConfig,
}
