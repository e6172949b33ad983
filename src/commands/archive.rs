//! Archives: `archive/list`, `archive/info`, `archive/files`, `archive/extract`,
//! `archive/export-tar`, `archive/mount`, `archive/umount`, `archive/delete`.
//!
//! May import: `domain`, `exec::borgmatic`, `jobs` (the `Task` interface); `nix`
//! for the user and group database.

use serde::Deserialize;
use serde_json::{json, Value};

use super::context::{fuse, no_repo, Ctx, Outcome};
use super::fields::on_repository;
use super::response::ApiError;
use super::{CommandName, Fields, Schema};
use crate::domain::{ArchiveName, ArchivePath, MountOptions, RepositoryLabel, RootPath, SubPath};
use crate::exec::borgmatic::Action;

mod delete;
mod files;

/// Where AIO keeps the list of its archives inside the mastercontainer.
const AIO_ARCHIVES_LIST: &str = "/mnt/docker-aio-config/data/backup_archives.list";

/// `archive/list`: borgmatic `repo-list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    pub repository: RepositoryLabel,
    /// Only the newest N archives.
    #[serde(default)]
    pub last: Option<u32>,
    /// Where the list comes from (default: the repository).
    #[serde(default)]
    pub source: ArchiveSource,
}

/// `repository` asks borg; `aio` reads the list Nextcloud AIO keeps in its
/// mastercontainer, without touching the repository lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveSource {
    /// The repository itself, through borgmatic.
    #[default]
    Repository,
    /// AIO's own archive list, read from its mastercontainer.
    Aio,
}

/// `archive/info`: borgmatic `info --json` of one archive (default the latest).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Info {
    pub repository: RepositoryLabel,
    #[serde(default)]
    pub archive: Option<ArchiveName>,
}

/// `archive/extract`: into `<restore_root>/<destination>` (or an absolute
/// destination inside the restore root), optionally only `paths`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extract {
    pub repository: RepositoryLabel,
    pub archive: ArchiveName,
    #[serde(default)]
    pub paths: Vec<ArchivePath>,
    pub destination: RootPath,
}

/// `archive/export-tar`: the archive, or only `paths` of it, as a new tar file at
/// `destination` below the restore root (relative, or absolute inside the root).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportTar {
    pub repository: RepositoryLabel,
    pub archive: ArchiveName,
    #[serde(default)]
    pub paths: Vec<ArchivePath>,
    /// The tar file: its name ends with `.tar` and names nothing that exists yet.
    pub destination: RootPath,
}

/// `archive/mount`: at `<mount_root>/<mount_point>`, with allow-listed options.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    pub repository: RepositoryLabel,
    /// The whole repository when absent.
    #[serde(default)]
    pub archive: Option<ArchiveName>,
    pub mount_point: SubPath,
    /// `allow_other`, `uid`, `gid`, `umask`; anything else is refused.
    #[serde(default)]
    pub options: MountOptions,
}

/// `archive/umount`: what is mounted at `<mount_root>/<mount_point>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Umount {
    pub repository: RepositoryLabel,
    /// Accepted for symmetry with `archive/mount`; not used.
    #[serde(default)]
    pub archive: Option<ArchiveName>,
    pub mount_point: SubPath,
}

/// `archive/delete` (admin): one archive, named exactly (never `latest`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delete {
    pub repository: RepositoryLabel,
    pub archive: ArchiveName,
}

impl Fields for Delete {
    fn check(&self) -> Result<(), ApiError> {
        if self.archive == ArchiveName::latest() {
            return Err(ApiError::invalid(
                "archive/delete needs the archive's own name, not 'latest' (archive/list names them)",
            ));
        }
        Ok(())
    }
    fn repository(&self) -> Option<&RepositoryLabel> {
        Some(&self.repository)
    }
    fn schema() -> Schema {
        Schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["repository", "archive"],
            "properties": {
                "repository": { "type": "string", "pattern": RepositoryLabel::PATTERN },
                "archive": { "type": "string", "minLength": 1, "maxLength": 255, "description": "the exact name (archive/list); no glob characters, not 'latest'" }
            }
        }))
    }
}

on_repository!(List, Info, Extract, ExportTar, Mount, Umount);

/// `archive/files`: one page of an archive's contents under an optional path
/// (borgmatic `list --archive … --json`), so a user can browse before restoring.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    pub repository: RepositoryLabel,
    pub archive: ArchiveName,
    /// Only this path and what lies below it.
    #[serde(default)]
    pub path: Option<ArchivePath>,
    /// Skip this many matching items (the previous page's `next`).
    #[serde(default)]
    pub after: u64,
    /// Items per page, 1 to [`files::MAX_LIMIT`] (default [`files::DEFAULT_LIMIT`]).
    #[serde(default)]
    pub limit: Option<u32>,
}

impl Fields for Files {
    fn check(&self) -> Result<(), ApiError> {
        if self.limit.is_some_and(|l| l == 0 || l > files::MAX_LIMIT) {
            return Err(ApiError::invalid(format!(
                "limit must be 1 to {}",
                files::MAX_LIMIT
            )));
        }
        Ok(())
    }
    fn repository(&self) -> Option<&RepositoryLabel> {
        Some(&self.repository)
    }
    fn schema() -> Schema {
        Schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["repository", "archive"],
            "properties": {
                "repository": { "type": "string", "pattern": RepositoryLabel::PATTERN },
                "archive": { "type": "string", "minLength": 1, "maxLength": 255 },
                "path": { "type": "string", "description": "only this path and what lies below it" },
                "after": { "type": "integer", "minimum": 0, "description": "the previous page's next" },
                "limit": { "type": "integer", "minimum": 1, "maximum": files::MAX_LIMIT }
            }
        }))
    }
}

pub(super) async fn files(ctx: &Ctx<'_>, c: Files) -> Result<Outcome, ApiError> {
    let repo = ctx.repository(&c.repository)?;
    let secrets = ctx.job_secrets(&c.repository)?;
    let archive = c.archive.clone();
    let spec = ctx
        .borgmatic
        .task(&repo, &secrets, Action::ListFiles { archive })
        .into_spec();
    let task = files::FilesTask {
        spec,
        runtime_root: ctx.settings.state_dir.join("run"),
        page: files::Page::new(c.archive, c.path, c.after, c.limit),
    };
    let scrub = ctx.secrets.values();
    ctx.repo_job(
        CommandName::ArchiveFiles,
        c.repository,
        Box::new(task),
        scrub,
    )
}

pub(super) async fn list(ctx: &Ctx<'_>, c: List) -> Result<Outcome, ApiError> {
    match c.source {
        ArchiveSource::Aio => aio_list(ctx, c).await,
        ArchiveSource::Repository => {
            let action = Action::RepoList { last: c.last };
            ctx.borgmatic_job(CommandName::ArchiveList, c.repository, action)
        }
    }
}

/// `archive/list` with `source: aio`: AIO's own list, read from the
/// mastercontainer without touching the repository (or its lock).
async fn aio_list(ctx: &Ctx<'_>, c: List) -> Result<Outcome, ApiError> {
    if ctx.borgmatic.repository(&c.repository).is_none() {
        return Err(no_repo(&c.repository));
    }
    let master = ctx.settings.docker.mastercontainer();
    let text = ctx
        .docker
        .read_file(&master, AIO_ARCHIVES_LIST)
        .await
        .map_err(super::docker::docker_error)?;
    let mut archives: Vec<Value> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, rest) = l.split_once(',').unwrap_or((l, ""));
            json!({ "name": name.trim(), "time": (!rest.trim().is_empty()).then(|| rest.trim()) })
        })
        .collect();
    if let Some(n) = c.last {
        let skip = archives.len().saturating_sub(n as usize);
        archives.drain(..skip);
    }
    Ok(Outcome::Answer(
        json!({ "archives": archives, "source": "aio", "file": AIO_ARCHIVES_LIST }),
    ))
}

pub(super) async fn info(ctx: &Ctx<'_>, c: Info) -> Result<Outcome, ApiError> {
    let archive = c.archive.unwrap_or_else(ArchiveName::latest);
    ctx.borgmatic_job(
        CommandName::ArchiveInfo,
        c.repository,
        Action::Info { archive },
    )
}

pub(super) async fn extract(ctx: &Ctx<'_>, c: Extract) -> Result<Outcome, ApiError> {
    let root = &ctx.settings.borgmatic.restore_root;
    let sub = ctx.sub_below(root, &c.destination)?;
    let destination = ctx.below(root, &sub, false)?;
    let action = Action::Extract {
        archive: c.archive,
        paths: c.paths,
        destination,
    };
    ctx.borgmatic_job(CommandName::ArchiveExtract, c.repository, action)
}

pub(super) async fn export_tar(ctx: &Ctx<'_>, c: ExportTar) -> Result<Outcome, ApiError> {
    let root = &ctx.settings.borgmatic.restore_root;
    let (directory, file) = ctx.new_file_below(root, &c.destination, ".tar")?;
    let action = Action::ExportTar {
        archive: c.archive,
        paths: c.paths,
        directory,
        file,
    };
    ctx.borgmatic_job(CommandName::ArchiveExportTar, c.repository, action)
}

pub(super) async fn mount(ctx: &Ctx<'_>, c: Mount) -> Result<Outcome, ApiError> {
    fuse()?;
    named_ids(&c.options)?;
    let mount_point = ctx.below(&ctx.settings.borgmatic.mount_root, &c.mount_point, false)?;
    let action = Action::Mount {
        archive: c.archive,
        mount_point,
        options: c.options,
    };
    ctx.borgmatic_job(CommandName::ArchiveMount, c.repository, action)
}

/// borg 1.2 mounts only with a `uid` and `gid` that name a user and a group on
/// this machine (it asserts so and fails with a traceback): refused here instead.
fn named_ids(o: &MountOptions) -> Result<(), ApiError> {
    use nix::unistd::{Gid, Group, Uid, User};
    if let Some(uid) = o.uid.map(|u| u.get()) {
        if !matches!(User::from_uid(Uid::from_raw(uid)), Ok(Some(_))) {
            return Err(ApiError::invalid(format!(
                "uid {uid} names no user on this machine; borg mounts only with a uid that has a name"
            )));
        }
    }
    if let Some(gid) = o.gid.map(|g| g.get()) {
        if !matches!(Group::from_gid(Gid::from_raw(gid)), Ok(Some(_))) {
            return Err(ApiError::invalid(format!(
                "gid {gid} names no group on this machine; borg mounts only with a gid that has a name"
            )));
        }
    }
    Ok(())
}

pub(super) async fn umount(ctx: &Ctx<'_>, c: Umount) -> Result<Outcome, ApiError> {
    fuse()?;
    let mount_point = ctx.below(&ctx.settings.borgmatic.mount_root, &c.mount_point, true)?;
    ctx.borgmatic_job(
        CommandName::ArchiveUmount,
        c.repository,
        Action::Umount { mount_point },
    )
}

/// Deletes one archive: the job first lists the repository and fails, deleting
/// nothing, when no archive has exactly that name (borg would match nothing and
/// report success).
pub(super) async fn delete(ctx: &Ctx<'_>, c: Delete) -> Result<Outcome, ApiError> {
    let repo = ctx.repository(&c.repository)?;
    let secrets = ctx.job_secrets(&c.repository)?;
    let list = ctx
        .borgmatic
        .task(&repo, &secrets, Action::RepoList { last: None });
    let archive = c.archive.clone();
    let remove = ctx
        .borgmatic
        .task(&repo, &secrets, Action::DeleteArchive { archive });
    let task = delete::DeleteTask {
        list,
        delete: remove,
        archive: c.archive,
    };
    let scrub = ctx.secrets.values();
    ctx.repo_job(
        CommandName::ArchiveDelete,
        c.repository,
        Box::new(task),
        scrub,
    )
}
