//! THE argv builder for borgmatic: every borgmatic argv and environment is made
//! here from an [`Action`], and nowhere else.
//!
//! Client values enter the argv only through [`client_args`], each as a single
//! `--flag=value` element (see the module header of [`super`]).
//!
//! May import: `domain`, `config::Secret`, `askpass` (its environment),
//! `borg_config` (the ssh identity files), the siblings `process` and `roots`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::outcome::Output;
use super::task::{BorgmaticTask, Confinement, JOB_RUNTIME_PREFIX, RESTORE_RUNTIME_PREFIX};
use super::{Action, Borgmatic, JobSecrets};
use crate::config::Secret;
use crate::domain::{ArchiveName, ArchivePath, DatabaseName, EncryptionMode, MountOptions};
use crate::exec::process::ProcessSpec;
use crate::exec::roots::Confined;

impl Borgmatic {
    /// The task that runs `action` with `config` (a file, or the directory for
    /// `config validate`): global flags, then the action's own argv.
    pub(super) fn task_for(
        &self,
        config: PathBuf,
        secrets: &JobSecrets,
        action: Action,
    ) -> BorgmaticTask {
        let parts = Parts::of(action);
        let mut global: Vec<OsString> = vec![eq_path("--config", &config)];
        if parts.dry_run {
            global.push("--dry-run".into());
        }
        if self.log_json {
            global.push("--log-json".into());
        }
        let mut env: Vec<(String, Secret)> = Vec::new();
        if let Some(p) = &secrets.borg {
            env.push(("BORG_PASSPHRASE".into(), p.clone()));
        }
        if let Some(p) = &secrets.ssh {
            let keys = crate::borg_config::ssh_identity_files(&config);
            env.extend(crate::askpass::env(p, &keys));
        }
        env.extend(parts.env);
        let confine = parts.confine.map(|(i, flag, dir, pin)| Confinement {
            index: global.len() + i,
            flag,
            dir,
            pin,
            create_file: parts.create_file,
        });
        global.extend(parts.args);
        BorgmaticTask {
            spec: ProcessSpec {
                program: self.binary.clone(),
                args: global,
                env,
                capture_stdout: parts.output.captures_stdout(),
                kill_grace: self.kill_grace,
            },
            output: parts.output,
            runtime_root: self.runtime_root.clone(),
            runtime_prefix: parts.runtime_prefix,
            log_json: self.log_json,
            restore_check: None,
            confine,
        }
    }
}

/// What one action adds to the invocation.
struct Parts {
    /// The action and its own arguments (after the global flags).
    args: Vec<OsString>,
    /// How to read the run's stdout.
    output: Output,
    /// `--dry-run` is a global flag in borgmatic.
    dry_run: bool,
    /// Environment beyond the job's secrets.
    env: Vec<(String, Secret)>,
    /// The directory re-checked when the job starts: (its index in `args`, flag,
    /// dir, whether to pass it held open).
    confine: Option<(usize, &'static str, Confined, bool)>,
    /// A new file in the confined directory, made by the worker when the job
    /// starts and passed held open (export-tar).
    create_file: Option<String>,
    /// The name prefix of the job's private runtime directory.
    runtime_prefix: &'static str,
}

impl Parts {
    fn new(args: Vec<OsString>, output: Output) -> Self {
        Self {
            args,
            output,
            dry_run: false,
            env: Vec::new(),
            confine: None,
            create_file: None,
            runtime_prefix: JOB_RUNTIME_PREFIX,
        }
    }

    fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    fn env(mut self, name: &str, value: Secret) -> Self {
        self.env.push((name.into(), value));
        self
    }

    /// One arm per action: the only place an action becomes argv.
    fn of(action: Action) -> Self {
        match action {
            Action::Create {
                dry_run,
                stats,
                progress,
            } => Self::create(dry_run, stats, progress),
            Action::RepoList { last } => Self::repo_list(last),
            Action::Info { archive } => Parts::new(
                vec!["info".into(), "--json".into(), client_args::archive(&archive)],
                Output::Json,
            ),
            // `--last 1` is one borg call; `--archive=latest` costs a second (a
            // listing to resolve the name) and answers the same.
            Action::LatestStats => {
                Parts::new(args(&["info", "--json", "--last=1"]), Output::LatestStats)
            }
            Action::RepoInfo => Parts::new(args(&["repo-info", "--json"]), Output::Json),
            Action::Extract {
                archive,
                paths,
                destination,
            } => Self::extract(archive, paths, destination),
            Action::ExportTar {
                archive,
                paths,
                directory,
                file,
            } => Self::export_tar(archive, paths, directory, file),
            Action::RestoreDumps { archive, databases } => Self::restore_dumps(archive, databases),
            Action::Mount {
                archive,
                mount_point,
                options,
            } => Self::mount(archive, mount_point, options),
            Action::Umount { mount_point } => Self::umount(mount_point),
            Action::Check { repair } => Self::check(repair),
            Action::Prune { dry_run } => Parts::new(
                args(&["prune", "--list"]),
                Output::Static(json!({ "dry_run": dry_run })),
            )
            .dry_run(dry_run),
            Action::Compact { dry_run } => Parts::new(
                args(&["compact"]),
                Output::Static(json!({ "dry_run": dry_run })),
            )
            .dry_run(dry_run),
            Action::BreakLock => Parts::new(args(&["break-lock"]), Output::Static(json!({}))),
            Action::ChangePassphrase { new } => Parts::new(
                args(&["key", "change-passphrase"]),
                Output::Static(json!({
                    "next_step": "update the passphrase the worker uses for this repository (repositories.<label>.passphrase or encryption_passphrase), or the next job fails"
                })),
            )
            .env("BORG_NEW_PASSPHRASE", new),
            Action::ValidateConfig => {
                Parts::new(args(&["config", "validate"]), Output::Static(json!({})))
            }
            Action::CheckArchive { archive, spot } => Self::check_archive(archive, spot),
            Action::ListFiles { archive } => Parts::new(
                vec!["list".into(), client_args::archive(&archive), "--json".into()],
                Output::Json,
            ),
            // borgmatic deletes the WHOLE repository when no archive is named: the
            // archive is a required field of the variant, so it always is.
            Action::DeleteArchive { archive } => Parts::new(
                vec!["delete".into(), client_args::archive(&archive)],
                Output::Static(json!({
                    "archive": archive.as_str(),
                    "next_step": "the space is freed only by repo/compact",
                })),
            ),
            Action::RepoCreate { encryption } => Self::repo_create(encryption),
            Action::KeyExport { path, paper } => Self::key_export(path, paper),
        }
    }

    fn create(dry_run: bool, stats: bool, progress: bool) -> Self {
        let mut a = args(&["create", "--json"]);
        if stats {
            a.push("--stats".into());
        }
        if progress {
            a.push("--progress".into());
        }
        Parts::new(a, Output::Create { dry_run }).dry_run(dry_run)
    }

    fn repo_list(last: Option<u32>) -> Self {
        let mut a = args(&["repo-list", "--json"]);
        if let Some(n) = last {
            a.push(format!("--last={n}").into());
        }
        Parts::new(a, Output::RepoList)
    }

    fn restore_dumps(archive: ArchiveName, databases: Vec<DatabaseName>) -> Self {
        let mut a = vec!["restore".into(), client_args::archive(&archive)];
        a.extend(databases.iter().map(client_args::data_source));
        let data = json!({
            "archive": archive.as_str(),
            "databases": databases.iter().map(DatabaseName::as_str).collect::<Vec<_>>(),
        });
        let mut parts = Parts::new(a, Output::Static(data));
        parts.runtime_prefix = RESTORE_RUNTIME_PREFIX;
        parts
    }

    fn check_archive(archive: ArchiveName, spot: bool) -> Self {
        let mut a = args(&["check", "--force", "--only", "archives"]);
        if spot {
            a.extend(args(&["--only", "spot"]));
        }
        a.push(client_args::match_archive(&archive));
        Parts::new(a, Output::Static(json!({})))
    }

    fn repo_create(encryption: Option<EncryptionMode>) -> Self {
        let mut a = args(&["repo-create"]);
        if let Some(mode) = encryption {
            a.push(format!("--encryption={}", mode.as_str()).into());
        }
        let mode = encryption.map(EncryptionMode::as_str);
        Parts::new(a, Output::Static(json!({ "encryption": mode })))
    }

    fn key_export(path: std::path::PathBuf, paper: bool) -> Self {
        let mut a = args(&["key", "export"]);
        if paper {
            a.push("--paper".into());
        }
        a.push(eq_path("--path", &path));
        Parts::new(a, Output::Static(json!({ "path": path, "paper": paper })))
    }

    fn extract(archive: ArchiveName, paths: Vec<ArchivePath>, destination: Confined) -> Self {
        let mut a = vec!["extract".into(), client_args::archive(&archive)];
        a.push(eq_path("--destination", destination.path()));
        let index = a.len() - 1;
        for p in &paths {
            a.push(client_args::path(p));
        }
        let data = json!({
            "archive": archive.as_str(),
            "destination": destination.path(),
            "paths": paths.iter().map(ArchivePath::as_str).collect::<Vec<_>>(),
        });
        let mut parts = Parts::new(a, Output::Static(data));
        parts.confine = Some((index, "--destination", destination, true));
        parts
    }

    fn export_tar(
        archive: ArchiveName,
        paths: Vec<ArchivePath>,
        directory: Confined,
        file: String,
    ) -> Self {
        let path = directory.path().join(&file);
        let mut a = vec!["export-tar".into(), client_args::archive(&archive)];
        // Replaced by the file the worker creates and holds open when the job starts.
        a.push(eq_path("--destination", &path));
        let index = a.len() - 1;
        for p in &paths {
            a.push(client_args::path(p));
        }
        let data = json!({
            "archive": archive.as_str(),
            "destination": path,
            "paths": paths.iter().map(ArchivePath::as_str).collect::<Vec<_>>(),
        });
        let mut parts = Parts::new(a, Output::Static(data));
        parts.confine = Some((index, "--destination", directory, true));
        parts.create_file = Some(file);
        parts
    }

    fn umount(mount_point: Confined) -> Self {
        let data = json!({ "mount_point": mount_point.path() });
        let a = vec![
            "umount".into(),
            eq_path("--mount-point", mount_point.path()),
        ];
        let mut parts = Parts::new(a, Output::Static(data));
        parts.confine = Some((1, "--mount-point", mount_point, false));
        parts
    }

    fn check(repair: bool) -> Self {
        let mut a = args(&["check", "--force"]);
        if repair {
            a.push("--repair".into());
        }
        let parts = Parts::new(a, Output::Static(json!({ "repair": repair })));
        if repair {
            // borg asks for confirmation of a repair; the admin role is ours.
            parts.env("BORG_CHECK_I_KNOW_WHAT_I_AM_DOING", Secret::new("YES"))
        } else {
            parts
        }
    }

    fn mount(archive: Option<ArchiveName>, mount_point: Confined, options: MountOptions) -> Self {
        let mut a: Vec<OsString> = vec!["mount".into()];
        if let Some(archive) = &archive {
            a.push(client_args::archive(archive));
        }
        if let Some(o) = client_args::mount_options(&options) {
            a.push(o);
        }
        a.push(eq_path("--mount-point", mount_point.path()));
        let index = a.len() - 1;
        let data = json!({
            "archive": archive.as_ref().map(ArchiveName::as_str),
            "mount_point": mount_point.path(),
            "options": options,
        });
        let mut parts = Parts::new(a, Output::Static(data));
        // A mount point is passed by name: fusermount resolves it itself.
        parts.confine = Some((index, "--mount-point", mount_point, false));
        parts
    }
}

/// The argv elements that carry a client's value: the only place one is quoted.
/// Each is a single `--flag=value` element whose value is a newtype's final form.
pub(crate) mod client_args {
    use std::ffi::OsString;

    use crate::domain::{ArchiveName, ArchivePath, DatabaseName, MountOptions};

    /// `--options=allow_other,uid=N,…` (borgmatic passes `-o` and the string to
    /// `borg mount`); `None` when no option is set. The string holds only what
    /// [`MountOptions::borg_options`] writes: allow-listed keys and checked numbers.
    pub fn mount_options(o: &MountOptions) -> Option<OsString> {
        o.borg_options().map(|s| format!("--options={s}").into())
    }
    /// `--data-source=NAME`: one configured database (a name holds no glob
    /// character; borgmatic matches it with `fnmatch`).
    pub fn data_source(d: &DatabaseName) -> OsString {
        format!("--data-source={}", d.as_str()).into()
    }
    /// `--archive=NAME` (borgmatic passes `REPO::NAME` to borg).
    pub fn archive(a: &ArchiveName) -> OsString {
        format!("--archive={}", a.as_str()).into()
    }
    /// `--match-archives=NAME` (borgmatic passes `--glob-archives NAME`; a name
    /// holds no glob character).
    pub fn match_archive(a: &ArchiveName) -> OsString {
        format!("--match-archives={}", a.as_str()).into()
    }
    /// `--path=pp:PATH`: borg receives `pp:PATH`, a literal path prefix.
    pub fn path(p: &ArchivePath) -> OsString {
        format!("--path=pp:{}", p.as_str()).into()
    }
}

fn args(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

/// `--flag=<path>`: a path can never be taken for an option.
pub(super) fn eq_path(flag: &str, value: &Path) -> OsString {
    let mut s = OsString::from(format!("{flag}="));
    s.push(value.as_os_str());
    s
}

#[cfg(test)]
mod tests;
