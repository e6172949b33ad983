//! The pipeline's gates before a command is parsed: retained, token, command
//! name, role, per-request secrets, rate limit; and the refusals they give.
//!
//! May import: `command`, `commands`, `domain`.

use serde_json::json;

use super::{Request, Service, DEDUP_WINDOW};
use crate::command::{ApiError, CommandName, ErrorCode};
use crate::commands::RequestSecrets;
use crate::domain::Role;

impl Service {
    /// The role of a token presented outside a command (HTTP job views), if it
    /// reaches `need`.
    pub fn authorize(&self, token: Option<&str>, need: Role) -> Result<Role, ApiError> {
        let token = token.ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing token: send Authorization: Bearer <token>",
            )
        })?;
        let role = self
            .tokens
            .authenticate(token)
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown token"))?;
        if role < need {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this needs the {} role; this token has the {} role",
                    need.as_str(),
                    role.as_str()
                ),
            ));
        }
        Ok(role)
    }

    /// Retained → token → command name → role. The role is recorded in `seen` as
    /// soon as it is known (the audit trail names it even for an unknown command).
    pub(super) fn admit(
        &self,
        req: &Request<'_>,
        body_token: Option<&str>,
        seen: &mut Option<Role>,
    ) -> Result<(CommandName, Role), ApiError> {
        if req.retained {
            return Err(ApiError::invalid(
                "retained requests are refused and never run; publish commands with retain=false",
            ));
        }
        let token = body_token.or(req.bearer);
        let trusted = req.trusted.filter(|_| token.is_none());
        let token = if trusted.is_some() { Some("") } else { token };
        let Some(token) = token else {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "missing token: put it in the `token` field or send `authorization: Bearer <token>`",
            ));
        };
        let Some(role) = trusted.or_else(|| self.tokens.authenticate(token)) else {
            return Err(ApiError::new(ErrorCode::Unauthorized, "unknown token"));
        };
        *seen = Some(role);
        let Some(name) = CommandName::parse(req.command) else {
            return Err(ApiError::invalid(format!(
                "unknown command {}",
                crate::command::shorten(req.command)
            )));
        };
        if name.role() == Role::Admin && !self.tokens.has_admin() {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("{name} needs the admin role, and admin commands are disabled: auth.admin_token is not configured"),
            ));
        }
        if role < name.role() {
            return Err(forbidden(name, name.role(), role));
        }
        Ok((name, role))
    }

    /// Per-request secrets only with `auth.allow_request_secrets`.
    pub(super) fn secrets_allowed(&self, secrets: &RequestSecrets) -> Result<(), ApiError> {
        if !secrets.is_empty() && !self.settings.auth.allow_request_secrets {
            return Err(ApiError::invalid(
                "borg_passphrase and ssh_passphrase in requests are disabled; set auth.allow_request_secrets = true to allow them",
            ));
        }
        Ok(())
    }

    /// The principal's quota for the command's class. A refusal is not remembered
    /// as the request's answer: a retry may succeed.
    pub(super) fn rate_limit(&self, name: CommandName, principal: &str) -> Result<(), ApiError> {
        let Err(wait) = self.limits.check(name.role(), principal) else {
            return Ok(());
        };
        let secs = wait.as_secs() + 1;
        Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "too many {} requests; retry in {secs}s",
                name.role().as_str()
            ),
        )
        .with_data(json!({ "retry_after_secs": secs })))
    }
}

/// A request id seen with another body within the window.
pub(super) fn reused(name: CommandName) -> ApiError {
    ApiError::invalid(format!(
        "request_id reused: {name} with this request_id had a different body in the last {} minutes; use a new request_id",
        DEDUP_WINDOW.as_secs() / 60
    ))
}

/// A request id whose answer was too large to keep.
pub(super) fn forgotten() -> ApiError {
    ApiError::invalid(
        "request_id reused: this request was answered already and its answer was too large to keep; use a new request_id",
    )
}

pub(super) fn forbidden(name: CommandName, needed: Role, has: Role) -> ApiError {
    if needed == Role::Admin && has < Role::Admin {
        return ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{name} with these fields needs the admin role; this token has the {} role",
                has.as_str()
            ),
        );
    }
    ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "{name} needs the {} role; this token has the {} role",
            needed.as_str(),
            has.as_str()
        ),
    )
}
