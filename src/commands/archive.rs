//! Archives: `archive/list`, `archive/info`, `archive/extract`, `archive/mount`,
//! `archive/umount`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::context::{fuse, no_repo, Ctx, Outcome};
use super::fields::on_repository;
use super::CommandName;
use crate::command::ApiError;
use crate::domain::{ArchiveName, ArchivePath, RepositoryLabel, SubPath};
use crate::exec::borgmatic::Action;

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
    #[default]
    Repository,
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

/// `archive/extract`: into `<restore_root>/<destination>`, optionally only `paths`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extract {
    pub repository: RepositoryLabel,
    pub archive: ArchiveName,
    #[serde(default)]
    pub paths: Vec<ArchivePath>,
    pub destination: SubPath,
}

/// `archive/mount` and `archive/umount`: at `<mount_root>/<mount_point>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    pub repository: RepositoryLabel,
    /// The whole repository when absent (mount only).
    #[serde(default)]
    pub archive: Option<ArchiveName>,
    pub mount_point: SubPath,
}

on_repository!(List, Info, Extract, Mount);

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
    let destination = ctx.below(root, &c.destination, false)?;
    let action = Action::Extract {
        archive: c.archive,
        paths: c.paths,
        destination,
    };
    ctx.borgmatic_job(CommandName::ArchiveExtract, c.repository, action)
}

pub(super) async fn mount(ctx: &Ctx<'_>, c: Mount) -> Result<Outcome, ApiError> {
    fuse()?;
    let mount_point = ctx.below(&ctx.settings.borgmatic.mount_root, &c.mount_point, false)?;
    let action = Action::Mount {
        archive: c.archive,
        mount_point,
    };
    ctx.borgmatic_job(CommandName::ArchiveMount, c.repository, action)
}

pub(super) async fn umount(ctx: &Ctx<'_>, c: Mount) -> Result<Outcome, ApiError> {
    fuse()?;
    let mount_point = ctx.below(&ctx.settings.borgmatic.mount_root, &c.mount_point, true)?;
    ctx.borgmatic_job(
        CommandName::ArchiveUmount,
        c.repository,
        Action::Umount { mount_point },
    )
}
