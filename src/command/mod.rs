//! The typed command model shared by every transport.
//!
//! A request becomes a [`Command`] here or an [`ApiError`]; nothing after this boundary
//! sees the raw JSON. Each variant's fields are already valid, so the service only has
//! to check what depends on state (the repository exists, it is not busy).

mod fields;
mod response;

use serde::Deserialize;
use serde_json::{Map, Value};

pub(crate) use fields::shorten;
pub use fields::{
    ArchiveName, ArchivePath, ContainerName, ExecArgv, FieldError, HostName, JobId, KeyName,
    RepositoryLabel, RequestId, SubPath,
};
pub use response::{ApiError, ErrorBody, ErrorCode, Response, Status};

use crate::auth::Role;
use crate::jobs::JobState;

/// Whether a command starts a job or answers at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Job,
    Immediate,
}

macro_rules! command_names {
    ($($variant:ident => $name:literal, $role:ident, $kind:ident, $implemented:literal;)*) => {
        /// Every command name of the v1 contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CommandName { $($variant,)* }

        impl CommandName {
            pub const ALL: &'static [CommandName] = &[$(CommandName::$variant,)*];

            /// `group/action`, as in the topic and the HTTP path.
            pub fn as_str(self) -> &'static str {
                match self { $(CommandName::$variant => $name,)* }
            }
            /// The least role allowed to run it.
            pub fn role(self) -> Role {
                match self { $(CommandName::$variant => Role::$role,)* }
            }
            pub fn kind(self) -> Kind {
                match self { $(CommandName::$variant => Kind::$kind,)* }
            }
            /// Whether this build can run it; the others answer `unavailable`.
            pub fn implemented(self) -> bool {
                match self { $(CommandName::$variant => $implemented,)* }
            }
            pub fn parse(s: &str) -> Option<CommandName> {
                match s { $($name => Some(CommandName::$variant),)* _ => None }
            }
        }
    };
}

command_names! {
    BackupRun => "backup/run", Write, Job, true;
    BackupVerify => "backup/verify", Write, Job, true;
    ArchiveList => "archive/list", Read, Job, true;
    ArchiveInfo => "archive/info", Read, Job, true;
    ArchiveExtract => "archive/extract", Write, Job, true;
    ArchiveMount => "archive/mount", Write, Job, true;
    ArchiveUmount => "archive/umount", Write, Job, true;
    RepoInfo => "repo/info", Read, Job, true;
    RepoCheck => "repo/check", Write, Job, true;
    RepoPrune => "repo/prune", Write, Job, true;
    RepoCompact => "repo/compact", Write, Job, true;
    RepoBreakLock => "repo/break-lock", Admin, Job, true;
    RepoLatestStats => "repo/latest-stats", Read, Job, true;
    RepoLockStatus => "repo/lock-status", Read, Immediate, true;
    ConfigList => "config/list", Read, Immediate, true;
    ConfigShow => "config/show", Read, Immediate, true;
    ConfigValidate => "config/validate", Read, Job, true;
    ConfigCheckAio => "config/check-aio", Read, Immediate, true;
    KeyChangePassphrase => "key/change-passphrase", Admin, Job, true;
    ContainerList => "container/list", Read, Immediate, true;
    ContainerExec => "container/exec", Write, Job, true;
    AioBackup => "aio/backup", Write, Job, true;
    AioHealthcheck => "aio/healthcheck", Read, Job, true;
    AioStart => "aio/start", Write, Job, true;
    AioStop => "aio/stop", Admin, Job, true;
    VolumeList => "volume/list", Read, Immediate, true;
    EmergencyStatus => "emergency/status", Read, Immediate, true;
    EmergencyStop => "emergency/stop", Admin, Job, true;
    SshKeyList => "ssh-key/list", Read, Immediate, true;
    SshKeyShow => "ssh-key/show", Read, Immediate, true;
    SshKeyCreate => "ssh-key/create", Admin, Immediate, true;
    SshKeyRotate => "ssh-key/rotate", Admin, Immediate, true;
    SshKeyDelete => "ssh-key/delete", Admin, Immediate, true;
    SshKeyTest => "ssh-key/test", Read, Job, true;
    NetTcpCheck => "net/tcp-check", Read, Immediate, true;
    SecurityExecPolicy => "security/exec-policy", Read, Immediate, true;
    AuditList => "audit/list", Admin, Immediate, true;
    JobGet => "job/get", Read, Immediate, true;
    JobList => "job/list", Read, Immediate, true;
    JobCancel => "job/cancel", Write, Immediate, true;
}

impl std::fmt::Display for CommandName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `backup/run`: borgmatic `create`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRun {
    pub repository: RepositoryLabel,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default = "yes")]
    pub stats: bool,
    #[serde(default = "yes")]
    pub progress: bool,
}

/// `backup/verify`: the restore drill.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupVerify {
    pub repository: RepositoryLabel,
    /// Default: the newest archive.
    #[serde(default)]
    pub archive: Option<ArchiveName>,
    /// Files to sample (1 to 10,000; default 50).
    #[serde(default)]
    pub sample: Option<u32>,
    /// Most bytes to extract (default 1 GiB).
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// `archive/list`: borgmatic `repo-list --json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveList {
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

/// `container/exec`: policy-checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerExec {
    pub container: ContainerName,
    pub command: ExecArgv,
    /// Names `[A-Za-z_][A-Za-z0-9_]*` (a `=` in a name would set another variable).
    #[serde(default, deserialize_with = "fields::exec_env")]
    pub env: std::collections::BTreeMap<String, String>,
}

/// `security/exec-policy`: the policy, or with `check` a dry run of one
/// `container/exec` (nothing runs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecPolicyQuery {
    #[serde(default)]
    pub check: Option<ContainerExec>,
}

/// `volume/list`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeList {
    #[serde(default)]
    pub sizes: bool,
}

/// `aio/backup`: AIO's `daily-backup.sh`. `check: true` alone runs AIO's backup
/// check instead of a backup; asking for both is refused, as AIO refuses it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AioBackup {
    #[serde(default)]
    pub backup: Option<bool>,
    #[serde(default)]
    pub check: bool,
    #[serde(default)]
    pub stop_containers: Option<bool>,
    #[serde(default)]
    pub start_containers: Option<bool>,
    #[serde(default)]
    pub automatic_updates: Option<bool>,
}

/// `emergency/stop` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyStop {
    #[serde(default)]
    pub restart_aio: bool,
}

/// `ssh-key/show`, `ssh-key/delete`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    pub name: KeyName,
}

/// `ssh-key/create`, `ssh-key/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCreate {
    pub name: KeyName,
    #[serde(default)]
    pub passphrase: Option<NewPassphrase>,
}

/// `ssh-key/test`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyTest {
    pub name: KeyName,
    pub host: HostName,
}

/// `net/tcp-check`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    pub host: HostName,
    pub port: u16,
}

/// `audit/list` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditList {
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `aio/start`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AioStart {
    #[serde(default)]
    pub automatic_updates: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    pub job_id: JobId,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobListFilter {
    #[serde(default)]
    pub state: Option<JobState>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `archive/info`: borgmatic `info --json` of one archive (default the latest).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveInfo {
    pub repository: RepositoryLabel,
    #[serde(default)]
    pub archive: Option<ArchiveName>,
}

/// `archive/extract`: into `<restore_root>/<destination>`, optionally only `paths`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveExtract {
    pub repository: RepositoryLabel,
    pub archive: ArchiveName,
    #[serde(default)]
    pub paths: Vec<ArchivePath>,
    pub destination: SubPath,
}

/// `archive/mount` and `archive/umount`: at `<mount_root>/<mount_point>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveMount {
    pub repository: RepositoryLabel,
    /// The whole repository when absent (mount only).
    #[serde(default)]
    pub archive: Option<ArchiveName>,
    pub mount_point: SubPath,
}

/// Commands on one repository with no other field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoOnly {
    pub repository: RepositoryLabel,
}

/// `repo/check`; `repair` needs the admin role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoCheck {
    pub repository: RepositoryLabel,
    #[serde(default)]
    pub repair: bool,
}

/// `repo/prune` and `repo/compact`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoDryRun {
    pub repository: RepositoryLabel,
    #[serde(default)]
    pub dry_run: bool,
}

/// Commands on one repository or, when absent, all of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionalRepo {
    #[serde(default)]
    pub repository: Option<RepositoryLabel>,
}

/// Commands without fields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// `key/change-passphrase` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyChangePassphrase {
    pub repository: RepositoryLabel,
    pub new_passphrase: NewPassphrase,
}

/// A new borg passphrase: 8 to 1024 characters, no control characters.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct NewPassphrase(crate::config::Secret);

impl NewPassphrase {
    pub fn secret(&self) -> &crate::config::Secret {
        &self.0
    }
}

impl std::fmt::Debug for NewPassphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassphrase([redacted])")
    }
}

impl TryFrom<String> for NewPassphrase {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        let n = s.chars().count();
        if !(8..=1024).contains(&n) || s.chars().any(|c| c.is_control()) {
            // Never echo the value.
            return Err(FieldError(
                "new_passphrase must be 8 to 1024 characters without control characters".into(),
            ));
        }
        Ok(Self(crate::config::Secret::new(s)))
    }
}

fn yes() -> bool {
    true
}

/// A request that has passed every check that needs no state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    BackupRun(BackupRun),
    BackupVerify(BackupVerify),
    ArchiveList(ArchiveList),
    ArchiveInfo(ArchiveInfo),
    ArchiveExtract(ArchiveExtract),
    ArchiveMount(ArchiveMount),
    ArchiveUmount(ArchiveMount),
    RepoInfo(RepoOnly),
    RepoCheck(RepoCheck),
    RepoPrune(RepoDryRun),
    RepoCompact(RepoDryRun),
    RepoBreakLock(RepoOnly),
    RepoLatestStats(RepoOnly),
    RepoLockStatus(OptionalRepo),
    ConfigList(NoFields),
    ConfigShow(RepoOnly),
    ConfigValidate(OptionalRepo),
    ConfigCheckAio(OptionalRepo),
    KeyChangePassphrase(KeyChangePassphrase),
    ContainerList(NoFields),
    VolumeList(VolumeList),
    ContainerExec(ContainerExec),
    AioBackup(AioBackup),
    AioHealthcheck(NoFields),
    AioStart(AioStart),
    AioStop(NoFields),
    SecurityExecPolicy(ExecPolicyQuery),
    AuditList(AuditList),
    EmergencyStatus(NoFields),
    EmergencyStop(EmergencyStop),
    SshKeyList(NoFields),
    SshKeyShow(KeyRef),
    SshKeyCreate(KeyCreate),
    SshKeyRotate(KeyCreate),
    SshKeyDelete(KeyRef),
    SshKeyTest(KeyTest),
    NetTcpCheck(TcpCheck),
    JobGet(JobRef),
    JobList(JobListFilter),
    JobCancel(JobRef),
}

impl Command {
    /// Builds the command named `name` from the request's own fields (the envelope
    /// fields already removed).
    pub fn parse(name: CommandName, fields: Map<String, Value>) -> Result<Command, ApiError> {
        let v = Value::Object(fields);
        Ok(match name {
            CommandName::BackupRun => Command::BackupRun(from(v)?),
            CommandName::BackupVerify => {
                let c: BackupVerify = from(v)?;
                if c.sample.is_some_and(|n| !(1..=10_000).contains(&n)) {
                    return Err(ApiError::invalid("sample must be 1 to 10000"));
                }
                if c.max_bytes == Some(0) {
                    return Err(ApiError::invalid("max_bytes must be at least 1"));
                }
                Command::BackupVerify(c)
            }
            CommandName::ArchiveList => Command::ArchiveList(from(v)?),
            CommandName::ArchiveInfo => Command::ArchiveInfo(from(v)?),
            CommandName::ArchiveExtract => Command::ArchiveExtract(from(v)?),
            CommandName::ArchiveMount => Command::ArchiveMount(from(v)?),
            CommandName::ArchiveUmount => Command::ArchiveUmount(from(v)?),
            CommandName::RepoInfo => Command::RepoInfo(from(v)?),
            CommandName::RepoCheck => Command::RepoCheck(from(v)?),
            CommandName::RepoPrune => Command::RepoPrune(from(v)?),
            CommandName::RepoCompact => Command::RepoCompact(from(v)?),
            CommandName::RepoBreakLock => Command::RepoBreakLock(from(v)?),
            CommandName::RepoLatestStats => Command::RepoLatestStats(from(v)?),
            CommandName::RepoLockStatus => Command::RepoLockStatus(from(v)?),
            CommandName::ConfigList => Command::ConfigList(from(v)?),
            CommandName::ConfigShow => Command::ConfigShow(from(v)?),
            CommandName::ConfigValidate => Command::ConfigValidate(from(v)?),
            CommandName::ConfigCheckAio => Command::ConfigCheckAio(from(v)?),
            CommandName::KeyChangePassphrase => Command::KeyChangePassphrase(from(v)?),
            CommandName::ContainerList => Command::ContainerList(from(v)?),
            CommandName::VolumeList => Command::VolumeList(from(v)?),
            CommandName::ContainerExec => Command::ContainerExec(from(v)?),
            CommandName::AioBackup => Command::AioBackup(from(v)?),
            CommandName::AioHealthcheck => Command::AioHealthcheck(from(v)?),
            CommandName::AioStart => Command::AioStart(from(v)?),
            CommandName::AioStop => Command::AioStop(from(v)?),
            CommandName::SecurityExecPolicy => Command::SecurityExecPolicy(from(v)?),
            CommandName::AuditList => Command::AuditList(from(v)?),
            CommandName::EmergencyStatus => Command::EmergencyStatus(from(v)?),
            CommandName::EmergencyStop => Command::EmergencyStop(from(v)?),
            CommandName::SshKeyList => Command::SshKeyList(from(v)?),
            CommandName::SshKeyShow => Command::SshKeyShow(from(v)?),
            CommandName::SshKeyCreate => Command::SshKeyCreate(from(v)?),
            CommandName::SshKeyRotate => Command::SshKeyRotate(from(v)?),
            CommandName::SshKeyDelete => Command::SshKeyDelete(from(v)?),
            CommandName::SshKeyTest => Command::SshKeyTest(from(v)?),
            CommandName::NetTcpCheck => Command::NetTcpCheck(from(v)?),
            CommandName::JobGet => Command::JobGet(from(v)?),
            CommandName::JobList => Command::JobList(from(v)?),
            CommandName::JobCancel => Command::JobCancel(from(v)?),
        })
    }

    pub fn name(&self) -> CommandName {
        match self {
            Command::BackupRun(_) => CommandName::BackupRun,
            Command::BackupVerify(_) => CommandName::BackupVerify,
            Command::ArchiveList(_) => CommandName::ArchiveList,
            Command::ArchiveInfo(_) => CommandName::ArchiveInfo,
            Command::ArchiveExtract(_) => CommandName::ArchiveExtract,
            Command::ArchiveMount(_) => CommandName::ArchiveMount,
            Command::ArchiveUmount(_) => CommandName::ArchiveUmount,
            Command::RepoInfo(_) => CommandName::RepoInfo,
            Command::RepoCheck(_) => CommandName::RepoCheck,
            Command::RepoPrune(_) => CommandName::RepoPrune,
            Command::RepoCompact(_) => CommandName::RepoCompact,
            Command::RepoBreakLock(_) => CommandName::RepoBreakLock,
            Command::RepoLatestStats(_) => CommandName::RepoLatestStats,
            Command::RepoLockStatus(_) => CommandName::RepoLockStatus,
            Command::ConfigList(_) => CommandName::ConfigList,
            Command::ConfigShow(_) => CommandName::ConfigShow,
            Command::ConfigValidate(_) => CommandName::ConfigValidate,
            Command::ConfigCheckAio(_) => CommandName::ConfigCheckAio,
            Command::KeyChangePassphrase(_) => CommandName::KeyChangePassphrase,
            Command::ContainerList(_) => CommandName::ContainerList,
            Command::VolumeList(_) => CommandName::VolumeList,
            Command::ContainerExec(_) => CommandName::ContainerExec,
            Command::AioBackup(_) => CommandName::AioBackup,
            Command::AioHealthcheck(_) => CommandName::AioHealthcheck,
            Command::AioStart(_) => CommandName::AioStart,
            Command::AioStop(_) => CommandName::AioStop,
            Command::SecurityExecPolicy(_) => CommandName::SecurityExecPolicy,
            Command::AuditList(_) => CommandName::AuditList,
            Command::EmergencyStatus(_) => CommandName::EmergencyStatus,
            Command::EmergencyStop(_) => CommandName::EmergencyStop,
            Command::SshKeyList(_) => CommandName::SshKeyList,
            Command::SshKeyShow(_) => CommandName::SshKeyShow,
            Command::SshKeyCreate(_) => CommandName::SshKeyCreate,
            Command::SshKeyRotate(_) => CommandName::SshKeyRotate,
            Command::SshKeyDelete(_) => CommandName::SshKeyDelete,
            Command::SshKeyTest(_) => CommandName::SshKeyTest,
            Command::NetTcpCheck(_) => CommandName::NetTcpCheck,
            Command::JobGet(_) => CommandName::JobGet,
            Command::JobList(_) => CommandName::JobList,
            Command::JobCancel(_) => CommandName::JobCancel,
        }
    }

    /// The role this request needs: the command's, raised by fields that need more
    /// (`repo/check` with `repair`).
    pub fn role(&self) -> Role {
        match self {
            Command::RepoCheck(c) if c.repair => Role::Admin,
            other => other.name().role(),
        }
    }

    /// The repository a job of this command holds exclusively, if any.
    pub fn repository(&self) -> Option<&RepositoryLabel> {
        match self {
            Command::BackupRun(c) => Some(&c.repository),
            Command::BackupVerify(c) => Some(&c.repository),
            Command::ArchiveList(c) => Some(&c.repository),
            Command::ArchiveInfo(c) => Some(&c.repository),
            Command::ArchiveExtract(c) => Some(&c.repository),
            Command::ArchiveMount(c) | Command::ArchiveUmount(c) => Some(&c.repository),
            Command::RepoInfo(c) | Command::RepoBreakLock(c) | Command::RepoLatestStats(c) => {
                Some(&c.repository)
            }
            Command::RepoCheck(c) => Some(&c.repository),
            Command::RepoPrune(c) | Command::RepoCompact(c) => Some(&c.repository),
            Command::KeyChangePassphrase(c) => Some(&c.repository),
            Command::ConfigShow(_)
            | Command::RepoLockStatus(_)
            | Command::ConfigList(_)
            | Command::ConfigValidate(_)
            | Command::ConfigCheckAio(_)
            | Command::ContainerList(_)
            | Command::VolumeList(_)
            | Command::ContainerExec(_)
            | Command::AioBackup(_)
            | Command::AioHealthcheck(_)
            | Command::AioStart(_)
            | Command::AioStop(_)
            | Command::SecurityExecPolicy(_)
            | Command::AuditList(_)
            | Command::EmergencyStatus(_)
            | Command::EmergencyStop(_)
            | Command::SshKeyList(_)
            | Command::SshKeyShow(_)
            | Command::SshKeyCreate(_)
            | Command::SshKeyRotate(_)
            | Command::SshKeyDelete(_)
            | Command::SshKeyTest(_)
            | Command::NetTcpCheck(_)
            | Command::JobGet(_)
            | Command::JobList(_)
            | Command::JobCancel(_) => None,
        }
    }
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::invalid(e.to_string()))
}

/// The envelope of a request: what every command shares, split from its own fields.
#[derive(Debug)]
pub struct Envelope {
    pub request_id: Option<RequestId>,
    pub token: Option<String>,
    /// Per-request secrets, honoured only with `auth.allow_request_secrets`.
    pub borg_passphrase: Option<crate::config::Secret>,
    pub ssh_passphrase: Option<crate::config::Secret>,
    pub fields: Map<String, Value>,
}

/// Bounds checked on a request's raw bytes before any JSON value is built, so an
/// unauthenticated client cannot make the worker allocate more than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_bytes: usize,
    pub max_depth: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        let s = crate::config::LimitSettings::default();
        Self {
            max_bytes: s.max_request_bytes,
            max_depth: s.max_request_depth,
        }
    }
}

impl RequestLimits {
    /// `Err` with a message when `body` is too large or nested too deeply.
    pub fn check(&self, body: &[u8]) -> Result<(), ApiError> {
        if body.len() > self.max_bytes {
            return Err(ApiError::invalid(format!(
                "the request is {} bytes; at most {} are accepted (limits.max_request_bytes)",
                body.len(),
                self.max_bytes
            )));
        }
        if nesting_exceeds(body, self.max_depth) {
            return Err(ApiError::invalid(format!(
                "the request nests arrays and objects deeper than {} levels (limits.max_request_depth)",
                self.max_depth
            )));
        }
        Ok(())
    }
}

/// Whether `[`/`{` nest deeper than `max` outside JSON strings. A linear scan
/// without allocation; malformed JSON is left to the parser.
fn nesting_exceeds(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl Envelope {
    /// Splits a JSON body. An empty body is an empty object (commands without fields).
    /// On error the request id is still returned when it could be read, so the answer
    /// can echo it. `limits` are checked on the raw bytes first: an oversize or deeply
    /// nested body is refused before anything is parsed.
    pub fn parse(
        body: &[u8],
        limits: &RequestLimits,
    ) -> Result<Envelope, (Option<RequestId>, ApiError)> {
        limits.check(body).map_err(|e| (None, e))?;
        let trimmed = body.iter().all(|b| b.is_ascii_whitespace());
        let value: Value = if trimmed {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(body)
                .map_err(|e| (None, ApiError::invalid(format!("malformed JSON: {e}"))))?
        };
        let Value::Object(mut fields) = value else {
            return Err((None, ApiError::invalid("the request must be a JSON object")));
        };
        let request_id = match fields.remove("request_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(RequestId::parse(&s).map_err(|e| (None, ApiError::invalid(e.0)))?)
            }
            Some(_) => {
                return Err((None, ApiError::invalid("request_id must be a string")));
            }
        };
        let token = match fields.remove("token") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                return Err((request_id, ApiError::invalid("token must be a string")));
            }
        };
        let mut secret = |name: &str| match fields.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && !s.chars().any(|c| c.is_control()) => {
                Ok(Some(crate::config::Secret::new(s)))
            }
            Some(_) => Err(ApiError::invalid(format!(
                "{name} must be a non-empty string without control characters"
            ))),
        };
        let borg_passphrase = secret("borg_passphrase").map_err(|e| (request_id.clone(), e))?;
        let ssh_passphrase = secret("ssh_passphrase").map_err(|e| (request_id.clone(), e))?;
        Ok(Envelope {
            request_id,
            token,
            borg_passphrase,
            ssh_passphrase,
            fields,
        })
    }
}

/// Checks a topic prefix: no wildcards, no empty levels, no leading `$`.
pub fn validate_topic_base(base: &str) -> Result<(), String> {
    if base.is_empty()
        || base.starts_with('$')
        || base.contains(['#', '+', '\0'])
        || base.split('/').any(|l| l.is_empty())
    {
        return Err(format!(
            "{base:?} is not a usable topic prefix (no wildcards, no empty levels, no leading $)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(name: &str, v: Value) -> Result<Command, ApiError> {
        let Value::Object(m) = v else { panic!() };
        Command::parse(CommandName::parse(name).unwrap(), m)
    }

    #[test]
    fn backup_run_defaults() {
        let c = parse("backup/run", json!({"repository": "nc"})).unwrap();
        assert_eq!(
            c,
            Command::BackupRun(BackupRun {
                repository: RepositoryLabel::parse("nc").unwrap(),
                dry_run: false,
                stats: true,
                progress: true
            })
        );
    }

    #[test]
    fn unknown_fields_wrong_types_and_traversal_are_invalid() {
        for (name, body) in [
            ("backup/run", json!({"repository": "nc", "extra": 1})),
            ("backup/run", json!({"repository": "nc", "dry_run": "yes"})),
            ("backup/run", json!({"repository": "../etc/passwd"})),
            ("backup/run", json!({"repository": "nc; rm -rf /"})),
            ("backup/run", json!({"repository": 7})),
            ("backup/run", json!({})),
            ("archive/list", json!({"repository": "nc", "last": -1})),
            ("job/get", json!({"job_id": "x"})),
            ("job/list", json!({"state": "bogus"})),
            (
                "archive/extract",
                json!({"repository": "nc", "archive": "a", "destination": "../x"}),
            ),
            (
                "archive/extract",
                json!({"repository": "nc", "archive": "a", "destination": "/etc"}),
            ),
            (
                "archive/extract",
                json!({"repository": "nc", "archive": "a", "destination": "x", "paths": ["../../etc"]}),
            ),
            (
                "archive/extract",
                json!({"repository": "nc", "archive": "--help", "destination": "x"}),
            ),
            (
                "archive/mount",
                json!({"repository": "nc", "mount_point": "a/../../b"}),
            ),
            ("repo/check", json!({"repository": "nc", "repair": "yes"})),
            (
                "key/change-passphrase",
                json!({"repository": "nc", "new_passphrase": "short"}),
            ),
            ("config/list", json!({"x": 1})),
            (
                "container/exec",
                json!({"container": "x", "command": "sh -c id"}),
            ),
            ("container/exec", json!({"container": "x", "command": []})),
            (
                "container/exec",
                json!({"container": "../x", "command": ["/a"]}),
            ),
            (
                "container/exec",
                json!({"container": "x", "command": ["/a"], "env": {"A": 1}}),
            ),
            ("aio/backup", json!({"check": "yes"})),
            ("ssh-key/show", json!({"name": "../id_rsa"})),
            ("backup/verify", json!({"repository": "nc", "sample": 0})),
            (
                "backup/verify",
                json!({"repository": "nc", "max_bytes": -1}),
            ),
            (
                "ssh-key/create",
                json!({"name": "k", "passphrase": "short"}),
            ),
            (
                "net/tcp-check",
                json!({"host": "-oProxyCommand=x", "port": 22}),
            ),
            ("net/tcp-check", json!({"host": "h", "port": 70000})),
            ("emergency/stop", json!({"restart_aio": "yes"})),
            (
                "archive/list",
                json!({"repository": "nc", "source": "elsewhere"}),
            ),
        ] {
            let err = parse(name, body.clone()).unwrap_err();
            assert_eq!(err.code, ErrorCode::Invalid, "{name} {body}");
        }
    }

    #[test]
    fn repair_needs_admin() {
        let c = parse("repo/check", json!({"repository": "nc", "repair": true})).unwrap();
        assert_eq!(c.role(), Role::Admin);
        let c = parse("repo/check", json!({"repository": "nc"})).unwrap();
        assert_eq!(c.role(), Role::Write);
    }

    #[test]
    fn a_refused_passphrase_is_not_echoed() {
        let err = parse(
            "key/change-passphrase",
            json!({"repository": "nc", "new_passphrase": "abc\u{1}def-secret"}),
        )
        .unwrap_err();
        assert!(!err.message.contains("def-secret"), "{}", err.message);
    }

    #[test]
    fn envelope_extracts_request_id_and_token() {
        let lim = RequestLimits::default();
        let e =
            Envelope::parse(br#"{"request_id":"a","token":"t","repository":"x"}"#, &lim).unwrap();
        assert_eq!(e.request_id.unwrap().as_str(), "a");
        assert_eq!(e.token.as_deref(), Some("t"));
        assert_eq!(e.fields.len(), 1);
        assert!(Envelope::parse(b"[1]", &lim).is_err());
        assert!(Envelope::parse(b"{", &lim).is_err());
        assert!(Envelope::parse(b"", &lim).unwrap().fields.is_empty());
        let (rid, err) = Envelope::parse(br#"{"request_id":"a","token":5}"#, &lim).unwrap_err();
        assert_eq!(rid.unwrap().as_str(), "a");
        assert_eq!(err.code, ErrorCode::Invalid);
    }

    #[test]
    fn oversize_and_deep_requests_are_refused_before_parsing() {
        let lim = RequestLimits {
            max_bytes: 1024,
            max_depth: 4,
        };
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(2000));
        let (_, e) = Envelope::parse(big.as_bytes(), &lim).unwrap_err();
        assert!(e.message.contains("at most 1024"), "{}", e.message);
        let (_, e) = Envelope::parse(b"[[[[[[1]]]]]]", &lim).unwrap_err();
        assert!(e.message.contains("deeper than 4"), "{}", e.message);
        // Unclosed brackets: refused on depth as soon as the fifth opens.
        assert!(Envelope::parse(&[b'['; 900], &lim).is_err());
        // Brackets inside strings (escaped quotes included) do not count.
        let ok = br#"{"a":{"b":{"c":"[[[[[[\"{{{{{{"}}}"#;
        assert!(Envelope::parse(ok, &lim).is_ok());
        assert!(Envelope::parse(br#"{"a":[[[1]]]}"#, &lim).is_ok());
        assert!(Envelope::parse(br#"{"a":[[[[1]]]]}"#, &lim).is_err());
    }

    #[test]
    fn every_name_round_trips() {
        for n in CommandName::ALL {
            assert_eq!(CommandName::parse(n.as_str()), Some(*n));
        }
        assert_eq!(CommandName::parse("backup/../run"), None);
    }

    #[test]
    fn topic_bases() {
        assert!(validate_topic_base("borgmatic/host").is_ok());
        for bad in ["", "a/#", "a/+/b", "$SYS/x", "a//b", "/a"] {
            assert!(validate_topic_base(bad).is_err(), "{bad}");
        }
    }
}
