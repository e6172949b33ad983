//! Property tests of the argv builders: for any string a client could send that a
//! parser accepts, the argv element made from it cannot be read as an option and
//! stays in its slot (one element, no NUL, no newline, no other control
//! character), in the form the next program hands on.
//!
//! Test code: may import any module (`scripts/import-cycles` counts production code only).

use std::ffi::OsString;

use proptest::collection::vec;
use proptest::prelude::*;

use super::borgmatic::{client_args, Action, Borgmatic, JobSecrets, Repository};
use super::roots;
use super::ssh::SshDestination;
use crate::domain::{
    ArchiveName, ArchivePath, DatabaseName, HostName, KeyName, MountOptions, RepositoryLabel,
    RestrictPath, RootPath, SubPath,
};

/// Strings an attacker would try: option look-alikes behind slashes, dots and
/// blanks, `=`-joined flags, control characters, glob and pattern syntax, and
/// arbitrary printable text.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "[-/ .a-z=:\t\n\r\0*?\\[\\]\\\\]{0,16}",
        "(/|\\./| |\t|\u{a0})*-{1,2}[a-z-]{0,12}(=[/a-z ]{0,8})?",
        "[a-z]{1,4}(/[-a-z ]{0,6}){0,3}",
        "(re|sh|pp|pf|fm|aid):[-a-z/*]{0,8}",
        "\\PC{0,24}",
        any::<String>(),
    ]
}

/// The value borg (or ssh) finally receives must not be an option nor hold a
/// character that ends or splits an argument.
fn clean(v: &str) -> Result<(), TestCaseError> {
    prop_assert!(!v.starts_with('-'), "{v:?} starts with '-'");
    prop_assert!(
        !v.starts_with(char::is_whitespace),
        "{v:?} starts with a blank"
    );
    prop_assert!(
        !v.chars().any(char::is_control),
        "{v:?} holds a control character"
    );
    Ok(())
}

fn text(a: &OsString) -> String {
    a.to_str().expect("argv is UTF-8").to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn archive_paths_reach_borg_as_literal_path_prefixes(s in hostile()) {
        if let Ok(p) = ArchivePath::parse(&s) {
            clean(p.as_str())?;
            let arg = text(&client_args::path(&p));
            // borgmatic passes what follows `--path=` to borg as a positional.
            let to_borg = arg.strip_prefix("--path=").expect("one --path= element");
            prop_assert_eq!(to_borg, format!("pp:{}", p.as_str()));
            prop_assert!(p.as_str().split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
        }
    }

    #[test]
    fn archive_names_are_never_options_nor_patterns(s in hostile()) {
        if let Ok(a) = ArchiveName::parse(&s) {
            clean(a.as_str())?;
            prop_assert!(!a.as_str().contains(['*', '?', '[', ']', '\\', '/']));
            prop_assert_eq!(text(&client_args::archive(&a)), format!("--archive={}", a.as_str()));
            prop_assert_eq!(
                text(&client_args::match_archive(&a)),
                format!("--match-archives={}", a.as_str())
            );
        }
    }

    #[test]
    fn names_hosts_and_ssh_destinations_are_never_options(s in hostile(), u in hostile()) {
        if let Ok(h) = HostName::parse(&s) {
            clean(h.as_str())?;
        }
        if let Ok(k) = KeyName::parse(&s) {
            clean(k.as_str())?;
        }
        if let Ok(l) = RepositoryLabel::parse(&s) {
            clean(l.as_str())?;
        }
        if let Ok(d) = SshDestination::new(Some(&u), &s) {
            let probe = super::ssh::SshProbe::new(
                std::path::Path::new("/k/id"), 22, std::path::Path::new("/k/kh"), d, false,
            ).expect("absolute paths");
            let argv = probe.argv();
            let dd = argv.iter().position(|a| a == "--").expect("--");
            prop_assert_eq!(argv.len(), dd + 3, "the destination is one element");
            clean(&text(&argv[dd + 1]))?;
        }
    }

    #[test]
    fn database_names_reach_borgmatic_as_one_literal_name(s in hostile()) {
        if let Ok(d) = DatabaseName::parse(&s) {
            clean(d.as_str())?;
            prop_assert!(!d.as_str().contains(['*', '?', '[', ']']), "{:?} is a pattern", d);
            let arg = text(&client_args::data_source(&d));
            prop_assert_eq!(arg.strip_prefix("--data-source="), Some(d.as_str()));
        }
    }

    #[test]
    fn root_paths_never_name_anything_outside_their_root(s in hostile(), abs in any::<bool>()) {
        let s = if abs { format!("/restore/{s}") } else { s };
        if let Ok(p) = RootPath::parse(&s) {
            let root = std::path::Path::new("/restore");
            if let Some(sub) = p.below(&[root]) {
                let joined = root.join(sub.as_str());
                prop_assert!(joined.starts_with(root) && joined != root, "{:?}", joined);
                prop_assert!(joined.components().all(|c| matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )), "{:?}", joined);
                for c in sub.as_str().split('/') {
                    clean(c)?;
                }
            }
        }
    }

    #[test]
    fn a_whole_extract_argv_keeps_every_client_value_in_its_slot(
        archive in hostile(),
        paths in vec(hostile(), 0..4),
        dest in hostile(),
    ) {
        let (Ok(archive), Ok(dest)) = (ArchiveName::parse(&archive), SubPath::parse(&dest)) else {
            return Ok(());
        };
        let paths: Vec<ArchivePath> = paths.iter().filter_map(|p| ArchivePath::parse(p).ok()).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("restore");
        std::fs::create_dir(&root).expect("root");
        let Ok(destination) = roots::resolve_below(&root, &dest) else {
            // e.g. a component longer than the file system allows
            return Ok(());
        };
        prop_assert!(destination.path().starts_with(root.canonicalize().expect("root")));
        let b = Borgmatic::for_tests(dir.path());
        let repo = Repository {
            label: RepositoryLabel::parse("nc").expect("label"),
            config: dir.path().join("nc.yaml"),
        };
        let task = b.task(&repo, &JobSecrets::default(), Action::Extract {
            archive: archive.clone(),
            paths: paths.clone(),
            destination: destination.clone(),
        });
        let argv: Vec<String> = task.args().iter().map(text).collect();
        let fixed = ["--log-json", "extract"];
        let mut from_client = 0;
        for a in &argv {
            prop_assert!(!a.chars().any(char::is_control), "{a:?}");
            if fixed.contains(&a.as_str()) {
                continue;
            }
            let (flag, value) = a.split_once('=').expect("every other element is --flag=value");
            match flag {
                "--config" => prop_assert_eq!(value, repo.config.to_str().expect("utf-8")),
                "--destination" => prop_assert_eq!(value, destination.path().to_str().expect("utf-8")),
                "--archive" => {
                    prop_assert_eq!(value, archive.as_str());
                    clean(value)?;
                    from_client += 1;
                }
                "--path" => {
                    let p = value.strip_prefix("pp:").expect("pp: prefix");
                    prop_assert!(paths.iter().any(|q| q.as_str() == p));
                    clean(p)?;
                    from_client += 1;
                }
                other => prop_assert!(false, "unexpected element {other:?}"),
            }
        }
        prop_assert_eq!(from_client, 1 + paths.len(), "a value split or vanished: {:?}", argv);
        prop_assert_eq!(argv.len(), 5 + paths.len());
    }

    #[test]
    fn a_delete_always_names_one_literal_archive(s in hostile()) {
        let Ok(archive) = ArchiveName::parse(&s) else { return Ok(()) };
        let dir = tempfile::tempdir().expect("tempdir");
        let b = Borgmatic::for_tests(dir.path());
        let repo = Repository {
            label: RepositoryLabel::parse("nc").expect("label"),
            config: dir.path().join("nc.yaml"),
        };
        let task = b.task(&repo, &JobSecrets::default(), Action::DeleteArchive { archive: archive.clone() });
        let argv: Vec<String> = task.args().iter().map(text).collect();
        // borgmatic deletes the whole repository when no archive is named, and
        // borg 1.2 reads the name as a glob: exactly one `--archive=` holding a
        // name with no glob or pattern syntax.
        prop_assert_eq!(argv.len(), 4, "{:?}", argv);
        prop_assert_eq!(&argv[1..3], &["--log-json".to_string(), "delete".to_string()]);
        let value = argv[3].strip_prefix("--archive=").expect("--archive=");
        prop_assert_eq!(value, archive.as_str());
        clean(value)?;
        prop_assert!(!value.contains(['*', '?', '[', ']', '/', '\\']), "{:?}", value);
    }

    #[test]
    fn mount_options_reach_borgmatic_as_one_allow_listed_element(
        allow_other in any::<bool>(),
        uid in proptest::option::of(any::<u32>()),
        gid in proptest::option::of(any::<u32>()),
        umask in proptest::option::of(prop_oneof!["[0-9]{0,5}".boxed(), hostile().boxed()]),
    ) {
        let body = serde_json::json!({
            "allow_other": allow_other, "uid": uid, "gid": gid, "umask": umask,
        });
        let Ok(o) = serde_json::from_value::<MountOptions>(body) else {
            return Ok(());
        };
        match client_args::mount_options(&o) {
            None => prop_assert!(!allow_other && uid.is_none() && gid.is_none() && umask.is_none()),
            Some(arg) => {
                let arg = text(&arg);
                let value = arg.strip_prefix("--options=").expect("one --options= element");
                clean(value)?;
                for opt in value.split(',') {
                    let (key, v) = opt.split_once('=').unwrap_or((opt, ""));
                    prop_assert!(["allow_other", "uid", "gid", "umask"].contains(&key), "{opt}");
                    prop_assert!(v.chars().all(|c| c.is_ascii_digit()), "{opt}");
                }
            }
        }
    }

    #[test]
    fn restrict_paths_hold_nothing_a_shell_or_sshd_reads(s in hostile()) {
        if let Ok(p) = RestrictPath::parse(&s) {
            clean(p.as_str())?;
            prop_assert!(p.as_str().starts_with('/'));
            prop_assert!(p.as_str().chars().all(|c| c.is_ascii_alphanumeric() || "/._-+@:,=".contains(c)));
            prop_assert!(p.as_str().split('/').skip(1).all(|c| c != ".." && !c.is_empty()));
        }
    }
}
