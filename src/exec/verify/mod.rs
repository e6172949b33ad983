//! `backup/verify`, the restore drill: check one archive with borgmatic, extract a
//! random sample of its regular files into a fresh directory under the restore root,
//! compare each with the live source by SHA-256 where the source has not changed
//! since the backup, and remove what was extracted whatever the outcome.
//!
//! The scratch directory is made and read through a `cap-std` handle on the restore
//! root ([`super::roots`]): no symbolic link, swapped in or restored from the
//! archive, can make the drill write, read or delete outside it.
//!
//! # Layout
//! - `sample`: the archive's regular files and the random sample.
//! - `compare`: the scratch directory and the comparison with live sources.
//! - here: the steps of the drill and what its result means.
//!
//! Imports: the borgmatic executor (it runs borgmatic only through it), `roots`,
//! `domain` value types, `jobs`' `Task` interface.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use super::borgmatic::{first_json, Action, Borgmatic, BorgmaticTask, JobSecrets, Repository};
use crate::domain::{ArchiveName, ArchivePath};
use crate::jobs::{BoxFuture, JobState, Stream, Task, TaskContext, TaskOutcome};

mod compare;
mod sample;

use compare::{compare, Compared, Scratch};
use sample::{pick, regular_files, Entry};

/// `backup/verify` as a job: the restore drill on one archive.
pub struct VerifyTask {
    /// Runs every borgmatic step of the drill.
    pub borgmatic: Borgmatic,
    /// The repository verified.
    pub repo: Repository,
    /// The secrets its borgmatic runs use.
    pub secrets: JobSecrets,
    /// The archive to verify; the newest one when `None`.
    pub archive: Option<ArchiveName>,
    /// How many regular files to extract and compare.
    pub sample: usize,
    /// Most bytes the sample may add up to (a file that would pass it is skipped).
    pub max_bytes: u64,
    /// The scratch directory is made below it.
    pub restore_root: PathBuf,
    /// The configuration enables borgmatic's spot check.
    pub spot: bool,
}

impl VerifyTask {
    fn task(&self, action: Action) -> BorgmaticTask {
        self.borgmatic.task(&self.repo, &self.secrets, action)
    }

    /// The archive asked for, else the newest one.
    async fn archive(&self, ctx: &TaskContext) -> Result<ArchiveName, TaskOutcome> {
        if let Some(a) = &self.archive {
            return Ok(a.clone());
        }
        let run = match self
            .task(Action::RepoList { last: Some(1) })
            .run_inline(ctx)
            .await
        {
            Ok(r) if r.exit_code == 0 => r,
            Ok(r) => return Err(TaskOutcome::failed(r.failure())),
            Err(e) => return Err(TaskOutcome::failed(e.to_string())),
        };
        let name = first_json(&run.stdout)
            .and_then(|v| v.pointer("/0/archives").and_then(|a| a.as_array()).cloned())
            .and_then(|a| a.last().cloned())
            .and_then(|a| a.get("name").and_then(Value::as_str).map(str::to_string));
        match name.as_deref().map(ArchiveName::parse) {
            Some(Ok(n)) => Ok(n),
            _ => Err(TaskOutcome::failed(
                "the repository has no archive to verify",
            )),
        }
    }

    /// Extracts the sample into the scratch directory (a failed extract shows up
    /// as missing files).
    async fn extract(
        &self,
        ctx: &TaskContext,
        archive: &ArchiveName,
        sample: &[Entry],
        dir: &Scratch,
    ) -> Result<(), TaskOutcome> {
        if sample.is_empty() {
            return Ok(());
        }
        let paths = sample
            .iter()
            .filter_map(|e| ArchivePath::parse(&e.path).ok())
            .collect();
        let extract = Action::Extract {
            archive: archive.clone(),
            paths,
            destination: dir.confined.clone(),
        };
        match self.task(extract).run_inline(ctx).await {
            Ok(r) if r.exit_code == 0 => {}
            Ok(r) => ctx.line(Stream::Stderr, &format!("extract failed: {}", r.failure())),
            Err(e) => return Err(TaskOutcome::failed(e.to_string())),
        }
        Ok(())
    }

    /// The drill, step by step; a step that cannot run ends it as `failed`.
    async fn drill(&self, ctx: &TaskContext) -> Result<TaskOutcome, TaskOutcome> {
        let started = Instant::now();
        let failed = |e: String| TaskOutcome::failed(e);
        // 1. Which archive.
        let archive = self.archive(ctx).await?;
        ctx.line(
            Stream::Stdout,
            &format!("verifying archive {}", archive.as_str()),
        );
        // 2. borgmatic's consistency check of that archive.
        let check = self
            .task(Action::CheckArchive {
                archive: archive.clone(),
                spot: self.spot,
            })
            .run_inline(ctx)
            .await
            .map_err(|e| failed(e.to_string()))?;
        // 3. The archive's regular files, and the sample.
        let listing = self
            .task(Action::ListFiles {
                archive: archive.clone(),
            })
            .run_inline(ctx)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let listing_error = (listing.exit_code != 0).then(|| listing.failure());
        let files = regular_files(&listing.stdout);
        let total_files = files.len();
        let sample = pick(files, self.sample, self.max_bytes);
        // 4. Extract the sample into a fresh directory (removed on drop).
        let dir = Scratch::make(&self.restore_root)
            .map_err(|e| failed(format!("cannot make a directory in the restore root: {e}")))?;
        self.extract(ctx, &archive, &sample, &dir).await?;
        // 5. Compare with the live sources.
        let compared = compare(&sample, &dir, ctx);
        drop(dir);
        let check_error = (check.exit_code != 0).then(|| check.failure());
        Ok(self.outcome(
            Drill {
                archive: &archive,
                check_exit_code: check.exit_code,
                check_error,
                listing_error,
                total_files,
                sampled: sample.len(),
                compared,
                started,
            },
            ctx,
        ))
    }

    /// The job's result: `verified` only when the check passed, the listing was
    /// read and every sampled file that could be compared matched.
    fn outcome(&self, d: Drill<'_>, ctx: &TaskContext) -> TaskOutcome {
        let c = &d.compared;
        let check_ok = d.check_error.is_none();
        let verified = check_ok
            && d.listing_error.is_none()
            && c.mismatches.is_empty()
            && c.missing.is_empty();
        ctx.line(
            Stream::Stdout,
            &format!(
                "sampled {} of {} files: {} matched, {} mismatched, {} changed since backup, {} missing; check {}",
                d.sampled,
                d.total_files,
                c.matched,
                c.mismatches.len(),
                c.changed,
                c.missing.len(),
                if check_ok { "passed" } else { "FAILED" }
            ),
        );
        let data = json!({
            "archive": d.archive.as_str(),
            "verified": verified,
            "check": { "passed": check_ok, "exit_code": d.check_exit_code, "spot": self.spot },
            "files_in_archive": d.total_files,
            "sampled": d.sampled,
            "matched": c.matched,
            "mismatched": c.mismatches.len(),
            "changed": c.changed,
            "missing": c.missing.len(),
            "mismatches": c.mismatches,
            "missing_files": c.missing,
            "bytes_extracted": c.bytes,
            "max_bytes": self.max_bytes,
            "duration_secs": d.started.elapsed().as_secs_f64(),
        });
        let error = (!verified).then(|| {
            if let Some(e) = &d.check_error {
                format!("the consistency check failed: {e}")
            } else if let Some(e) = &d.listing_error {
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
            exit_code: Some(d.check_exit_code),
            data: Some(data),
            error,
        }
    }
}

/// What the drill's steps found, before it is judged.
struct Drill<'a> {
    archive: &'a ArchiveName,
    check_exit_code: i32,
    check_error: Option<String>,
    listing_error: Option<String>,
    total_files: usize,
    sampled: usize,
    compared: Compared,
    started: Instant,
}

impl Task for VerifyTask {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            match self.drill(&ctx).await {
                Ok(outcome) | Err(outcome) => outcome,
            }
        })
    }
}
