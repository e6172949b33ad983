//! `archive/files`: reads borgmatic's listing line by line and keeps one page.
//!
//! Memory is bounded by the page: items before the cursor or outside the path
//! are counted and dropped as they stream past, never collected.
//!
//! May import: `domain`, `exec` (`borgmatic`, `borgmatic_log`, `process`), `jobs`.

use serde_json::{json, Map, Value};

use crate::domain::{ArchiveName, ArchivePath, JobState};
use crate::exec::borgmatic_log;
use crate::exec::process::{self, ProcessSpec};
use crate::jobs::{BoxFuture, Stream, Task, TaskContext, TaskOutcome};

/// Items per page when `limit` is absent.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most items per page.
pub const MAX_LIMIT: u32 = 1_000;

/// The page being filled while the listing streams past.
#[derive(Debug)]
pub struct Page {
    archive: ArchiveName,
    path: Option<ArchivePath>,
    after: u64,
    limit: usize,
    /// Items under `path` seen so far.
    matched: u64,
    items: Vec<Value>,
}

impl Page {
    pub fn new(
        archive: ArchiveName,
        path: Option<ArchivePath>,
        after: u64,
        limit: Option<u32>,
    ) -> Self {
        let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;
        Self {
            archive,
            path,
            after,
            limit,
            matched: 0,
            items: Vec::with_capacity(limit.min(64)),
        }
    }

    /// Takes one listed item; `false` when the line is not an item.
    fn offer(&mut self, line: &str) -> bool {
        let Some(item) = parse_item(line) else {
            return false;
        };
        let path = item.get("path").and_then(Value::as_str).unwrap_or("");
        if self.path.as_ref().is_some_and(|p| !p.contains(path)) {
            return true;
        }
        self.matched += 1;
        if self.matched > self.after && self.items.len() < self.limit {
            self.items.push(item);
        }
        true
    }

    /// The result data: the page, and `next` when more items follow.
    fn into_data(self) -> Value {
        let shown = self.after + self.items.len() as u64;
        let next = (self.matched > shown).then_some(shown);
        json!({
            "archive": self.archive.as_str(),
            "path": self.path.as_ref().map(ArchivePath::as_str),
            "after": self.after,
            "limit": self.limit,
            "files": self.items,
            "matched": self.matched,
            "next": next,
        })
    }
}

/// borg's item JSON, bare or as a `--log-json` record's message, reduced to the
/// fields a file browser shows.
fn parse_item(line: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(line).ok()?;
    let v = if v.get("path").is_some() {
        v
    } else {
        serde_json::from_str(v.get("message")?.as_str()?).ok()?
    };
    let Value::Object(all) = v else { return None };
    all.get("path")?.as_str()?;
    let mut out = Map::new();
    for key in [
        "path",
        "type",
        "mode",
        "user",
        "group",
        "uid",
        "gid",
        "size",
        "mtime",
        "linktarget",
    ] {
        if let Some(v) = all.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    Some(Value::Object(out))
}

/// The listing job: borgmatic `list --archive … --json`, its stdout never kept
/// whole.
pub struct FilesTask {
    pub spec: ProcessSpec,
    /// Parent of the job's private runtime directory (as every borgmatic job).
    pub runtime_root: std::path::PathBuf,
    pub page: Page,
}

impl Task for FilesTask {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            let FilesTask {
                mut spec,
                runtime_root,
                page,
            } = *self;
            // A private runtime directory, so borgmatic's clean-up of its shared
            // one cannot touch a concurrent job's files.
            let runtime = std::fs::create_dir_all(&runtime_root)
                .and_then(|()| {
                    tempfile::Builder::new()
                        .prefix("job-")
                        .tempdir_in(&runtime_root)
                })
                .ok();
            if let Some(dir) = &runtime {
                let path = dir.path().display().to_string();
                let secret = crate::domain::Secret::new;
                spec.env
                    .push(("XDG_RUNTIME_DIR".into(), secret(path.clone())));
                spec.env.push(("TMPDIR".into(), secret(path)));
            }
            spec.capture_stdout = false;
            let page = std::sync::Mutex::new(page);
            let on_line = |stream: Stream, raw: &str| {
                let taken = page.lock().map(|mut p| p.offer(raw)).unwrap_or(false);
                if !taken {
                    if let Some(text) = borgmatic_log::render(raw).text {
                        ctx.line(stream, &text);
                    }
                }
            };
            let out = process::run(&spec, &ctx.cancel, &ctx.pace(), &on_line).await;
            drop(runtime);
            let page = match page.into_inner() {
                Ok(p) => p,
                Err(p) => p.into_inner(),
            };
            judge(out, page)
        })
    }
}

fn judge(out: Result<process::ProcessOutput, process::ProcessError>, page: Page) -> TaskOutcome {
    match out {
        Ok(o) if o.exit_code == 0 => TaskOutcome {
            state: JobState::Succeeded,
            exit_code: Some(0),
            data: Some(page.into_data()),
            error: None,
        },
        // No page from a failed listing: a partial page would look like the whole.
        Ok(o) => TaskOutcome {
            state: JobState::Failed,
            exit_code: Some(o.exit_code),
            data: None,
            error: Some(format!(
                "borgmatic exited with code {} (the log says why: no such archive, a locked repository…)",
                o.exit_code
            )),
        },
        Err(e) => {
            tracing::warn!(error = %e, "archive/files: borgmatic did not run");
            TaskOutcome::failed("borgmatic could not be run (see the worker's log)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(path: Option<&str>, after: u64, limit: u32) -> Page {
        Page::new(
            ArchiveName::parse("a").unwrap(),
            path.map(|p| ArchivePath::parse(p).unwrap()),
            after,
            Some(limit),
        )
    }

    fn line(path: &str) -> String {
        json!({ "type": "-", "mode": "-rw-r--r--", "path": path, "size": 1, "health": "x" })
            .to_string()
    }

    #[test]
    fn pages_follow_the_cursor_and_the_path() {
        let all = ["srv", "srv/a", "srv/b", "srv/bc", "srvx", "srv/b/c"];
        let mut p = page(Some("srv/b"), 1, 1);
        for l in all {
            assert!(p.offer(&line(l)));
        }
        let d = p.into_data();
        assert_eq!(d["matched"], 2);
        assert_eq!(d["files"][0]["path"], "srv/b/c");
        assert!(d["files"][0].get("health").is_none());
        assert_eq!(d["next"], Value::Null);
        let mut p = page(None, 0, 2);
        for l in all {
            p.offer(&line(l));
        }
        let d = p.into_data();
        assert_eq!(d["files"].as_array().unwrap().len(), 2);
        assert_eq!(d["next"], 2);
    }

    #[test]
    fn log_records_are_not_items() {
        let mut p = page(None, 0, 10);
        assert!(!p.offer("plain text"));
        assert!(!p.offer(r#"{"message":"hello","levelname":"INFO"}"#));
        let wrapped = json!({ "message": line("x/y") }).to_string();
        assert!(p.offer(&wrapped));
    }
}
