//! Every topic of the contract, built and parsed here and nowhere else.
//!
//! Imports `command` (`JobId`) only.

use crate::command::JobId;

/// Longest `<group>/<action>` after `<base>/cmd/` that is answered. Longer (or with
/// other characters than `[A-Za-z0-9._/-]`) cannot name a command and gets no
/// response at all: echoing it into `response/<suffix>` could exceed what MQTT allows.
pub const MAX_COMMAND_SUFFIX: usize = 64;
/// Longest part after `<base>/response/` of a client's v5 Response Topic.
pub const MAX_RESPONSE_SUFFIX: usize = 256;
/// Where a command that is not in the contract is answered (`response/unknown`).
pub const UNKNOWN_COMMAND: &str = "unknown";
/// MQTT's limit on a topic name (a 16-bit length prefix).
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// Why a topic cannot be published to, if it cannot.
pub fn publishable(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        Err("is empty")
    } else if topic.len() > MAX_TOPIC_BYTES {
        Err("is longer than MQTT's 65,535 bytes")
    } else if topic.contains(['#', '+', '\0']) {
        Err("holds a wildcard or NUL")
    } else {
        Ok(())
    }
}

/// The topics under one base prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// The topics under `base` (validated by the settings; taken as is here).
    pub fn new(base: impl Into<String>) -> Self {
        Self { base: base.into() }
    }
    /// The base prefix itself.
    pub fn base(&self) -> &str {
        &self.base
    }
    /// Retained `online`/`offline`, also the Last Will.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    /// Retained: what the worker announces about itself ([`crate::service::Info`]).
    pub fn info(&self) -> String {
        format!("{}/info", self.base)
    }
    /// The subscription that receives every command.
    pub fn commands_filter(&self) -> String {
        format!("{}/cmd/#", self.base)
    }
    /// `<base>/cmd/<group>/<action>` → `group/action`; anything else is `None`,
    /// including suffixes that cannot name a command ([`MAX_COMMAND_SUFFIX`]).
    pub fn parse_command<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = self.command_suffix(topic)?;
        let usable = !rest.is_empty()
            && rest.len() <= MAX_COMMAND_SUFFIX
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
        usable.then_some(rest)
    }
    /// Whatever follows `<base>/cmd/`.
    pub fn command_suffix<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(&self.base)?.strip_prefix("/cmd/")
    }
    /// Where the answer to `command` goes (`<base>/response/<group>/<action>`).
    pub fn response(&self, command: &str) -> String {
        format!("{}/response/{command}", self.base)
    }
    /// Whether a client-chosen v5 Response Topic may be used: under
    /// `<base>/response/`, at most [`MAX_RESPONSE_SUFFIX`] bytes after it.
    pub fn response_topic_allowed(&self, topic: &str) -> bool {
        topic
            .strip_prefix(&self.base)
            .and_then(|r| r.strip_prefix("/response/"))
            .is_some_and(|r| {
                !r.is_empty() && r.len() <= MAX_RESPONSE_SUFFIX && !r.contains(['#', '+', '\0'])
            })
    }
    /// Retained: the job's record, cleared when the job is forgotten.
    pub fn job_state(&self, id: JobId) -> String {
        format!("{}/jobs/{id}/state", self.base)
    }
    /// The job's log lines, one message each.
    pub fn job_log(&self, id: JobId) -> String {
        format!("{}/jobs/{id}/log", self.base)
    }
    /// The job's final record plus its data, once.
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
    /// The subscription that receives every Home Assistant button press.
    pub fn ha_buttons_filter(&self) -> String {
        format!("{}/ha/+/+", self.base)
    }
    /// `<base>/ha/<repository>/<action>` → `(repository, action)`.
    pub fn parse_ha_button<'a>(&self, topic: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = topic.strip_prefix(&self.base)?.strip_prefix("/ha/")?;
        let (repo, action) = rest.split_once('/')?;
        (!repo.is_empty() && !action.contains('/')).then_some((repo, action))
    }
    /// Every job's record on every state change (one topic to follow all jobs).
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
        assert!(!t.response_topic_allowed("borgmatic/h/response/a\0b"));
        let long = format!(
            "borgmatic/h/response/{}",
            "x".repeat(MAX_RESPONSE_SUFFIX + 1)
        );
        assert!(!t.response_topic_allowed(&long));
    }

    #[test]
    fn command_suffixes_are_bounded() {
        let t = Topics::new("borgmatic/h");
        assert_eq!(t.parse_command("borgmatic/h/cmd/no/such"), Some("no/such"));
        let long = format!("borgmatic/h/cmd/{}", "a".repeat(MAX_COMMAND_SUFFIX + 1));
        assert_eq!(t.parse_command(&long), None);
        assert_eq!(t.parse_command("borgmatic/h/cmd/a b"), None);
        assert_eq!(t.parse_command("borgmatic/h/cmd/é/x"), None);
        assert!(publishable(&t.response(&"a".repeat(MAX_COMMAND_SUFFIX))).is_ok());
        assert!(publishable(&"a".repeat(MAX_TOPIC_BYTES + 1)).is_err());
        assert!(publishable("a/#").is_err());
        assert!(publishable("").is_err());
    }
}
