//! Judging a finished borgmatic run: its exit code, borgmatic's warning verdict,
//! the files borg skipped, and the JSON it printed, into the job's [`TaskOutcome`].
//! Pure functions of what the run left behind ([`RunResult`]); nothing runs here.
//!
//! May import: `jobs` (`TaskOutcome`), the sibling `skipped`.

use serde_json::{json, Value};

use crate::exec::skipped::Skipped;
use crate::jobs::{JobState, TaskOutcome};

/// How to read a borgmatic run's stdout.
#[derive(Debug, Clone)]
pub(super) enum Output {
    Create {
        dry_run: bool,
    },
    RepoList,
    /// The first JSON value, per repository.
    Json,
    /// The newest archive of `info --json --last 1` (none: the job fails, as
    /// `--archive latest` does).
    LatestStats,
    /// No parsed output; this summary is the result data.
    Static(Value),
}

impl Output {
    pub(super) fn captures_stdout(&self) -> bool {
        matches!(
            self,
            Output::Create { .. } | Output::RepoList | Output::Json | Output::LatestStats
        )
    }
}

/// What one borgmatic run left behind, before it is judged.
pub struct RunResult {
    /// borgmatic's exit code (`128 + signal` when a signal ended it).
    pub exit_code: i32,
    /// Standard output, when the action captures it (JSON actions); else empty.
    pub stdout: Vec<u8>,
    /// borgmatic treated borg's exit code as a warning.
    pub warned: bool,
    /// The first line that names an error.
    pub first_error: Option<String>,
    /// borg met a lock held by another process.
    pub lock_held: bool,
    /// Files a `create` left out (empty for other actions).
    pub skipped: Skipped,
}

impl RunResult {
    /// Why a failed run failed, in words.
    pub fn failure(&self) -> String {
        if self.lock_held {
            "the repository is locked by another borg process; repo/lock-status names the holder, repo/break-lock (admin) removes a stale lock".into()
        } else {
            let detail = self
                .first_error
                .as_ref()
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            format!("borgmatic exited with code {}{detail}", self.exit_code)
        }
    }
}

/// The job's state from borgmatic's exit code and warnings, and from what borg
/// left out: a backup that skipped files is a `warning` with the reason, never a
/// success, whatever exit code borgmatic chose.
pub(super) fn judge(output: &Output, run: &RunResult, mut data: Option<Value>) -> TaskOutcome {
    let mut reason = None;
    if matches!(output, Output::Create { .. }) {
        let archive = data
            .as_ref()
            .and_then(|d| d.get("archive"))
            .and_then(Value::as_str)
            .map(str::to_string);
        reason = run.skipped.reason(archive.as_deref());
        if let Some(Value::Object(d)) = &mut data {
            d.extend(run.skipped.fields());
            if let Some(r) = &reason {
                d.insert("reason".into(), json!(r));
            }
        }
    }
    let no_archive = matches!(output, Output::LatestStats)
        && data
            .as_ref()
            .is_none_or(|d| d.get("archive").is_none_or(Value::is_null));
    let (state, error) = if run.exit_code != 0 {
        (JobState::Failed, Some(run.failure()))
    } else if no_archive {
        (
            JobState::Failed,
            Some("no archives found in the repository".to_string()),
        )
    } else if reason.is_some() || run.warned {
        (JobState::Warning, reason)
    } else {
        (JobState::Succeeded, None)
    };
    TaskOutcome {
        state,
        exit_code: Some(run.exit_code),
        data,
        error,
    }
}

/// borgmatic's verdict that borg ended with a warning.
pub(super) fn is_warning(line: &str) -> bool {
    // borgmatic's own verdict on borg's exit code. borg's WARNING records alone are
    // not enough: ssh chatter ("Permanently added … to known hosts") arrives as one
    // on a perfectly good backup.
    let lower = line.to_ascii_lowercase();
    lower.contains("treating exit code") && lower.contains("as a warning")
}

/// The first line that names the error, skipping borgmatic's generic frame.
pub(super) fn is_error_summary(line: &str) -> bool {
    let l = line.trim();
    !(l.is_empty()
        || l.ends_with("Error running actions for repository")
        || l.ends_with("Error running configuration")
        || l.ends_with("An error occurred")
        || l == "summary:"
        || l.starts_with("Need some help?"))
}

/// The first JSON value on stdout (borgmatic may append text after it).
pub fn first_json(stdout: &[u8]) -> Option<Value> {
    let start = stdout.iter().position(|b| *b == b'[' || *b == b'{')?;
    serde_json::Deserializer::from_slice(&stdout[start..])
        .into_iter::<Value>()
        .next()?
        .ok()
}

/// Borgmatic's generic frame lines are not the error; neither are progress lines.
pub(super) fn looks_like_error(text: &str) -> bool {
    !(text.starts_with("Initializing cache")
        || text.starts_with("Saving ")
        || text.ends_with(" N "))
}

pub(super) fn parse_output(output: &Output, stdout: &[u8]) -> Option<Value> {
    let json = first_json(stdout);
    match output {
        Output::Static(v) => Some(v.clone()),
        Output::Json => {
            let runs = json?.as_array().cloned().unwrap_or_default();
            match runs.len() {
                1 => runs.into_iter().next(),
                _ => Some(json!({ "repositories": runs })),
            }
        }
        Output::LatestStats => {
            let first = json?.as_array()?.first()?.clone();
            Some(json!({
                "archive": first.pointer("/archives/0").cloned().unwrap_or(Value::Null),
                "repository": first.get("repository").cloned().unwrap_or(Value::Null),
                "cache": first.get("cache").cloned().unwrap_or(Value::Null),
            }))
        }
        &Output::Create { dry_run } => Some(create_result(json, dry_run)),
        Output::RepoList => json.map(repo_list_result),
    }
}

/// A backup's result: its archive, stats and duration, per repository and of the
/// first (borgmatic 2 runs one configuration per job).
fn create_result(json: Option<Value>, dry_run: bool) -> Value {
    // With `--progress` and a database hook, borgmatic lets borg's own
    // output through: one object, not borgmatic's list of them, naming the
    // archive as borg made it, `<name>.checkpoint`, which borgmatic renames
    // to `<name>` once every dump is in.
    let runs = match json {
        Some(Value::Array(runs)) => runs,
        Some(mut run @ Value::Object(_)) => {
            if let Some(name) = run.pointer_mut("/archive/name") {
                if let Some(n) = name.as_str().and_then(|n| n.strip_suffix(".checkpoint")) {
                    *name = json!(n);
                }
            }
            vec![run]
        }
        _ => Vec::new(),
    };
    let repositories: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "repository": r.pointer("/repository/label")
                    .filter(|l| l.as_str().is_some_and(|s| !s.is_empty()))
                    .or_else(|| r.pointer("/repository/location"))
                    .cloned()
                    .unwrap_or(Value::Null),
                "archive": r.pointer("/archive/name").cloned().unwrap_or(Value::Null),
                "stats": r.pointer("/archive/stats").cloned().unwrap_or(Value::Null),
                "duration": r.pointer("/archive/duration").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    let first = repositories.first().cloned().unwrap_or(json!({}));
    json!({
        "dry_run": dry_run,
        "archive": first.get("archive").cloned().unwrap_or(Value::Null),
        "stats": first.get("stats").cloned().unwrap_or(Value::Null),
        "duration": first.get("duration").cloned().unwrap_or(Value::Null),
        "repositories": repositories,
    })
}

/// `repo-list --json` of every repository, flattened into one archive list.
fn repo_list_result(json: Value) -> Value {
    let runs = json.as_array().cloned().unwrap_or_default();
    let mut archives = Vec::new();
    let mut repositories = Vec::new();
    for r in &runs {
        let repo = r.get("repository").cloned().unwrap_or(Value::Null);
        let location = repo.get("location").cloned().unwrap_or(Value::Null);
        for a in r
            .get("archives")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            archives.push(json!({
                "name": a.get("name").or_else(|| a.get("archive")).cloned().unwrap_or(Value::Null),
                "id": a.get("id").cloned().unwrap_or(Value::Null),
                "time": a.get("time").or_else(|| a.get("start")).cloned().unwrap_or(Value::Null),
                "repository": location,
            }));
        }
        repositories.push(json!({
            "repository": repo,
            "encryption": r.get("encryption").cloned().unwrap_or(Value::Null),
        }));
    }
    json!({ "archives": archives, "repositories": repositories })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::skipped;

    #[test]
    fn warnings() {
        assert!(is_warning(
            "local: Treating exit code 1 (warning) as a warning, as per borgmatic defaults"
        ));
        assert!(is_warning(
            "Treating exit code 107 (file changed) as a warning, as per configuration"
        ));
        assert!(!is_warning(
            "Remote: Warning: Permanently added '[127.0.0.1]:2222' to known hosts"
        ));
        assert!(!is_warning("Saving files cache"));
        assert!(!is_warning("no warnings were found: all good"));
    }

    fn run_with(exit_code: i32, warned: bool, lines: &[&str]) -> RunResult {
        let mut skipped = Skipped::default();
        for l in lines {
            if let Some(i) = skipped::classify(l, true) {
                skipped.add(i);
            }
        }
        RunResult {
            exit_code,
            stdout:
                br#"[{"archive": {"name": "nas-1", "stats": {}}, "repository": {"label": "nas"}}]"#
                    .to_vec(),
            warned,
            first_error: None,
            lock_held: false,
            skipped,
        }
    }

    #[test]
    fn a_backup_that_skipped_files_is_never_a_success() {
        let denied = r#"{"type": "log_message", "message": "/s/f: open: [Errno 13] Permission denied: 'f'", "levelname": "WARNING", "name": "borg.archiver"}"#;
        let create = Output::Create { dry_run: false };
        // Even when borgmatic was told to treat borg's warning as success.
        for warned in [true, false] {
            let run = run_with(0, warned, &[denied]);
            let out = judge(&create, &run, parse_output(&create, &run.stdout));
            assert_eq!(out.state, JobState::Warning);
            let d = out.data.unwrap();
            assert_eq!(d["partial"], true);
            assert_eq!(d["skipped_files"], 1);
            assert_eq!(d["skipped"][0]["path"], "/s/f");
            assert_eq!(d["archive"], "nas-1");
            assert!(out.error.unwrap().contains("nas-1"));
        }
        let clean = run_with(0, false, &[]);
        let out = judge(&create, &clean, parse_output(&create, &clean.stdout));
        assert_eq!(out.state, JobState::Succeeded);
        let d = out.data.unwrap();
        assert_eq!(
            (d["partial"].clone(), d["skipped_files"].clone()),
            (json!(false), json!(0))
        );
        assert!(out.error.is_none());
        let failed = run_with(1, false, &[denied]);
        let out = judge(&create, &failed, parse_output(&create, &failed.stdout));
        assert_eq!(out.state, JobState::Failed);
        assert_eq!(out.data.unwrap()["skipped_files"], 1);
    }

    #[test]
    fn a_backup_whose_json_borg_printed_itself_names_its_archive() {
        let out = br#"{"archive": {"name": "nas-2.checkpoint", "stats": {"nfiles": 6}, "duration": 0.1}, "repository": {"location": "/r"}}"#;
        let v = parse_output(&Output::Create { dry_run: false }, out).unwrap();
        assert_eq!(v["archive"], "nas-2");
        assert_eq!(v["stats"]["nfiles"], 6);
        assert_eq!(v["repositories"][0]["repository"], "/r");
    }

    #[test]
    fn latest_stats_of_a_repository_without_archives_fails() {
        let run = |stdout: &[u8]| RunResult {
            exit_code: 0,
            stdout: stdout.to_vec(),
            warned: false,
            first_error: None,
            lock_held: false,
            skipped: Skipped::default(),
        };
        let empty = run(br#"[{"archives": [], "repository": {"label": "nc"}}]"#);
        let data = parse_output(&Output::LatestStats, &empty.stdout);
        let out = judge(&Output::LatestStats, &empty, data);
        assert_eq!(out.state, JobState::Failed);
        assert_eq!(
            out.error.as_deref(),
            Some("no archives found in the repository")
        );
        let one = run(br#"[{"archives": [{"name": "a1", "stats": {"nfiles": 2}}]}]"#);
        let data = parse_output(&Output::LatestStats, &one.stdout);
        let out = judge(&Output::LatestStats, &one, data);
        assert_eq!(out.state, JobState::Succeeded);
        assert_eq!(out.data.unwrap()["archive"]["name"], "a1");
    }

    #[test]
    fn json_with_trailing_text() {
        let out = b"[{\"archives\": [{\"name\": \"a1\", \"id\": \"x\", \"time\": \"t\"}], \"repository\": {\"location\": \"/r\"}}]\nsummary: done\n";
        let v = parse_output(&Output::RepoList, out).unwrap();
        assert_eq!(v["archives"][0]["name"], "a1");
        assert_eq!(v["archives"][0]["repository"], "/r");
        assert!(parse_output(&Output::RepoList, b"garbage").is_none());
        let dry = parse_output(&Output::Create { dry_run: true }, b"").unwrap();
        assert_eq!(dry["dry_run"], true);
        assert!(dry["archive"].is_null());
    }
}
