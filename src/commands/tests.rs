//! Parsing every command from the table: defaults, refusals, raised roles.
//!
//! Test code: may import any module (`scripts/import-cycles` counts production code only).

use serde_json::{json, Value};

use super::response::{ApiError, ErrorCode};
use super::*;
use crate::domain::{RepositoryLabel, Role};

fn parse(name: &str, v: Value) -> Result<Command, ApiError> {
    let Value::Object(m) = v else { panic!() };
    Command::parse(CommandName::parse(name).unwrap(), m)
}

#[test]
fn backup_run_defaults() {
    let c = parse("backup/run", json!({"repository": "nc"})).unwrap();
    assert_eq!(
        c,
        Command::BackupRun(backup::Run {
            repository: RepositoryLabel::parse("nc").unwrap(),
            dry_run: false,
            stats: true,
            progress: true
        })
    );
}

/// Long on purpose: one row per refused request, so a new command adds its rows here.
#[test]
fn unknown_fields_wrong_types_and_traversal_are_invalid() {
    for (name, body) in [
        ("backup/run", json!({"repository": "nc", "extra": 1})),
        ("backup/run", json!({"repository": "nc", "dry_run": "yes"})),
        ("backup/run", json!({"repository": "../etc/passwd"})),
        ("backup/run", json!({"repository": "nc; rm -rf /"})),
        ("backup/run", json!({"repository": 7})),
        ("backup/run", json!({})),
        ("archive/list", json!({"repository": "nc", "last": -1})),
        ("job/get", json!({"job_id": "x"})),
        ("job/list", json!({"state": "bogus"})),
        (
            "archive/extract",
            json!({"repository": "nc", "archive": "a", "destination": "../x"}),
        ),
        (
            "archive/extract",
            json!({"repository": "nc", "archive": "a", "destination": "/etc/../x"}),
        ),
        (
            "archive/export-tar",
            json!({"repository": "nc", "archive": "a", "destination": "-"}),
        ),
        (
            "archive/export-tar",
            json!({"repository": "nc", "archive": "a", "destination": "../x.tar"}),
        ),
        (
            "archive/export-tar",
            json!({"repository": "nc", "archive": "a", "destination": "x.tar", "paths": ["-x"]}),
        ),
        (
            "backup/restore-dumps",
            json!({"repository": "nc", "archive": "a", "databases": ["app*"]}),
        ),
        (
            "backup/restore-dumps",
            json!({"repository": "nc", "archive": "a", "databases": ["--hostname=evil"]}),
        ),
        (
            "backup/restore-dumps",
            json!({"repository": "nc", "archive": "a", "hostname": "evil"}),
        ),
        (
            "archive/extract",
            json!({"repository": "nc", "archive": "a", "destination": "x", "paths": ["../../etc"]}),
        ),
        (
            "archive/extract",
            json!({"repository": "nc", "archive": "--help", "destination": "x"}),
        ),
        (
            "archive/mount",
            json!({"repository": "nc", "mount_point": "a/../../b"}),
        ),
        ("repo/check", json!({"repository": "nc", "repair": "yes"})),
        (
            "key/change-passphrase",
            json!({"repository": "nc", "new_passphrase": "short"}),
        ),
        ("config/list", json!({"x": 1})),
        (
            "container/exec",
            json!({"container": "x", "command": "sh -c id"}),
        ),
        ("container/exec", json!({"container": "x", "command": []})),
        (
            "container/exec",
            json!({"container": "../x", "command": ["/a"]}),
        ),
        (
            "container/exec",
            json!({"container": "x", "command": ["/a"], "env": {"A": 1}}),
        ),
        ("aio/backup", json!({"check": "yes"})),
        ("aio/backup", json!({"check": true, "backup": true})),
        ("aio/backup", json!({"backup": false})),
        ("ssh-key/show", json!({"name": "../id_rsa"})),
        ("backup/verify", json!({"repository": "nc", "sample": 0})),
        (
            "backup/verify",
            json!({"repository": "nc", "max_bytes": -1}),
        ),
        (
            "ssh-key/create",
            json!({"name": "k", "passphrase": "short"}),
        ),
        (
            "net/tcp-check",
            json!({"host": "-oProxyCommand=x", "port": 22}),
        ),
        ("net/tcp-check", json!({"host": "h", "port": 70000})),
        ("emergency/stop", json!({"restart_aio": "yes"})),
        (
            "archive/list",
            json!({"repository": "nc", "source": "elsewhere"}),
        ),
        ("archive/delete", json!({"repository": "nc"})),
        (
            "archive/delete",
            json!({"repository": "nc", "archive": "latest"}),
        ),
        (
            "archive/delete",
            json!({"repository": "nc", "archive": "a*"}),
        ),
        (
            "archive/delete",
            json!({"repository": "nc", "archive": "-a"}),
        ),
        (
            "archive/delete",
            json!({"repository": "nc", "archive": "a", "match_archives": "*"}),
        ),
        (
            "repo/create",
            json!({"repository": "nc", "encryption": "--other-repo=/x"}),
        ),
        (
            "repo/create",
            json!({"repository": "nc", "encryption": "Repokey"}),
        ),
        ("key/export", json!({"repository": "nc", "path": "/tmp/k"})),
        ("key/export", json!({"repository": "nc", "paper": "yes"})),
    ] {
        let err = parse(name, body.clone()).unwrap_err();
        assert_eq!(err.code, ErrorCode::Invalid, "{name} {body}");
    }
}

#[test]
fn repair_needs_admin() {
    let c = parse("repo/check", json!({"repository": "nc", "repair": true})).unwrap();
    assert_eq!(c.role(), Role::Admin);
    let c = parse("repo/check", json!({"repository": "nc"})).unwrap();
    assert_eq!(c.role(), Role::Write);
}

#[test]
fn the_admin_operations_need_admin_and_hold_their_repository() {
    use crate::domain::EncryptionMode;
    for (name, body) in [
        (
            "archive/delete",
            json!({"repository": "nc", "archive": "a1"}),
        ),
        ("repo/create", json!({"repository": "nc"})),
        ("key/export", json!({"repository": "nc"})),
    ] {
        let c = parse(name, body).unwrap();
        assert_eq!(c.role(), Role::Admin, "{name}");
        assert_eq!(c.repository().map(|r| r.as_str()), Some("nc"), "{name}");
    }
    let c = parse(
        "repo/create",
        json!({"repository": "nc", "encryption": "keyfile-blake2"}),
    )
    .unwrap();
    let Command::RepoCreate(f) = c else { panic!() };
    assert_eq!(f.encryption, Some(EncryptionMode::KeyfileBlake2));
}

#[test]
fn a_refused_passphrase_is_not_echoed() {
    let err = parse(
        "key/change-passphrase",
        json!({"repository": "nc", "new_passphrase": "abc\u{1}def-secret"}),
    )
    .unwrap_err();
    assert!(!err.message.contains("def-secret"), "{}", err.message);
}

#[test]
fn every_name_round_trips() {
    for n in CommandName::ALL {
        assert_eq!(CommandName::parse(n.as_str()), Some(*n));
    }
    assert_eq!(CommandName::parse("backup/../run"), None);
}

#[test]
fn a_button_press_is_the_same_command_as_its_request() {
    let nc = || RepositoryLabel::parse("nc").unwrap();
    let job = crate::domain::JobId::new();
    for (action, name, body) in [
        ("run", "backup/run", json!({"repository": "nc"})),
        ("verify", "backup/verify", json!({"repository": "nc"})),
        ("check", "repo/check", json!({"repository": "nc"})),
        ("prune", "repo/prune", json!({"repository": "nc"})),
        ("cancel", "job/cancel", json!({"job_id": job.to_string()})),
    ] {
        let press = Press::parse(action).unwrap();
        assert_eq!(press.as_str(), action);
        let typed = press.command(nc(), Some(job)).unwrap();
        assert_eq!(typed.name(), press.name());
        assert_eq!(typed, parse(name, body).unwrap(), "{action}");
        assert!(
            typed.role() <= Role::Write,
            "{action} stays within the write role"
        );
    }
    assert!(Press::parse("delete").is_none());
    let refused = Press::Cancel.command(nc(), None).unwrap_err();
    assert_eq!(refused, "no job runs on nc");
}
