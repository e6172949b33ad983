//! The command model: one [`commands!`] table naming every command (wire name,
//! least role, kind, fields type, handler), and one file per command group holding
//! its fields, their checks, its handler and what its result means.
//!
//! Adding a command is one table row plus its group file: parsing (serde, with
//! `deny_unknown_fields`), dispatch, the role check, the OpenAPI schema and the
//! `info` command list all come from the table.
//!
//! May import: `domain`, `redact`, `config`, `jobs`, `exec`,
//! `docker`, `borg_config`, `emergency`, `ssh_keys`, `locks`, `aio`, `askpass`.
//! Never `service` (the audit trail comes in as [`AuditTrail`]), `mqtt` or `http`.

mod aio;
mod archive;
mod backup;
mod config;
mod context;
mod docker;
mod fields;
mod jobs;
mod key;
mod ops;
mod press;
mod repo;
mod response;
mod ssh_key;
#[cfg(test)]
mod tests;

pub use archive::ArchiveSource;
pub use context::{AuditTrail, Ctx, JobPlan, Outcome, RequestSecrets};
pub use fields::{Fields, Schema};
pub use press::Press;
pub use response::{ApiError, ErrorBody, ErrorCode, Response, Status};

use serde_json::{Map, Value};

use crate::domain::{RepositoryLabel, Role};

/// Whether a command starts a job or answers at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Starts a job; the answer carries its `job_id`.
    Job,
    /// Answers at once, with no job.
    Immediate,
}

macro_rules! commands {
    ($($variant:ident => $name:literal, $role:ident, $kind:ident, $fields:ty, $handler:path;)*) => {
        /// Every command name of the v1 contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CommandName { $(#[doc = concat!("`", $name, "`")] $variant,)* }

        impl CommandName {
            /// Every command, in table order (the `info` list and the OpenAPI paths).
            pub const ALL: &'static [CommandName] = &[$(CommandName::$variant,)*];

            /// `group/action`, as in the topic and the HTTP path.
            pub fn as_str(self) -> &'static str {
                match self { $(CommandName::$variant => $name,)* }
            }
            /// The least role allowed to run it.
            pub fn role(self) -> Role {
                match self { $(CommandName::$variant => Role::$role,)* }
            }
            /// Whether it starts a job or answers at once.
            pub fn kind(self) -> Kind {
                match self { $(CommandName::$variant => Kind::$kind,)* }
            }
            /// The command named `group/action`; `None` for a name not in the contract.
            pub fn parse(s: &str) -> Option<CommandName> {
                match s { $($name => Some(CommandName::$variant),)* _ => None }
            }
            /// The JSON schema of its fields (the OpenAPI request body).
            pub fn schema(self) -> Value {
                match self { $(CommandName::$variant => <$fields as Fields>::schema().into_json(),)* }
            }
        }

        /// A request that has passed every check that needs no state.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Command { $(#[doc = concat!("`", $name, "` with its checked fields.")] $variant($fields),)* }

        impl Command {
            /// Builds the command named `name` from the request's own fields (the
            /// envelope fields already removed): serde, then the fields' own checks.
            pub fn parse(name: CommandName, fields: Map<String, Value>) -> Result<Command, ApiError> {
                let v = Value::Object(fields);
                Ok(match name { $(CommandName::$variant => Command::$variant(fields::parse(v)?),)* })
            }
            /// Which command this is.
            pub fn name(&self) -> CommandName {
                match self { $(Command::$variant(_) => CommandName::$variant,)* }
            }
            fn fields(&self) -> &dyn Fields {
                match self { $(Command::$variant(f) => f,)* }
            }
            /// Runs its handler: an immediate answer or a job plan.
            pub async fn handle(self, ctx: &Ctx<'_>) -> Result<Outcome, ApiError> {
                match self { $(Command::$variant(f) => $handler(ctx, f).await,)* }
            }
        }
    };
}

commands! {
    BackupRun => "backup/run", Write, Job, backup::Run, backup::run;
    BackupVerify => "backup/verify", Write, Job, backup::Verify, backup::verify;
    BackupRestoreDumps => "backup/restore-dumps", Admin, Job, backup::RestoreDumps, backup::restore_dumps;
    ArchiveList => "archive/list", Read, Job, archive::List, archive::list;
    ArchiveInfo => "archive/info", Read, Job, archive::Info, archive::info;
    ArchiveFiles => "archive/files", Read, Job, archive::Files, archive::files;
    ArchiveExtract => "archive/extract", Write, Job, archive::Extract, archive::extract;
    ArchiveExportTar => "archive/export-tar", Write, Job, archive::ExportTar, archive::export_tar;
    ArchiveMount => "archive/mount", Write, Job, archive::Mount, archive::mount;
    ArchiveUmount => "archive/umount", Write, Job, archive::Umount, archive::umount;
    ArchiveDelete => "archive/delete", Admin, Job, archive::Delete, archive::delete;
    RepoInfo => "repo/info", Read, Job, repo::RepoOnly, repo::info;
    RepoCheck => "repo/check", Write, Job, repo::Check, repo::check;
    RepoPrune => "repo/prune", Write, Job, repo::DryRun, repo::prune;
    RepoCompact => "repo/compact", Write, Job, repo::DryRun, repo::compact;
    RepoBreakLock => "repo/break-lock", Admin, Job, repo::RepoOnly, repo::break_lock;
    RepoLatestStats => "repo/latest-stats", Read, Job, repo::RepoOnly, repo::latest_stats;
    RepoLockStatus => "repo/lock-status", Read, Immediate, repo::OptionalRepo, repo::lock_status;
    RepoCreate => "repo/create", Admin, Job, repo::Create, repo::create;
    ConfigList => "config/list", Read, Immediate, fields::NoFields, config::list;
    ConfigShow => "config/show", Read, Immediate, repo::RepoOnly, config::show;
    ConfigValidate => "config/validate", Read, Job, repo::OptionalRepo, config::validate;
    ConfigCheckAio => "config/check-aio", Read, Immediate, repo::OptionalRepo, config::check_aio;
    KeyChangePassphrase => "key/change-passphrase", Admin, Job, key::ChangePassphrase, key::change_passphrase;
    KeyExport => "key/export", Admin, Job, key::Export, key::export;
    ContainerList => "container/list", Read, Immediate, fields::NoFields, docker::container_list;
    ContainerExec => "container/exec", Write, Job, docker::Exec, docker::container_exec;
    AioBackup => "aio/backup", Write, Job, aio::Backup, aio::backup;
    AioHealthcheck => "aio/healthcheck", Read, Job, fields::NoFields, aio::healthcheck;
    AioStart => "aio/start", Write, Job, aio::Start, aio::start;
    AioStop => "aio/stop", Admin, Job, fields::NoFields, aio::stop;
    VolumeList => "volume/list", Read, Immediate, docker::Volumes, docker::volume_list;
    EmergencyStatus => "emergency/status", Read, Immediate, fields::NoFields, ops::emergency_status;
    EmergencyStop => "emergency/stop", Admin, Job, ops::EmergencyStop, ops::emergency_stop;
    SshKeyList => "ssh-key/list", Read, Immediate, fields::NoFields, ssh_key::key_list;
    SshKeyShow => "ssh-key/show", Read, Immediate, ssh_key::KeyRef, ssh_key::key_show;
    SshKeyAuthorizedLine => "ssh-key/authorized-line", Read, Immediate, ssh_key::AuthorizedLine, ssh_key::key_authorized_line;
    SshKeyCreate => "ssh-key/create", Admin, Immediate, ssh_key::KeyCreate, ssh_key::key_create;
    SshKeyRotate => "ssh-key/rotate", Admin, Immediate, ssh_key::KeyCreate, ssh_key::key_rotate;
    SshKeyDelete => "ssh-key/delete", Admin, Immediate, ssh_key::KeyRef, ssh_key::key_delete;
    SshKeyTest => "ssh-key/test", Read, Job, ssh_key::KeyTest, ssh_key::key_test;
    NetTcpCheck => "net/tcp-check", Read, Immediate, ops::TcpCheck, ops::tcp_check;
    SecurityExecPolicy => "security/exec-policy", Read, Immediate, docker::PolicyQuery, docker::exec_policy;
    AuditList => "audit/list", Admin, Immediate, jobs::AuditList, jobs::audit_list;
    JobGet => "job/get", Read, Immediate, jobs::JobRef, jobs::get;
    JobList => "job/list", Read, Immediate, jobs::ListFilter, jobs::list;
    JobCancel => "job/cancel", Write, Immediate, jobs::JobRef, jobs::cancel;
}

impl std::fmt::Display for CommandName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CommandName {
    /// Whether a result of this command is a backup: the metrics and summaries that
    /// judge a backup (skipped files make it `partial`) apply to it.
    pub fn is_backup(self) -> bool {
        self == CommandName::BackupRun
    }
}

impl Command {
    /// The role this request needs: the command's, raised by fields that need more
    /// (`repo/check` with `repair`).
    pub fn role(&self) -> Role {
        self.fields().role(self.name().role())
    }

    /// The repository a job of this command holds exclusively, if any.
    pub fn repository(&self) -> Option<&RepositoryLabel> {
        self.fields().repository()
    }
}
