//! borgmatic configurations: `config/list`, `config/show`, `config/validate`,
//! `config/check-aio`.
//!
//! May import: `domain`, `borg_config`, `aio` (its checks), `exec::borgmatic`.

use std::time::Duration;

use serde_json::{json, Value};

use super::context::{load, Ctx, Outcome};
use super::fields::NoFields;
use super::repo::{OptionalRepo, RepoOnly};
use super::response::ApiError;
use super::CommandName;
use crate::borg_config::BorgmaticConfig;
use crate::domain::RepositoryLabel;
use crate::exec::borgmatic::{Action, JobSecrets};

pub(super) async fn list(ctx: &Ctx<'_>, _: NoFields) -> Result<Outcome, ApiError> {
    let mut configs = Vec::new();
    for label in ctx.borgmatic.labels() {
        let Ok(l) = RepositoryLabel::parse(&label) else {
            continue;
        };
        let Some(repo) = ctx.borgmatic.repository(&l) else {
            continue;
        };
        let entry = match BorgmaticConfig::load(&repo.config) {
            Ok(cfg) => json!({
                "repository": label,
                "file": repo.config,
                "repositories": cfg.repositories().iter().map(|r| json!({
                    "label": r.label,
                    "location": r.location.display(),
                })).collect::<Vec<_>>(),
            }),
            Err(e) => {
                json!({ "repository": label, "file": repo.config, "error": e.to_string() })
            }
        };
        configs.push(entry);
    }
    Ok(Outcome::Answer(json!({ "configs": configs })))
}

/// One configuration with every secret redacted.
pub(super) async fn show(ctx: &Ctx<'_>, c: RepoOnly) -> Result<Outcome, ApiError> {
    let repo = ctx.repository(&c.repository)?;
    let cfg = load(&repo)?;
    Ok(Outcome::Answer(json!({
        "repository": c.repository.as_str(),
        "file": repo.config,
        "config": cfg.redacted(),
    })))
}

/// borgmatic `config validate` of one configuration or of the whole directory.
pub(super) async fn validate(ctx: &Ctx<'_>, c: OptionalRepo) -> Result<Outcome, ApiError> {
    let task = match &c.repository {
        Some(label) => {
            let repo = ctx.repository(label)?;
            ctx.borgmatic
                .task(&repo, &JobSecrets::default(), Action::ValidateConfig)
        }
        None => ctx.borgmatic.validate_all(),
    };
    ctx.job(
        CommandName::ConfigValidate,
        None,
        vec![],
        Box::new(task),
        vec![],
    )
}

/// The Nextcloud AIO checks of each configuration.
pub(super) async fn check_aio(ctx: &Ctx<'_>, c: OptionalRepo) -> Result<Outcome, ApiError> {
    let mut out: Vec<Value> = Vec::new();
    for repo in ctx.labels_or_one(c.repository.as_ref())? {
        let cfg = load(&repo)?;
        let checks = crate::aio::check_config(&cfg, Duration::from_secs(3)).await;
        let passed = checks.iter().all(|c| c.passed != Some(false));
        out.push(json!({
            "repository": repo.label.as_str(),
            "passed": passed,
            "checks": checks,
        }));
    }
    Ok(Outcome::Answer(json!({ "repositories": out })))
}
