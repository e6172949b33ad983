//! What a job asks borgmatic to do: [`Action`], one variant per operation with
//! its arguments already validated, plus the repository and secrets it runs with.
//! Plain data: imports only the value types it holds (`domain`, `config::Secret`,
//! `roots::Confined`).

use std::path::PathBuf;

use crate::config::Secret;
use crate::domain::{
    ArchiveName, ArchivePath, DatabaseName, EncryptionMode, MountOptions, RepositoryLabel,
};
use crate::exec::roots::Confined;

/// A repository label resolved to its existing configuration file.
#[derive(Debug, Clone)]
pub struct Repository {
    /// The label clients name the repository by.
    pub label: RepositoryLabel,
    /// The borgmatic configuration file passed as `--config`.
    pub config: PathBuf,
}

/// The secrets one job may use: the configured ones, or a request's own.
#[derive(Debug, Clone, Default)]
pub struct JobSecrets {
    /// The repository passphrase, passed as `BORG_PASSPHRASE`.
    pub borg: Option<Secret>,
    /// The passphrase of the SSH identity files, handed to the askpass helper.
    pub ssh: Option<Secret>,
}

/// One borgmatic operation, with its arguments already validated and resolved.
#[derive(Debug, Clone)]
pub enum Action {
    /// `check --only archives` of one archive (plus `spot` when asked).
    CheckArchive {
        /// The archive to check.
        archive: ArchiveName,
        /// Also run borgmatic's `spot` check (compares source files with the archive).
        spot: bool,
    },
    /// The archive's files as JSON lines on stdout.
    ListFiles {
        /// The archive whose files are listed.
        archive: ArchiveName,
    },
    /// `create`: a new archive (the backup itself).
    Create {
        /// Pass `--dry-run`: borg reads the sources but writes nothing.
        dry_run: bool,
        /// Ask borg for the archive's statistics.
        stats: bool,
        /// Ask borg for progress lines while it runs.
        progress: bool,
    },
    /// `repo-list`: the repository's archives.
    RepoList {
        /// Only the newest N archives; all when `None`.
        last: Option<u32>,
    },
    /// `info` of one archive, as JSON.
    Info {
        /// The archive described.
        archive: ArchiveName,
    },
    /// `info --last 1`: the newest archive, read for its statistics.
    LatestStats,
    /// `repo-info`: the repository's size, encryption and cache figures.
    RepoInfo,
    /// `extract`: restore files of an archive into a confined directory.
    Extract {
        /// The archive restored from.
        archive: ArchiveName,
        /// Path prefixes inside the archive; all of it when empty.
        paths: Vec<ArchivePath>,
        /// Where the files are written, under a configured restore root.
        destination: Confined,
    },
    /// `export-tar`: an archive, or paths of it, as a new tar file in a confined
    /// directory.
    ExportTar {
        /// The archive exported.
        archive: ArchiveName,
        /// Path prefixes inside the archive; all of it when empty.
        paths: Vec<ArchivePath>,
        /// The directory the file is written in, under a configured restore root.
        directory: Confined,
        /// The tar file's name in `directory`: one plain component, ending `.tar`;
        /// created by the worker when the job starts, only if it does not exist.
        file: String,
    },
    /// `restore`: database dumps of an archive, back into the databases the
    /// configuration's hooks name.
    RestoreDumps {
        /// The archive restored from.
        archive: ArchiveName,
        /// Only these databases (each one the configuration names); every dump in
        /// the archive when empty.
        databases: Vec<DatabaseName>,
    },
    /// `mount`: the repository, or one archive, as a FUSE file system.
    Mount {
        /// The archive mounted; the whole repository when `None`.
        archive: Option<ArchiveName>,
        /// The directory mounted on, under a configured mount root.
        mount_point: Confined,
        /// Allow-listed FUSE options (`--options`); none when empty.
        options: MountOptions,
    },
    /// `umount`: undo a [`Action::Mount`].
    Umount {
        /// The directory to unmount.
        mount_point: Confined,
    },
    /// `check --force` of the repository and its archives.
    Check {
        /// Pass `--repair` (admin only; borg's confirmation is given for us).
        repair: bool,
    },
    /// `prune`: delete archives the retention settings no longer keep.
    Prune {
        /// Only list what would be deleted.
        dry_run: bool,
    },
    /// `compact`: free the space of deleted archives.
    Compact {
        /// Only report what would be freed.
        dry_run: bool,
    },
    /// `break-lock`: remove a stale repository lock.
    BreakLock,
    /// `key change-passphrase`: re-encrypt the repository key.
    ChangePassphrase {
        /// The new passphrase, passed as `BORG_NEW_PASSPHRASE`.
        new: Secret,
    },
    /// `config validate` of the configuration directory.
    ValidateConfig,
    /// `delete --archive NAME`: one archive (its space is freed by `compact`).
    DeleteArchive {
        /// The archive deleted; never `latest`, never a pattern.
        archive: ArchiveName,
    },
    /// `repo-create`: a new, empty repository.
    RepoCreate {
        /// `--encryption`; `None` leaves it to the configuration's `encryption`.
        encryption: Option<EncryptionMode>,
    },
    /// `key export --path FILE`: the repository key, written to a file the worker
    /// named (never to stdout).
    KeyExport {
        /// The file written; absolute, below the key export directory, new.
        path: PathBuf,
        /// `--paper`: the text form for printing.
        paper: bool,
    },
}
