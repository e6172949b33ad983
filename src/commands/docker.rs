//! Docker: `container/list`, `volume/list`, `container/exec` and
//! `security/exec-policy`. Every exec goes through the exec policy with the
//! caller's role; an exec in an AIO container excludes AIO backups and borgmatic
//! jobs on AIO repositories exactly as `aio/backup` does.
//!
//! May import: `domain`, `docker`, `exec` (`docker_exec`, the exec policy, `deny`).

use std::collections::BTreeMap;

use bollard::query_parameters::InspectContainerOptions;
use serde::Deserialize;
use serde_json::{json, Value};

use super::context::{Ctx, Outcome};
use super::fields::NoFields;
use super::response::{ApiError, ErrorCode};
use super::{CommandName, Fields};
use crate::docker::DockerError;
use crate::domain::{exec_env, ContainerName, ExecArgv, Role};
use crate::exec::deny;
use crate::exec::docker_exec::ExecTask;
use crate::exec::policy::{PolicyError, Rule};

/// `container/exec`: policy-checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    pub container: ContainerName,
    pub command: ExecArgv,
    /// Names `[A-Za-z_][A-Za-z0-9_]*` (a `=` in a name would set another variable).
    #[serde(default, deserialize_with = "exec_env")]
    pub env: BTreeMap<String, String>,
}

/// `security/exec-policy`: the policy, or with `check` a dry run of one
/// `container/exec` (nothing runs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyQuery {
    #[serde(default)]
    pub check: Option<Exec>,
}

/// `volume/list`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volumes {
    #[serde(default)]
    pub sizes: bool,
}

impl Fields for Exec {}
impl Fields for PolicyQuery {}
impl Fields for Volumes {}

/// The one mapping of a Docker engine failure to a wire error. The engine's own
/// text (socket paths, HTTP errors) is logged, not sent.
pub(super) fn docker_error(e: DockerError) -> ApiError {
    tracing::warn!(error = %e, "Docker engine request failed");
    match e {
        DockerError::Unavailable(_) => ApiError::new(
            ErrorCode::Unavailable,
            "the Docker engine is not available (see the worker's log)",
        ),
        DockerError::NoContainer(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
        DockerError::Other(_) => ApiError::new(
            ErrorCode::Internal,
            "the Docker engine refused the request (see the worker's log)",
        ),
    }
}

/// The role a command needs for an exec the policy allows by `rule`:
/// `container/exec` itself needs write, whatever the rule says.
pub(super) fn exec_role(name: CommandName, rule: &Rule) -> Role {
    if name == CommandName::ContainerExec {
        rule.role.max(Role::Write)
    } else {
        rule.role
    }
}

impl Ctx<'_> {
    /// `unavailable` unless `docker.enabled`.
    pub(super) fn docker_enabled(&self) -> Result<(), ApiError> {
        if self.settings.docker.enabled {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::Unavailable,
            "Docker commands are disabled (docker.enabled = false)",
        ))
    }

    /// Whether a container belongs to Nextcloud AIO (its name has the AIO prefix).
    pub(super) fn is_aio_container(&self, name: &str) -> bool {
        name.starts_with(&self.settings.docker.aio_prefix)
    }

    /// The policy's verdict on one exec with the caller's role: the rule, or a
    /// `forbidden` answer naming the rule and the role it needs.
    pub(super) fn allow_exec(
        &self,
        name: CommandName,
        container: &str,
        argv: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<&Rule, ApiError> {
        let rule = self
            .policy
            .decide(container, argv, env)
            .map_err(|e| ApiError::new(ErrorCode::Forbidden, e.to_string()))?;
        let need = exec_role(name, rule);
        if self.role < need {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "{name} of this command needs the {} role (exec policy rule {}); this token has the {} role",
                    need.as_str(),
                    rule.name,
                    self.role.as_str()
                ),
            )
            .with_data(json!({ "rule": rule.name, "role": need })));
        }
        Ok(rule)
    }

    /// The id of the container *named* `name`. Docker also accepts an id, an id
    /// prefix or an old name where a name goes; the policy matches names only, so
    /// anything but the container's own name is refused, and the exec then targets
    /// the id (a rename after this check cannot redirect it).
    async fn resolve_container(&self, name: &str) -> Result<String, ApiError> {
        let docker = self.docker.client().await.map_err(docker_error)?;
        let info = docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| docker_error(DockerError::from(e)))?;
        let canonical = info.name.as_deref().map(|n| n.trim_start_matches('/'));
        match (canonical, info.id) {
            (Some(n), Some(id)) if n == name => Ok(id),
            _ => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("{name} is not the name of a container (an id, a prefix of one or another spelling): exec policy rules match container names only"),
            )),
        }
    }
}

pub(super) async fn container_list(ctx: &Ctx<'_>, _: NoFields) -> Result<Outcome, ApiError> {
    ctx.docker_enabled()?;
    let list = ctx
        .docker
        .containers(&ctx.settings.docker.aio_prefix)
        .await
        .map_err(docker_error)?;
    Ok(Outcome::Answer(json!({ "containers": list })))
}

pub(super) async fn volume_list(ctx: &Ctx<'_>, v: Volumes) -> Result<Outcome, ApiError> {
    ctx.docker_enabled()?;
    let list = ctx
        .docker
        .volumes(&ctx.settings.docker.volume_prefix(), v.sizes)
        .await
        .map_err(docker_error)?;
    Ok(Outcome::Answer(json!({ "volumes": list })))
}

pub(super) async fn container_exec(ctx: &Ctx<'_>, c: Exec) -> Result<Outcome, ApiError> {
    ctx.docker_enabled()?;
    let name = CommandName::ContainerExec;
    let container = c.container.as_str().to_string();
    ctx.allow_exec(name, &container, c.command.as_slice(), &c.env)?;
    ctx.docker.ping().await.map_err(docker_error)?;
    let id = ctx.resolve_container(&container).await?;
    let mut locks = vec![format!("container:{container}")];
    if ctx.is_aio_container(&container) {
        // What aio/backup waits for, an exec in an AIO container waits for too.
        ctx.refuse_if_aio_busy().await?;
        locks.extend(ctx.aio_locks());
    }
    let task = ExecTask {
        engine: ctx.docker.clone(),
        container,
        target: id,
        argv: c.command.as_slice().to_vec(),
        env: c.env.into_iter().collect(),
        follow: None,
    };
    ctx.job(name, None, locks, Box::new(task), vec![])
}

/// The policy, or a dry run of one exec (works with `docker.enabled = false`).
pub(super) async fn exec_policy(ctx: &Ctx<'_>, q: PolicyQuery) -> Result<Outcome, ApiError> {
    Ok(Outcome::Answer(match q.check {
        None => policy_listing(ctx),
        Some(c) => exec_dry_run(ctx, &c),
    }))
}

/// `security/exec-policy` without `check`: every rule and the deny-list.
fn policy_listing(ctx: &Ctx<'_>) -> Value {
    let rules: Vec<Value> = ctx
        .policy
        .rules()
        .iter()
        .map(|r| {
            let mut v = json!(r);
            if let Some(hit) = deny::check(&r.argv) {
                v["never_matches"] = json!({ "deny": hit, "reason": hit.to_string() });
            }
            v
        })
        .collect();
    json!({
        "allow": rules,
        "deny": deny::listing(),
        "source": match ctx.policy.file() {
            Some(_) => "built-in rules and docker.exec_policy_file",
            None => "built-in rules",
        },
        "file": ctx.policy.file().map(|p| p.display().to_string()),
    })
}

/// `security/exec-policy` with `check`: what `container/exec` would decide,
/// without running anything or asking the engine.
fn exec_dry_run(ctx: &Ctx<'_>, c: &Exec) -> Value {
    let container = c.container.as_str();
    let role = ctx.role;
    match ctx.policy.decide(container, c.command.as_slice(), &c.env) {
        Ok(rule) => {
            let need = exec_role(CommandName::ContainerExec, rule);
            json!({
                "allowed": true,
                "rule": rule,
                "role": need,
                "caller_role": role,
                "caller_allowed": role >= need,
                "aio_exclusive": ctx.is_aio_container(container),
            })
        }
        Err(e) => {
            let mut v = json!({
                "allowed": false,
                "refused_by": e.kind(),
                "reason": e.to_string(),
                "caller_role": role,
                "caller_allowed": false,
            });
            if let PolicyError::Denied(hit) = &e {
                v["deny"] = json!(hit);
            }
            v
        }
    }
}
