//! Home Assistant button presses: already typed commands ([`Press`]) that skip the
//! envelope and token gates (the broker ACL guards their topic) and meet the rest of
//! the pipeline: rate limit, role, handler, metrics, audit.

use super::{gate, Seen, Service, Transport};
use crate::command::{ApiError, Command, ErrorCode, RepositoryLabel, Response};
use crate::commands::{Press, RequestSecrets};
use crate::domain::Role;
use crate::jobs::JobState;

impl Service {
    /// Answers a Home Assistant button press on `repository`, as the write role
    /// (the broker ACL guards the button topics), through the same rate limit,
    /// role check, handler, metrics and audit as [`Service::handle`]; the command
    /// is built typed ([`Press::command`]), never from JSON.
    pub async fn handle_press(&self, press: Press, repository: &str) -> Response {
        const ROLE: Role = Role::Write;
        let label = RepositoryLabel::parse(repository).ok();
        let seen = Seen {
            role: Some(ROLE),
            repository: label.as_ref().map(ToString::to_string),
        };
        let resp = match label {
            None => Response::error(
                None,
                ApiError::invalid(format!(
                    "{} is not a repository label",
                    crate::command::shorten(repository)
                )),
            ),
            Some(label) => {
                let active = [JobState::Running, JobState::Queued]
                    .into_iter()
                    .flat_map(|s| self.engine.list(Some(s), usize::MAX))
                    .find(|r| r.repository.as_deref() == Some(label.as_str()))
                    .map(|r| r.job_id);
                match press.command(label, active) {
                    Err(why) => Response::error(None, ApiError::new(ErrorCode::NotFound, why)),
                    Ok(cmd) => self.press(cmd, ROLE).await,
                }
            }
        };
        let command = press.name().as_str();
        self.account(Transport::Mqtt, Some("homeassistant"), command, seen, &resp);
        resp
    }

    /// The gates a press meets once it is a command: rate limit, role, handler.
    async fn press(&self, cmd: Command, role: Role) -> Response {
        let name = cmd.name();
        let principal = format!("mqtt:{}:homeassistant", role.as_str());
        if let Err(e) = self.rate_limit(name, &principal) {
            return Response::error(None, e);
        }
        if role < cmd.role() {
            return Response::error(None, gate::forbidden(name, cmd.role(), role));
        }
        self.execute(cmd, None, RequestSecrets::default(), None, role)
            .await
    }
}
