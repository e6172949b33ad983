//! Reading borg's per-file warnings (errno, msgid and plain text) and the tally
//! a backup's result reports.
//!
//! Test code: may import any module (`scripts/import-cycles` counts production code only).

use super::*;

fn borg_record(message: &str) -> String {
    json!({"type": "log_message", "time": 1.0, "message": message,
               "levelname": "WARNING", "name": "borg.archiver"})
    .to_string()
}

#[test]
fn borg_1_2_permission_denied_as_emitted() {
    // Captured from borg 1.2.4 under borgmatic 2.1.10 --log-json, root without
    // CAP_DAC_READ_SEARCH.
    let line = r#"{"type": "log_message", "time": 1795578240.26, "message": "/tmp/h7x/src/nc/sub: dir_open: [Errno 13] Permission denied: 'sub'", "levelname": "WARNING", "name": "borg.archiver"}"#;
    assert_eq!(
        classify(line, true),
        Some(FileIssue::Skipped {
            path: "/tmp/h7x/src/nc/sub".into(),
            reason: Reason::PermissionDenied,
            error: "dir_open: [Errno 13] Permission denied: 'sub'".into(),
        })
    );
    // The same as plain text (borgmatic without --log-json).
    let text = "/tmp/h7x/src/nc/f1: open: [Errno 13] Permission denied: 'f1'";
    assert!(matches!(
        classify(text, false),
        Some(FileIssue::Skipped { reason: Reason::PermissionDenied, ref path, .. }) if path == "/tmp/h7x/src/nc/f1"
    ));
}

#[test]
fn reasons_from_errno_msgid_and_text() {
    let vanished = borg_record("/s/a: stat: [Errno 2] No such file or directory: 'a'");
    assert!(matches!(
        classify(&vanished, true),
        Some(FileIssue::Skipped {
            reason: Reason::Vanished,
            ..
        })
    ));
    let eio = borg_record("/s/b: read: [Errno 5] Input/output error");
    assert!(matches!(
        classify(&eio, true),
        Some(FileIssue::Skipped {
            reason: Reason::IoError,
            ..
        })
    ));
    let root = borg_record("/s: [Errno 13] Permission denied: '/s'");
    assert!(
        matches!(classify(&root, true), Some(FileIssue::Skipped { ref path, reason: Reason::PermissionDenied, .. }) if path == "/s")
    );
    let xattrs = borg_record("/s/c: extended stat (xattrs): [Errno 1] Operation not permitted");
    assert!(
        matches!(classify(&xattrs, true), Some(FileIssue::Skipped { ref path, .. }) if path == "/s/c")
    );
    let race = borg_record("/s/d: file inode changed (race condition), skipping file");
    assert!(matches!(
        classify(&race, true),
        Some(FileIssue::Skipped {
            reason: Reason::RaceCondition,
            ..
        })
    ));
    let changed = borg_record("/s/e: file changed while we backed it up");
    assert_eq!(
        classify(&changed, true),
        Some(FileIssue::Changed {
            path: "/s/e".into()
        })
    );
    // borg 1.4 names the class.
    let v14 = json!({"type": "log_message", "message": "/s/f: open: [Errno 13] Permission denied: 'f'",
                         "levelname": "WARNING", "name": "borg.archiver", "msgid": "BackupPermissionWarning"})
        .to_string();
    assert!(matches!(
        classify(&v14, true),
        Some(FileIssue::Skipped {
            reason: Reason::PermissionDenied,
            ..
        })
    ));
    // A path with ": " in it keeps it.
    let odd = borg_record("/s/x: y/z: open: [Errno 13] Permission denied: 'z'");
    assert!(
        matches!(classify(&odd, true), Some(FileIssue::Skipped { ref path, .. }) if path == "/s/x: y/z")
    );
}

#[test]
fn other_records_are_not_files() {
    for line in [
            json!({"type": "log_message", "message": "Treating exit code 1 as a warning, as per borgmatic defaults",
                   "levelname": "WARNING", "name": "borgmatic.execute"}).to_string(),
            // borgmatic's own errors are failures, not skipped files.
            json!({"type": "log_message", "message": "[Errno 30] Read-only file system: '/root/.local'",
                   "levelname": "CRITICAL", "name": "borgmatic.commands.borgmatic"}).to_string(),
            borg_record("Remote: Warning: Permanently added '[127.0.0.1]:2222' to known hosts"),
            json!({"type": "archive_progress", "path": "/s/a: [Errno 13] x", "finished": false}).to_string(),
        ] {
            assert_eq!(classify(&line, true), None, "{line}");
        }
}

#[test]
fn tally_counts_everything_and_keeps_the_first_paths() {
    let mut s = Skipped::default();
    for i in 0..25 {
        s.add(FileIssue::Skipped {
            path: format!("/s/{i}"),
            reason: Reason::PermissionDenied,
            error: "open: [Errno 13] Permission denied".into(),
        });
    }
    s.add(FileIssue::Skipped {
        path: "/s/gone".into(),
        reason: Reason::Vanished,
        error: "stat: [Errno 2]".into(),
    });
    s.add(FileIssue::Changed {
        path: "/s/log".into(),
    });
    let f = s.fields();
    assert_eq!(f["partial"], true);
    assert_eq!(f["skipped_files"], 26);
    assert_eq!(f["skipped_reasons"]["permission_denied"], 25);
    assert_eq!(f["skipped_reasons"]["vanished"], 1);
    assert_eq!(f["skipped"].as_array().unwrap().len(), KEEP_PATHS);
    assert_eq!(f["changed_files"], 1);
    let why = s.reason(Some("nas-1")).unwrap();
    assert!(
        why.contains("26") && why.contains("permission denied: 25") && why.contains("nas-1"),
        "{why}"
    );
    let clean = Skipped::default();
    assert_eq!(clean.fields()["partial"], false);
    assert_eq!(clean.fields()["skipped_files"], 0);
    assert!(clean.reason(None).is_none());
}

#[test]
fn a_python_traceback_is_not_a_skipped_file() {
    // borgmatic crashing after a failed borg: its last traceback line looks like
    // borg's `<path>: [Errno 2] …` but names an exception.
    let line = "FileNotFoundError: [Errno 2] No such file or directory: '/tmp/run/job-x/borgmatic/tmp2ew7rs2v'";
    assert_eq!(classify(line, true), None);
    assert_eq!(
        classify("OSError: [Errno 5] Input/output error", true),
        None
    );
    // A real file of that shape in plain text still counts.
    let real = "/srv/data/FileNotFoundError.txt: open: [Errno 13] Permission denied: 'FileNotFoundError.txt'";
    assert!(classify(real, true).is_some());
}
