//! Every topic of the contract, built and parsed here and nowhere else.

use crate::command::JobId;

/// The topics under one base prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
}

impl Topics {
    pub fn new(base: impl Into<String>) -> Self {
        Self { base: base.into() }
    }
    pub fn base(&self) -> &str {
        &self.base
    }
    /// Retained `online`/`offline`, also the Last Will.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    pub fn info(&self) -> String {
        format!("{}/info", self.base)
    }
    /// The subscription that receives every command.
    pub fn commands_filter(&self) -> String {
        format!("{}/cmd/#", self.base)
    }
    /// `<base>/cmd/<group>/<action>` → `group/action`; anything else is `None`.
    pub fn parse_command<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/cmd/")?;
        (!rest.is_empty()).then_some(rest)
    }
    pub fn response(&self, command: &str) -> String {
        format!("{}/response/{command}", self.base)
    }
    /// Whether a client-chosen v5 Response Topic may be used.
    pub fn response_topic_allowed(&self, topic: &str) -> bool {
        topic
            .strip_prefix(&self.base)
            .and_then(|r| r.strip_prefix("/response/"))
            .is_some_and(|r| !r.is_empty() && !r.contains(['#', '+']))
    }
    pub fn job_state(&self, id: JobId) -> String {
        format!("{}/jobs/{id}/state", self.base)
    }
    pub fn job_log(&self, id: JobId) -> String {
        format!("{}/jobs/{id}/log", self.base)
    }
    pub fn job_result(&self, id: JobId) -> String {
        format!("{}/jobs/{id}/result", self.base)
    }
    /// Retained summary of a repository's last `backup` or `verify`.
    pub fn last(&self, repository: &str, kind: &str) -> String {
        format!("{}/last/{repository}/{kind}", self.base)
    }
    /// Retained `ON`/`OFF`: a job runs on the repository.
    pub fn running(&self, repository: &str) -> String {
        format!("{}/repos/{repository}/running", self.base)
    }
    /// Non-retained: one message per finished backup/verification or refused
    /// button press (Home Assistant's event entity).
    pub fn repo_event(&self, repository: &str) -> String {
        format!("{}/repos/{repository}/event", self.base)
    }
    /// Retained: how far the writing job on the repository got.
    pub fn repo_progress(&self, repository: &str) -> String {
        format!("{}/repos/{repository}/progress", self.base)
    }
    /// Retained: the repository's health, computed from its newest archive.
    pub fn repo_health(&self, repository: &str) -> String {
        format!("{}/repos/{repository}/health", self.base)
    }
    /// Where a Home Assistant button presses (`run` or `verify`).
    pub fn ha_button(&self, repository: &str, action: &str) -> String {
        format!("{}/ha/{repository}/{action}", self.base)
    }
    pub fn ha_buttons_filter(&self) -> String {
        format!("{}/ha/+/+", self.base)
    }
    /// `<base>/ha/<repository>/<action>` → `(repository, action)`.
    pub fn parse_ha_button<'a>(&self, topic: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/ha/")?;
        let (repo, action) = rest.split_once('/')?;
        (!repo.is_empty() && !action.contains('/')).then_some((repo, action))
    }
    pub fn events(&self) -> String {
        format!("{}/events", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_response_topics() {
        let t = Topics::new("borgmatic/h");
        assert_eq!(
            t.parse_command("borgmatic/h/cmd/backup/run"),
            Some("backup/run")
        );
        assert_eq!(t.parse_command("borgmatic/h/cmd/"), None);
        assert_eq!(t.parse_command("borgmatic/other/cmd/backup/run"), None);
        assert_eq!(t.parse_command("borgmatic/hx/cmd/backup/run"), None);
        assert!(t.response_topic_allowed("borgmatic/h/response/nodered/1"));
        assert!(!t.response_topic_allowed("borgmatic/h/status"));
        assert!(!t.response_topic_allowed("borgmatic/h/response/"));
        assert!(!t.response_topic_allowed("other/response/x"));
    }
}
