//! `backup/verify`, the restore drill: check one archive with borgmatic, extract a
//! random sample of its regular files into a fresh directory under the restore root,
//! compare each with the live source by SHA-256 where the source has not changed
//! since the backup, and remove what was extracted whatever the outcome.
//!
//! The scratch directory is made and read through a `cap-std` handle on the restore
//! root ([`super::roots`]): no symbolic link, swapped in or restored from the
//! archive, can make the drill write, read or delete outside it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::borgmatic::{first_json, Action, Borgmatic, JobSecrets, Repository};
use super::roots;
use crate::command::{ArchiveName, ArchivePath, SubPath};
use crate::jobs::{BoxFuture, JobState, Stream, Task, TaskContext, TaskOutcome};

/// One regular file of the archive listing.
#[derive(Debug, Clone)]
struct Entry {
    path: String,
    size: u64,
    /// Microseconds since the epoch, from borg's local-time `mtime`.
    mtime_us: Option<i64>,
}

pub struct VerifyTask {
    pub borgmatic: Borgmatic,
    pub repo: Repository,
    pub secrets: JobSecrets,
    pub archive: Option<ArchiveName>,
    pub sample: usize,
    pub max_bytes: u64,
    pub restore_root: PathBuf,
    /// The configuration enables borgmatic's spot check.
    pub spot: bool,
}

fn parse_mtime(s: &str) -> Option<i64> {
    use chrono::TimeZone;
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    chrono::Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_micros())
}

fn file_mtime_us(meta: &std::fs::Metadata) -> Option<i64> {
    let t = meta.modified().ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_micros()).ok()
}

fn sha256(mut f: impl std::io::Read) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().into())
}

/// The drill's scratch directory below the restore root, removed (without
/// following links) when dropped.
struct Scratch {
    root: cap_std::fs::Dir,
    name: String,
    confined: roots::Confined,
}

impl Scratch {
    fn make(restore_root: &Path) -> Result<Scratch, String> {
        let name = format!(".verify-{}", uuid::Uuid::now_v7().simple());
        let sub = SubPath::parse(&name).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(restore_root).map_err(|e| e.to_string())?;
        let root = cap_std::fs::Dir::open_ambient_dir(restore_root, cap_std::ambient_authority())
            .map_err(|e| e.to_string())?;
        let confined = roots::resolve_below(restore_root, &sub).map_err(|e| e.to_string())?;
        Ok(Scratch {
            root,
            name,
            confined,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.root.remove_dir_all(&self.name) {
            tracing::warn!(error = %e, dir = %self.name, "could not remove the verify scratch directory");
        }
    }
}

/// A small xorshift generator: the sample needs to be unpredictable across runs,
/// not cryptographic.
struct Shuffle(u64);

impl Shuffle {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            ^ (std::process::id() as u64).rotate_left(32);
        Self(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Picks up to `count` files, in random order, whose sizes fit in `budget`.
fn pick(mut files: Vec<Entry>, count: usize, budget: u64) -> Vec<Entry> {
    Shuffle::new().shuffle(&mut files);
    let mut used = 0u64;
    let mut out = Vec::new();
    for f in files {
        if out.len() >= count {
            break;
        }
        if used + f.size <= budget {
            used += f.size;
            out.push(f);
        }
    }
    out
}

impl Task for VerifyTask {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            let started = Instant::now();
            let task = |action| self.borgmatic.task(&self.repo, &self.secrets, action);

            // 1. Which archive.
            let archive = match &self.archive {
                Some(a) => a.clone(),
                None => {
                    let run = match task(Action::RepoList { last: Some(1) })
                        .run_inline(&ctx)
                        .await
                    {
                        Ok(r) if r.exit_code == 0 => r,
                        Ok(r) => return TaskOutcome::failed(r.failure()),
                        Err(e) => return TaskOutcome::failed(e.to_string()),
                    };
                    let name = first_json(&run.stdout)
                        .and_then(|v| v.pointer("/0/archives").and_then(|a| a.as_array()).cloned())
                        .and_then(|a| a.last().cloned())
                        .and_then(|a| a.get("name").and_then(Value::as_str).map(str::to_string));
                    match name.as_deref().map(ArchiveName::parse) {
                        Some(Ok(n)) => n,
                        _ => return TaskOutcome::failed("the repository has no archive to verify"),
                    }
                }
            };
            ctx.line(
                Stream::Stdout,
                &format!("verifying archive {}", archive.as_str()),
            );

            // 2. borgmatic's consistency check of that archive.
            let check = match task(Action::CheckArchive {
                archive: archive.clone(),
                spot: self.spot,
            })
            .run_inline(&ctx)
            .await
            {
                Ok(r) => r,
                Err(e) => return TaskOutcome::failed(e.to_string()),
            };
            let check_ok = check.exit_code == 0;

            // 3. The archive's regular files. (With `--log-json` each listed file
            // arrives wrapped in a log record whose message is the file's JSON.)
            let listing = match task(Action::ListFiles {
                archive: archive.clone(),
            })
            .run_inline(&ctx)
            .await
            {
                Ok(r) => r,
                Err(e) => return TaskOutcome::failed(e.to_string()),
            };
            let listing_error = (listing.exit_code != 0).then(|| listing.failure());
            let files: Vec<Entry> = String::from_utf8_lossy(&listing.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| {
                    if v.get("path").is_some() {
                        return Some(v);
                    }
                    let inner = v.get("message")?.as_str()?;
                    serde_json::from_str::<Value>(inner)
                        .ok()
                        .filter(|i| i.get("path").is_some())
                })
                .filter(|v| v.get("type").and_then(Value::as_str) == Some("-"))
                .filter_map(|v| {
                    Some(Entry {
                        path: v.get("path")?.as_str()?.to_string(),
                        size: v.get("size").and_then(Value::as_u64).unwrap_or(0),
                        mtime_us: v.get("mtime").and_then(Value::as_str).and_then(parse_mtime),
                    })
                })
                .filter(|e| ArchivePath::parse(&e.path).is_ok())
                .collect();
            let total_files = files.len();
            let sample = pick(files, self.sample, self.max_bytes);

            // 4. Extract the sample into a fresh directory (removed on drop).
            let dir = match Scratch::make(&self.restore_root) {
                Ok(d) => d,
                Err(e) => {
                    return TaskOutcome::failed(format!(
                        "cannot make a directory in the restore root: {e}"
                    ))
                }
            };
            if !sample.is_empty() {
                let paths = sample
                    .iter()
                    .filter_map(|e| ArchivePath::parse(&e.path).ok())
                    .collect();
                let extract = Action::Extract {
                    archive: archive.clone(),
                    paths,
                    destination: dir.confined.clone(),
                };
                match task(extract).run_inline(&ctx).await {
                    Ok(r) if r.exit_code == 0 => {}
                    Ok(r) => ctx.line(Stream::Stderr, &format!("extract failed: {}", r.failure())),
                    Err(e) => return TaskOutcome::failed(e.to_string()),
                }
            }

            // 5. Compare with the live sources.
            let (mut matched, mut changed) = (0usize, 0usize);
            let mut mismatches = Vec::new();
            let mut missing = Vec::new();
            let mut bytes = 0u64;
            let opened = dir.confined.reopen().ok();
            let scratch = opened.as_ref().and_then(|p| p.dir());
            for e in &sample {
                // Read through the handle: a restored link cannot lead outside.
                let restored = scratch.and_then(|d| d.open(&e.path).ok());
                let Some(rmeta) = restored.as_ref().and_then(|f| f.metadata().ok()) else {
                    missing.push(e.path.clone());
                    continue;
                };
                bytes += rmeta.len();
                let source = Path::new("/").join(&e.path);
                let same_as_backup = std::fs::metadata(&source).ok().is_some_and(|m| {
                    m.len() == e.size
                        && match (file_mtime_us(&m), e.mtime_us) {
                            (Some(a), Some(b)) => (a - b).abs() <= 1_000,
                            _ => false,
                        }
                });
                if !same_as_backup {
                    changed += 1;
                    continue;
                }
                let restored = restored.map(|f| f.into_std());
                let source_file = std::fs::File::open(&source);
                match (
                    restored
                        .map(sha256)
                        .unwrap_or_else(|| Err(std::io::ErrorKind::NotFound.into())),
                    source_file.and_then(sha256),
                ) {
                    (Ok(a), Ok(b)) if a == b => matched += 1,
                    _ => {
                        ctx.line(Stream::Stderr, &format!("MISMATCH {}", e.path));
                        mismatches.push(e.path.clone());
                    }
                }
            }
            drop(opened);
            drop(dir);

            let verified =
                check_ok && listing_error.is_none() && mismatches.is_empty() && missing.is_empty();
            ctx.line(
                Stream::Stdout,
                &format!(
                    "sampled {} of {total_files} files: {matched} matched, {} mismatched, {changed} changed since backup, {} missing; check {}",
                    sample.len(),
                    mismatches.len(),
                    missing.len(),
                    if check_ok { "passed" } else { "FAILED" }
                ),
            );
            let data = json!({
                "archive": archive.as_str(),
                "verified": verified,
                "check": { "passed": check_ok, "exit_code": check.exit_code, "spot": self.spot },
                "files_in_archive": total_files,
                "sampled": sample.len(),
                "matched": matched,
                "mismatched": mismatches.len(),
                "changed": changed,
                "missing": missing.len(),
                "mismatches": mismatches,
                "missing_files": missing,
                "bytes_extracted": bytes,
                "max_bytes": self.max_bytes,
                "duration_secs": started.elapsed().as_secs_f64(),
            });
            let error = (!verified).then(|| {
                if !check_ok {
                    format!("the consistency check failed: {}", check.failure())
                } else if let Some(e) = &listing_error {
                    format!("listing the archive failed: {e}")
                } else {
                    "restored files differ from their sources (see data.mismatches)".to_string()
                }
            });
            TaskOutcome {
                state: if verified {
                    JobState::Succeeded
                } else {
                    JobState::Failed
                },
                exit_code: Some(check.exit_code),
                data: Some(data),
                error,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, size: u64) -> Entry {
        Entry {
            path: path.into(),
            size,
            mtime_us: None,
        }
    }

    #[test]
    fn the_sample_respects_count_and_bytes() {
        let files: Vec<Entry> = (0..100).map(|i| e(&format!("f{i}"), 10)).collect();
        assert_eq!(pick(files.clone(), 5, u64::MAX).len(), 5);
        let capped = pick(files, 50, 35);
        assert_eq!(capped.len(), 3);
        assert!(capped.iter().map(|f| f.size).sum::<u64>() <= 35);
        assert!(pick(vec![e("big", 100)], 5, 99).is_empty());
    }

    #[test]
    fn borg_mtimes_parse_as_local_time() {
        let us = parse_mtime("2026-11-24T10:19:12.475908").unwrap();
        assert_eq!(us.rem_euclid(1_000_000), 475_908);
    }
}
