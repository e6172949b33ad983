//! Start-up guards: [`Settings::problems`] names everything wrong with a
//! configuration that can be seen without running anything, each as a [`Problem`]
//! (the key, what is wrong, how to fix it).
//!
//! May import the `domain` rules it checks against (labels, the topic base); nothing
//! that runs (the exec policy file is checked at preflight, not here).

use std::fmt;

use super::{Settings, MIN_TOKEN_LEN};

/// One thing wrong with the configuration: the key, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key (`auth.read_token`), or the section, that is wrong.
    pub key: String,
    /// What is wrong and how to fix it; never quotes a secret value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

pub(super) fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

impl Settings {
    /// Checks everything that can be checked without running anything.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.token_problems(&mut problems);
        self.path_problems(&mut problems);
        self.http_problems(&mut problems);
        self.bound_problems(&mut problems);
        self.repository_problems(&mut problems);
        self.tls_problems(&mut problems);
        problems
    }

    /// Tokens: set where required, long enough, one per role.
    fn token_problems(&self, problems: &mut Vec<Problem>) {
        let tokens = [
            ("auth.read_token", self.auth.read_token.as_ref(), true),
            ("auth.write_token", self.auth.write_token.as_ref(), true),
            ("auth.admin_token", self.auth.admin_token.as_ref(), false),
        ];
        for (key, value, required) in tokens {
            match value {
                None if required => problems.push(problem(
                    key,
                    format!(
                        "missing; set it (at least {MIN_TOKEN_LEN} random characters, e.g. `openssl rand -hex 24`) \
                         in the config file, as BMQTT_{} or through BMQTT_{}_FILE",
                        env_name(key),
                        env_name(key)
                    ),
                )),
                None => {}
                Some(s) if s.is_empty() => problems.push(problem(
                    key,
                    "is empty; set a random value of at least 24 characters or remove the key",
                )),
                Some(s) if s.expose().chars().count() < MIN_TOKEN_LEN => problems.push(problem(
                    key,
                    format!(
                        "is shorter than {MIN_TOKEN_LEN} characters; use a longer random value (`openssl rand -hex 24`)"
                    ),
                )),
                Some(_) => {}
            }
        }
        for (i, (ka, a, _)) in tokens.iter().enumerate() {
            for (kb, b, _) in tokens.iter().skip(i + 1) {
                if let (Some(a), Some(b)) = (a, b) {
                    if !a.is_empty() && a == b {
                        problems.push(problem(
                            *kb,
                            format!("equals {ka}; every role needs its own token"),
                        ));
                    }
                }
            }
        }
    }

    /// The borgmatic configuration directory, the topic base and the exec policy file.
    fn path_problems(&self, problems: &mut Vec<Problem>) {
        if !self.borgmatic.config_dir.is_dir() {
            problems.push(problem(
                "borgmatic.config_dir",
                format!(
                    "{} is not a directory; create it and put one borgmatic configuration per repository in it (<label>.yaml)",
                    self.borgmatic.config_dir.display()
                ),
            ));
        }
        if let Err(reason) = crate::domain::validate_topic_base(&self.base_topic()) {
            problems.push(problem("mqtt.base_topic", reason));
        }
    }

    /// The HTTP sidecar's address and connection bounds.
    fn http_problems(&self, problems: &mut Vec<Problem>) {
        if self.http.listen != "off" && self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(problem(
                "http.listen",
                format!(
                    "{:?} is not host:port (e.g. 127.0.0.1:8484) or off",
                    self.http.listen
                ),
            ));
        }
        if self.http.max_connections == 0 {
            problems.push(problem("http.max_connections", "must be at least 1"));
        }
        if self.http.header_read_timeout_secs == 0 {
            problems.push(problem(
                "http.header_read_timeout_secs",
                "must be at least 1",
            ));
        }
    }

    /// Size, count and time bounds that must be at least (or at most) something.
    fn bound_problems(&self, problems: &mut Vec<Problem>) {
        if self.audit.max_bytes < 4096 {
            problems.push(problem("audit.max_bytes", "must be at least 4096"));
        }
        if self.audit.refusal_window_secs == 0 {
            problems.push(problem("audit.refusal_window_secs", "must be at least 1"));
        }
        if let Some(id) = &self.mqtt.client_id {
            if id.len() < 16 || id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic()) {
                problems.push(problem(
                    "mqtt.client_id",
                    "must be 16 to 128 printable ASCII characters; leave it unset for a random one",
                ));
            }
        }
        if self.jobs.max_concurrent == 0 {
            problems.push(problem("jobs.max_concurrent", "must be at least 1"));
        }
        if self.limits.max_request_bytes < 1024 || self.limits.max_request_bytes > 16 << 20 {
            problems.push(problem(
                "limits.max_request_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if !(2..=128).contains(&self.limits.max_request_depth) {
            problems.push(problem(
                "limits.max_request_depth",
                "must be between 2 and 128",
            ));
        }
        if self.limits.max_in_flight == 0 {
            problems.push(problem("limits.max_in_flight", "must be at least 1"));
        }
        if self.jobs.log_qos > 1 {
            problems.push(problem("jobs.log_qos", "must be 0 or 1"));
        }
    }

    /// Per-repository settings: valid labels, distinct secrets.
    fn repository_problems(&self, problems: &mut Vec<Problem>) {
        for (label, repo) in &self.repositories {
            if let (Some(borg), Some(ssh)) = (&repo.passphrase, &repo.ssh_passphrase) {
                if borg == ssh && !borg.is_empty() {
                    problems.push(problem(
                        format!("repositories.{label}.ssh_passphrase"),
                        "equals the repository's borg passphrase; use distinct secrets so one leak does not give away both",
                    ));
                }
            }
            if crate::domain::RepositoryLabel::parse(label).is_err() {
                problems.push(problem(
                    format!("repositories.{label}"),
                    "is not a valid repository label ([A-Za-z0-9._-], 1 to 64 characters)",
                ));
            }
        }
    }

    /// The broker TLS files, when TLS is on.
    fn tls_problems(&self, problems: &mut Vec<Problem>) {
        if self.mqtt.tls {
            for (key, file) in [
                ("mqtt.ca_file", &self.mqtt.ca_file),
                ("mqtt.client_cert_file", &self.mqtt.client_cert_file),
                ("mqtt.client_key_file", &self.mqtt.client_key_file),
            ] {
                if let Some(f) = file {
                    if !f.is_file() {
                        problems.push(problem(key, format!("{} does not exist", f.display())));
                    }
                }
            }
            if self.mqtt.ca_file.is_none() {
                problems.push(problem(
                    "mqtt.ca_file",
                    "TLS needs the CA certificate that signed the broker's certificate",
                ));
            }
            if self.mqtt.client_cert_file.is_some() != self.mqtt.client_key_file.is_some() {
                problems.push(problem(
                    "mqtt.client_key_file",
                    "a client certificate needs its key and the other way round",
                ));
            }
        }
    }
}

fn env_name(key: &str) -> String {
    key.replace('.', "__").to_uppercase()
}
