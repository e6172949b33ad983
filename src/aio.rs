//! Nextcloud All-in-One specifics: the conventions a borgmatic configuration must
//! follow so that AIO's own restore and retention see the archives it makes.
//!
//! Imports `borg_config` (reading a configuration) only.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::borg_config::{BorgmaticConfig, Location, RepositoryEntry};

/// The archive name format AIO's restore lists.
pub const ARCHIVE_NAME_FORMAT: &str = "{now:%Y%m%d_%H%M%S}-nextcloud-aio";
/// Limits prune and check to AIO's archives.
pub const MATCH_ARCHIVES: &str = "sh:*_*-nextcloud-aio";
/// The encryption AIO creates repositories with.
pub const ENCRYPTION: &str = "repokey-blake2";
/// AIO's default retention.
pub const RETENTION: [(&str, &str); 3] = [
    ("keep_within", "7d"),
    ("keep_weekly", "4"),
    ("keep_monthly", "6"),
];

/// One check: its verdict (`None` when it cannot be decided from here), what was
/// found, and how to fix it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What is checked: `archive_name_format`, `match_archives`, `encryption`,
    /// `retention` or `reachable`.
    pub name: &'static str,
    /// `true` passed, `false` failed, `None` undecided from here.
    pub passed: Option<bool>,
    /// What was found, in words.
    pub detail: String,
    /// How to fix a failed or undecided check; absent when it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &'static str, passed: Option<bool>, detail: String, fix: Option<String>) -> Check {
    let fix = if passed == Some(true) { None } else { fix };
    Check {
        name,
        passed,
        detail,
        fix,
    }
}

/// Checks one configuration; `reach_timeout` bounds the reachability probe.
pub async fn check_config(cfg: &BorgmaticConfig, reach_timeout: Duration) -> Vec<Check> {
    let mut out = Vec::new();
    let fmt = cfg.get_str("archive_name_format");
    out.push(check(
        "archive_name_format",
        Some(fmt == Some(ARCHIVE_NAME_FORMAT)),
        format!("is {}", fmt.map_or("unset".into(), |f| format!("{f:?}"))),
        Some(format!(
            "set archive_name_format: '{ARCHIVE_NAME_FORMAT}' (what AIO's restore lists)"
        )),
    ));
    let matching = cfg.get_str("match_archives");
    out.push(check(
        "match_archives",
        Some(matching == Some(MATCH_ARCHIVES)),
        format!(
            "is {}",
            matching.map_or("unset".into(), |f| format!("{f:?}"))
        ),
        Some(format!(
            "set match_archives: '{MATCH_ARCHIVES}' so prune and check touch only AIO's archives"
        )),
    ));
    let repos = cfg.repositories();
    out.push(encryption(&repos));
    out.push(retention(cfg));
    if repos.is_empty() {
        out.push(check(
            "reachable",
            Some(false),
            "no repositories configured".into(),
            Some("add a repositories: entry".into()),
        ));
    }
    for r in &repos {
        out.push(reachable(&r.location, reach_timeout).await);
    }
    out
}

/// The repositories' encryption mode, where the configuration states it.
fn encryption(repos: &[RepositoryEntry]) -> Check {
    let modes: Vec<String> = repos.iter().filter_map(|r| r.encryption.clone()).collect();
    if modes.is_empty() {
        check(
            "encryption",
            None,
            "not stated in the configuration (repo/info shows the repository's mode)".into(),
            Some(format!(
                "AIO creates {ENCRYPTION} repositories; state `encryption: {ENCRYPTION}`"
            )),
        )
    } else {
        check(
            "encryption",
            Some(modes.iter().all(|m| m == ENCRYPTION)),
            format!("is {}", modes.join(", ")),
            Some(format!(
                "AIO uses {ENCRYPTION}; a repository in another mode needs a new repository"
            )),
        )
    }
}

/// The retention, compared with AIO's default.
fn retention(cfg: &BorgmaticConfig) -> Check {
    let mut differences = Vec::new();
    for (key, want) in RETENTION {
        let got = cfg.doc.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        if got.as_deref() != Some(want) {
            differences.push(format!(
                "{key} is {} (AIO: {want})",
                got.unwrap_or_else(|| "unset".into())
            ));
        }
    }
    check(
        "retention",
        Some(differences.is_empty()),
        if differences.is_empty() {
            "matches AIO's default (keep_within 7d, keep_weekly 4, keep_monthly 6)".into()
        } else {
            differences.join("; ")
        },
        Some(
            "set keep_within: 7d, keep_weekly: 4, keep_monthly: 6, or keep yours knowingly".into(),
        ),
    )
}

async fn reachable(location: &Location, timeout: Duration) -> Check {
    match location {
        Location::Local(path) => {
            let ok = path.join("config").is_file();
            check(
                "reachable",
                Some(ok),
                if ok {
                    format!("{} is a borg repository", path.display())
                } else {
                    format!(
                        "{} is not a borg repository (no config file)",
                        path.display()
                    )
                },
                Some(
                    "mount the repository's volume, or create it with borgmatic repo-create".into(),
                ),
            )
        }
        Location::Ssh { host, port, .. } => {
            let target = format!("{host}:{port}");
            let result =
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&target)).await;
            let (ok, detail) = match result {
                Ok(Ok(_)) => (true, format!("{target} accepts connections")),
                Ok(Err(e)) => (false, format!("{target}: {e}")),
                Err(_) => (
                    false,
                    format!("{target}: no answer within {}s", timeout.as_secs()),
                ),
            };
            check(
                "reachable",
                Some(ok),
                detail,
                Some("check the host name, the port and the firewall".into()),
            )
        }
        Location::Other(s) => check(
            "reachable",
            None,
            format!("{s}: cannot be probed from here"),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> BorgmaticConfig {
        BorgmaticConfig {
            path: "x.yaml".into(),
            doc: serde_yaml_ng::from_str(yaml).unwrap(),
        }
    }

    #[tokio::test]
    async fn an_aio_config_passes_and_a_plain_one_says_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config"), "[repository]\n").unwrap();
        let good = cfg(&format!(
            "repositories:\n  - path: {}\n    encryption: repokey-blake2\n\
             archive_name_format: '{{now:%Y%m%d_%H%M%S}}-nextcloud-aio'\n\
             match_archives: 'sh:*_*-nextcloud-aio'\nkeep_within: 7d\nkeep_weekly: 4\nkeep_monthly: 6\n",
            dir.path().display()
        ));
        let checks = check_config(&good, Duration::from_secs(1)).await;
        assert!(checks.iter().all(|c| c.passed == Some(true)), "{checks:#?}");
        assert!(checks.iter().all(|c| c.fix.is_none()));

        let plain = cfg("repositories:\n  - path: /nonexistent/repo\nkeep_daily: 7\n");
        let checks = check_config(&plain, Duration::from_secs(1)).await;
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.passed == Some(false))
            .map(|c| c.name)
            .collect();
        assert_eq!(
            failed,
            [
                "archive_name_format",
                "match_archives",
                "retention",
                "reachable"
            ]
        );
        assert!(checks
            .iter()
            .filter(|c| c.passed == Some(false))
            .all(|c| c.fix.is_some()));
        let retention = checks.iter().find(|c| c.name == "retention").unwrap();
        assert!(retention.detail.contains("keep_within is unset (AIO: 7d)"));
    }
}
