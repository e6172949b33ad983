//! THE argv builder for borgmatic: every borgmatic argv and environment is made
//! here from an [`Action`], and nowhere else.
//!
//! Client values enter the argv only through [`client_args`], each as a single
//! `--flag=value` element (see the module header of [`super`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::outcome::Output;
use super::task::{BorgmaticTask, Confinement};
use super::{Action, Borgmatic, JobSecrets};
use crate::command::{ArchiveName, ArchivePath};
use crate::config::Secret;
use crate::exec::process::ProcessSpec;
use crate::exec::roots::Confined;

impl Borgmatic {
    pub(super) fn task_for(
        &self,
        config: PathBuf,
        secrets: &JobSecrets,
        action: Action,
    ) -> BorgmaticTask {
        let mut global: Vec<OsString> = vec![eq_path("--config", &config)];
        // The directory re-checked when the job starts: (its argv index, flag, dir).
        let mut confine: Option<(usize, &'static str, Confined, bool)> = None;
        let mut env: Vec<(String, Secret)> = Vec::new();
        if let Some(p) = &secrets.borg {
            env.push(("BORG_PASSPHRASE".into(), p.clone()));
        }
        if let Some(p) = &secrets.ssh {
            let keys = crate::borg_config::ssh_identity_files(&config);
            env.extend(crate::askpass::env(p, &keys));
        }
        let (args, output): (Vec<OsString>, Output) = match action {
            Action::Create {
                dry_run,
                stats,
                progress,
            } => {
                if dry_run {
                    global.push("--dry-run".into());
                }
                let mut a = args(&["create", "--json"]);
                if stats {
                    a.push("--stats".into());
                }
                if progress {
                    a.push("--progress".into());
                }
                (a, Output::Create { dry_run })
            }
            Action::RepoList { last } => {
                let mut a = args(&["repo-list", "--json"]);
                if let Some(n) = last {
                    a.push(format!("--last={n}").into());
                }
                (a, Output::RepoList)
            }
            Action::Info { archive } => (
                vec![
                    "info".into(),
                    "--json".into(),
                    client_args::archive(&archive),
                ],
                Output::Json,
            ),
            Action::LatestStats => (
                args(&["info", "--json", "--archive=latest"]),
                Output::LatestStats,
            ),
            Action::RepoInfo => (args(&["repo-info", "--json"]), Output::Json),
            Action::Extract {
                archive,
                paths,
                destination,
            } => {
                let mut a = vec!["extract".into(), client_args::archive(&archive)];
                a.push(eq_path("--destination", destination.path()));
                confine = Some((a.len() - 1, "--destination", destination.clone(), true));
                for p in &paths {
                    a.push(client_args::path(p));
                }
                let data = json!({
                    "archive": archive.as_str(),
                    "destination": destination.path(),
                    "paths": paths.iter().map(ArchivePath::as_str).collect::<Vec<_>>(),
                });
                (a, Output::Static(data))
            }
            Action::Mount {
                archive,
                mount_point,
            } => {
                let mut a: Vec<OsString> = vec!["mount".into()];
                if let Some(archive) = &archive {
                    a.push(client_args::archive(archive));
                }
                a.push(eq_path("--mount-point", mount_point.path()));
                // A mount point is passed by name: fusermount resolves it itself.
                confine = Some((a.len() - 1, "--mount-point", mount_point.clone(), false));
                let data = json!({
                    "archive": archive.as_ref().map(ArchiveName::as_str),
                    "mount_point": mount_point.path(),
                });
                (a, Output::Static(data))
            }
            Action::Umount { mount_point } => {
                let data = json!({ "mount_point": mount_point.path() });
                let a = vec![
                    "umount".into(),
                    eq_path("--mount-point", mount_point.path()),
                ];
                confine = Some((1, "--mount-point", mount_point, false));
                (a, Output::Static(data))
            }
            Action::Check { repair } => {
                let mut a = args(&["check", "--force"]);
                if repair {
                    a.push("--repair".into());
                    // borg asks for confirmation of a repair; the admin role is ours.
                    env.push((
                        "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING".into(),
                        Secret::new("YES"),
                    ));
                }
                (a, Output::Static(json!({ "repair": repair })))
            }
            Action::Prune { dry_run } => {
                if dry_run {
                    global.push("--dry-run".into());
                }
                (
                    args(&["prune", "--list"]),
                    Output::Static(json!({ "dry_run": dry_run })),
                )
            }
            Action::Compact { dry_run } => {
                if dry_run {
                    global.push("--dry-run".into());
                }
                (
                    args(&["compact"]),
                    Output::Static(json!({ "dry_run": dry_run })),
                )
            }
            Action::BreakLock => (args(&["break-lock"]), Output::Static(json!({}))),
            Action::ChangePassphrase { new } => {
                env.push(("BORG_NEW_PASSPHRASE".into(), new));
                (
                    args(&["key", "change-passphrase"]),
                    Output::Static(json!({
                        "next_step": "update the passphrase the worker uses for this repository (repositories.<label>.passphrase or encryption_passphrase), or the next job fails"
                    })),
                )
            }
            Action::ValidateConfig => (args(&["config", "validate"]), Output::Static(json!({}))),
            Action::CheckArchive { archive, spot } => {
                let mut a = args(&["check", "--force", "--only", "archives"]);
                if spot {
                    a.extend(args(&["--only", "spot"]));
                }
                a.push(client_args::match_archive(&archive));
                (a, Output::Static(json!({})))
            }
            Action::ListFiles { archive } => (
                vec![
                    "list".into(),
                    client_args::archive(&archive),
                    "--json".into(),
                ],
                Output::Json,
            ),
        };
        if self.log_json {
            global.push("--log-json".into());
        }
        let confine = confine.map(|(i, flag, dir, pin)| Confinement {
            index: global.len() + i,
            flag,
            dir,
            pin,
        });
        global.extend(args);
        BorgmaticTask {
            spec: ProcessSpec {
                program: self.binary.clone(),
                args: global,
                env,
                capture_stdout: output.captures_stdout(),
                kill_grace: self.kill_grace,
            },
            output,
            runtime_root: self.runtime_root.clone(),
            log_json: self.log_json,
            restore_check: None,
            confine,
        }
    }
}

/// The argv elements that carry a client's value: the only place one is quoted.
/// Each is a single `--flag=value` element whose value is a newtype's final form.
pub(crate) mod client_args {
    use std::ffi::OsString;

    use crate::command::{ArchiveName, ArchivePath};

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
