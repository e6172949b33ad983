//! SSH keys for remote repositories: `ssh-key/list`, `ssh-key/show`,
//! `ssh-key/authorized-line`, `ssh-key/create`, `ssh-key/rotate`, `ssh-key/delete`
//! (admin) and `ssh-key/test`.
//!
//! May import: `domain`, `ssh_keys`, `askpass`, `borg_config` (`Location`), `exec`
//! (`ssh`, `process`), `jobs`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::context::{load, Ctx, Outcome};
use super::fields::NoFields;
use super::response::{ApiError, ErrorCode};
use super::{CommandName, Fields, Schema};
use crate::borg_config::Location;
use crate::domain::{HostName, JobState, KeyName, NewPassphrase, RepositoryLabel, RestrictPath};
use crate::jobs::{BoxFuture, Task, TaskContext, TaskOutcome};
use crate::ssh_keys::{KeyError, KeyStore};

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

/// `ssh-key/authorized-line`: a key's `authorized_keys` line forcing
/// `borg serve --restrict-to-path`, for `path` or the path of `repository`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizedLine {
    pub name: KeyName,
    /// The directory on the remote host the key is confined to.
    #[serde(default)]
    pub path: Option<RestrictPath>,
    /// Confine the key to the path of this repository's `ssh://` location instead.
    #[serde(default)]
    pub repository: Option<RepositoryLabel>,
    /// Add `--append-only`: the key can add archives but never delete any.
    #[serde(default)]
    pub append_only: bool,
}

impl Fields for AuthorizedLine {
    fn check(&self) -> Result<(), ApiError> {
        match (&self.path, &self.repository) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "give path or repository (whose ssh:// path is used), not both",
            )),
            (None, None) => Err(ApiError::invalid(
                "give path (an absolute directory on the remote host) or repository",
            )),
            _ => Ok(()),
        }
    }
    fn schema() -> Schema {
        Schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["name"],
            "properties": {
                "name": { "type": "string", "pattern": KeyName::PATTERN },
                "path": { "type": "string", "pattern": "^/[A-Za-z0-9/._+@:,=-]+$", "maxLength": 1024,
                          "description": "absolute directory on the remote host; or give repository" },
                "repository": { "type": "string", "pattern": RepositoryLabel::PATTERN,
                                "description": "use the path of this repository's ssh:// location" },
                "append_only": { "type": "boolean", "default": false }
            }
        }))
    }
}

impl Fields for KeyRef {}
impl Fields for KeyCreate {}
impl Fields for KeyTest {}

/// The one mapping of a key store failure; I/O causes are logged, not sent.
fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::NotFound(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
        KeyError::Exists(_) | KeyError::NotManaged(_) => ApiError::invalid(e.to_string()),
        KeyError::Io(_) => {
            tracing::warn!(error = %e, "SSH key store");
            ApiError::new(
                ErrorCode::Internal,
                "the SSH key directory could not be read or written (see the worker's log)",
            )
        }
    }
}

fn keys(ctx: &Ctx<'_>) -> KeyStore {
    KeyStore::new(&ctx.settings.ssh.key_dir)
}

pub async fn key_list(ctx: &Ctx<'_>, _: NoFields) -> Result<Outcome, ApiError> {
    let keys = keys(ctx).list().map_err(key_error)?;
    Ok(Outcome::Answer(
        json!({ "keys": keys, "key_dir": ctx.settings.ssh.key_dir }),
    ))
}

pub async fn key_show(ctx: &Ctx<'_>, k: KeyRef) -> Result<Outcome, ApiError> {
    let info = keys(ctx).show(&k.name).map_err(key_error)?;
    Ok(Outcome::Answer(json!(info)))
}

pub async fn key_authorized_line(ctx: &Ctx<'_>, a: AuthorizedLine) -> Result<Outcome, ApiError> {
    let path = match (a.path, &a.repository) {
        (Some(p), _) => p,
        (None, Some(label)) => configured_path(ctx, label)?,
        (None, None) => return Err(ApiError::invalid("give path or repository")),
    };
    let store = keys(ctx);
    let line = store
        .authorized_line(&a.name, &path, a.append_only)
        .map_err(key_error)?;
    let info = store.show(&a.name).map_err(key_error)?;
    Ok(Outcome::Answer(json!({
        "name": a.name.as_str(),
        "fingerprint": info.fingerprint,
        "path": path.as_str(),
        "append_only": a.append_only,
        "line": line,
    })))
}

/// The path of the one SSH location of `label`'s configuration, checked as a
/// client's `path` would be.
fn configured_path(ctx: &Ctx<'_>, label: &RepositoryLabel) -> Result<RestrictPath, ApiError> {
    let cfg = load(&ctx.repository(label)?)?;
    let paths: Vec<String> = cfg
        .repositories()
        .into_iter()
        .filter_map(|r| match r.location {
            Location::Ssh { path, .. } => Some(path),
            _ => None,
        })
        .collect();
    match paths.as_slice() {
        [one] => RestrictPath::parse(one).map_err(|e| {
            ApiError::invalid(format!(
                "the ssh:// path of repository {label} cannot be used: {}; give path",
                e.0
            ))
        }),
        [] => Err(ApiError::invalid(format!(
            "repository {label} has no ssh:// repository; give path"
        ))),
        _ => Err(ApiError::invalid(format!(
            "repository {label} has {} ssh:// repositories; give path",
            paths.len()
        ))),
    }
}

pub async fn key_create(ctx: &Ctx<'_>, k: KeyCreate) -> Result<Outcome, ApiError> {
    create_or_rotate(ctx, k, false)
}

pub async fn key_rotate(ctx: &Ctx<'_>, k: KeyCreate) -> Result<Outcome, ApiError> {
    create_or_rotate(ctx, k, true)
}

fn create_or_rotate(ctx: &Ctx<'_>, k: KeyCreate, rotate: bool) -> Result<Outcome, ApiError> {
    let passphrase = k.passphrase.as_ref().map(|p| p.secret().clone());
    if let Some(p) = &passphrase {
        let borg = ctx.settings.repositories.values();
        if borg
            .filter_map(|r| r.passphrase.as_ref())
            .any(|b| b.expose() == p.expose())
        {
            return Err(ApiError::invalid(
                "the key passphrase equals a borg passphrase; use distinct secrets",
            ));
        }
    }
    let comment = format!("borgmatic-mqtt@{}", ctx.settings.node_id());
    let store = keys(ctx);
    let info = if rotate {
        store.rotate(&k.name, passphrase.as_ref(), &comment)
    } else {
        store.create(&k.name, passphrase.as_ref(), &comment)
    }
    .map_err(key_error)?;
    Ok(Outcome::Answer(json!(info)))
}

pub async fn key_delete(ctx: &Ctx<'_>, k: KeyRef) -> Result<Outcome, ApiError> {
    keys(ctx).delete(&k.name).map_err(key_error)?;
    Ok(Outcome::Answer(json!({ "deleted": k.name.as_str() })))
}

/// Authenticates with a configured repository host (never any other host).
pub async fn key_test(ctx: &Ctx<'_>, t: KeyTest) -> Result<Outcome, ApiError> {
    let host = t.host;
    let endpoint = ctx
        .endpoints()
        .into_iter()
        .find(|e| e.host == host.as_str())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "{} is not the host of any repository in the configurations",
                    host.as_str()
                ),
            )
        })?;
    let store = keys(ctx);
    let key = store.private_path(&t.name).map_err(key_error)?;
    let encrypted = store.show(&t.name).map(|k| k.encrypted).unwrap_or(false);
    let passphrase = ctx.secrets.ssh.clone().or_else(|| {
        ctx.settings
            .ssh_passphrase_for(&endpoint.repository)
            .cloned()
    });
    // The one ssh argv builder checks user, host and paths as ssh gets them.
    let unusable = |e: crate::exec::ssh::SshArgError| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("{e} (check the configuration)"),
        )
    };
    let destination =
        crate::exec::ssh::SshDestination::new(endpoint.user.as_deref(), &endpoint.host)
            .map_err(unusable)?;
    let absolute = |p: std::path::PathBuf| std::path::absolute(&p).unwrap_or(p);
    let askpass = matches!((&passphrase, encrypted), (Some(_), true));
    let key = absolute(key);
    let known_hosts = absolute(ctx.settings.ssh.key_dir.join("known_hosts"));
    let probe =
        crate::exec::ssh::SshProbe::new(&key, endpoint.port, &known_hosts, destination, askpass)
            .map_err(unusable)?;
    let mut env = Vec::new();
    if let (Some(p), true) = (&passphrase, askpass) {
        env.extend(crate::askpass::env(p, std::slice::from_ref(&key)));
    }
    let spec = crate::exec::process::ProcessSpec {
        program: "ssh".into(),
        args: probe.argv(),
        env,
        capture_stdout: false,
        kill_grace: Duration::from_secs(5),
    };
    let scrub = passphrase.iter().map(|p| p.expose().to_string()).collect();
    let task = SshTest {
        spec,
        host: host.as_str().to_string(),
        port: endpoint.port,
    };
    ctx.job(CommandName::SshKeyTest, None, vec![], Box::new(task), scrub)
}

/// `ssh-key/test`: ssh's exit code 255 means it could not connect or authenticate.
struct SshTest {
    spec: crate::exec::process::ProcessSpec,
    host: String,
    port: u16,
}

impl Task for SshTest {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            let on_line = |s, l: &str| ctx.line(s, l);
            let out =
                match crate::exec::process::run(&self.spec, &ctx.cancel, &ctx.pace(), &on_line)
                    .await
                {
                    Ok(out) => out,
                    Err(e) => return TaskOutcome::failed(e.to_string()),
                };
            let ok = out.exit_code != 255;
            TaskOutcome {
                state: if ok {
                    JobState::Succeeded
                } else {
                    JobState::Failed
                },
                exit_code: Some(out.exit_code),
                data: Some(json!({ "host": self.host, "port": self.port, "authenticated": ok })),
                error: (!ok).then(|| {
                    format!(
                        "ssh could not connect to or authenticate with {}:{} (see the log)",
                        self.host, self.port
                    )
                }),
            }
        })
    }
}
