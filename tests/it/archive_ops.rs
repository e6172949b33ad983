//! Getting archives out in other forms, against real borg and borgmatic:
//! `archive/export-tar` (a tar file confined to the restore root like an extract),
//! `backup/restore-dumps` (database dumps back into a configured SQLite database),
//! `archive/extract` to an absolute destination inside the restore root, and
//! `repo/latest-stats` read with one borg call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::helpers::*;
use serde_json::{json, Value};

/// Every regular file below `dir`, by path relative to it, with its bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                let bytes = if t.is_file() {
                    std::fs::read(&p).unwrap()
                } else {
                    b"<link>".to_vec()
                };
                out.insert(rel, bytes);
            }
        }
    }
    out
}

/// Every entry (any type) below `dir`, for "nothing was written" checks.
fn entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

/// The regular files of a tar file, by member name, with their bytes (Python's
/// `tarfile`, an independent reader).
fn tar_files(tar: &Path) -> BTreeMap<String, Vec<u8>> {
    let script = "import sys, tarfile, json\n\
                  t = tarfile.open(sys.argv[1])\n\
                  print(json.dumps({m.name: t.extractfile(m).read().hex() for m in t.getmembers() if m.isfile()}))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "not a tar file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter()
        .map(|(k, hex)| {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (k, bytes)
        })
        .collect()
}

/// `tree(src)` with each path as borg stores it (the source's path, no leading `/`).
fn as_archived(src: &Path, files: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let rel = src.strip_prefix("/").unwrap();
    files
        .into_iter()
        .map(|(k, v)| (rel.join(k).display().to_string(), v))
        .collect()
}

/// The members of a tar file below `src` (an archive also holds borgmatic's own
/// files: its configuration and manifest).
fn only_below(src: &Path, files: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let prefix = format!("{}/", src.strip_prefix("/").unwrap().display());
    files
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect()
}

fn error_code(resp: &Value) -> String {
    resp["error"]["code"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_tar_writes_the_archive_as_a_tar_file_inside_the_restore_root_only() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let src = repos.source("nc");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("sub/b.bin"), (0..=255u8).collect::<Vec<_>>()).unwrap();
    let worker = TestApp::spawn(&broker, &repos, &[]).await;
    let c = subscribed(&broker, &worker.base).await;
    let base = worker.base.clone();
    let archive = c.backup_archive(&base, "nc").await;
    let root = repos.restore_root();
    let real_root = root.canonicalize().unwrap();

    // The whole archive: names and bytes equal the source's.
    let res = c
        .run_job_ok(
            &base,
            "archive/export-tar",
            json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive,
                   "destination": "exports/all.tar"}),
        )
        .await;
    let tar = real_root.join("exports/all.tar");
    assert_eq!(res["data"]["destination"], json!(tar), "{res}");
    assert_eq!(res["data"]["archive"], json!(archive));
    assert_eq!(
        only_below(&src, tar_files(&tar)),
        as_archived(&src, tree(&src))
    );

    // Only one path of it, to an absolute destination inside the root (the form the
    // answer gives back).
    let rel = src.strip_prefix("/").unwrap().display().to_string();
    let sub_tar = real_root.join("exports/sub.tar");
    c.run_job_ok(
        &base,
        "archive/export-tar",
        json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive,
                   "destination": sub_tar, "paths": [format!("/{rel}/sub")]}),
    )
    .await;
    let mut want = as_archived(&src.join("sub"), tree(&src.join("sub")));
    assert_eq!(want.len(), 2);
    assert_eq!(tar_files(&sub_tar), std::mem::take(&mut want));
    assert!(tar_files(&sub_tar)
        .keys()
        .all(|k| k.starts_with(&format!("{rel}/sub/"))));

    // Refusals: traversal, leaving the root, options, links, existing files, a
    // name that is no tar file. Each is `invalid`, no job starts, nothing is written.
    let outside = repos.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    std::fs::create_dir(root.join("real")).unwrap();
    std::os::unix::fs::symlink(root.join("real"), root.join("in")).unwrap();
    std::os::unix::fs::symlink(outside.join("dangling.tar"), root.join("dangling.tar")).unwrap();
    let before_root = entries(&root);
    let before_tar = std::fs::read(&tar).unwrap();
    let outside_path = outside.join("x.tar").display().to_string();
    let through_link = format!("{}/out/x.tar", real_root.display());
    for (destination, why) in [
        ("../x.tar", "traversal"),
        ("exports/../../x.tar", "traversal"),
        (outside_path.as_str(), "outside the root"),
        ("/etc/x.tar", "outside the root"),
        (through_link.as_str(), "an absolute path through a link"),
        ("out/x.tar", "a parent that links outside"),
        ("in/x.tar", "a parent that links inside"),
        ("-", "stdout"),
        ("-x.tar", "an option"),
        ("exports/--help.tar", "an option"),
        ("exports/all.tar", "an existing file"),
        ("dangling.tar", "a dangling link"),
        ("exports/x.tgz", "not a tar file"),
        (".tar", "not a tar file"),
    ] {
        let resp = c
            .request(
                &base,
                "archive/export-tar",
                json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive,
                       "destination": destination}),
            )
            .await;
        assert_eq!(error_code(&resp), "invalid", "{why}: {destination}: {resp}");
        assert!(resp["job_id"].is_null(), "{why}: a job started: {resp}");
    }
    assert_eq!(
        entries(&root),
        before_root,
        "something was written in the root"
    );
    assert!(
        entries(&outside).is_empty(),
        "something was written outside"
    );
    assert_eq!(
        std::fs::read(&tar).unwrap(),
        before_tar,
        "a file was overwritten"
    );
    let resp = c
        .request(
            &base,
            "archive/export-tar",
            json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive,
                   "destination": "x.tar", "paths": ["--help"]}),
        )
        .await;
    assert_eq!(error_code(&resp), "invalid", "{resp}");
    // The read role is not enough.
    let resp = c
        .request(
            &base,
            "archive/export-tar",
            json!({"token": READ_TOKEN, "repository": "nc", "archive": archive,
                   "destination": "r.tar"}),
        )
        .await;
    assert_eq!(error_code(&resp), "forbidden", "{resp}");

    // A failed export (no such archive) leaves no file behind.
    let res = c
        .run_job(
            &base,
            "archive/export-tar",
            json!({"token": WRITE_TOKEN, "repository": "nc", "archive": "no-such-archive",
                   "destination": "exports/missing.tar"}),
        )
        .await;
    assert_eq!(res["state"], "failed", "{res}");
    assert!(!root.join("exports/missing.tar").exists());
    assert_no_secrets("published payloads", &c.all_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn extract_accepts_an_absolute_destination_inside_the_restore_root() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").app().await;
    let archive = c.backup_archive(&worker.base, "nc").await;
    let src = repos.source("nc");
    let root = repos.restore_root();
    let extract = |destination: Value| {
        json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive,
               "destination": destination})
    };

    let first = c
        .run_job_ok(&worker.base, "archive/extract", extract(json!("one")))
        .await;
    let dest = first["data"]["destination"].as_str().unwrap().to_string();
    assert!(Path::new(&dest).is_absolute(), "{first}");

    // The answer's own destination, passed back, and a directory below it; also
    // the root as configured (not canonical).
    let as_configured = root.join("three").display().to_string();
    for (destination, dir) in [
        (dest.clone(), PathBuf::from(&dest)),
        (format!("{dest}/two"), PathBuf::from(&dest).join("two")),
        (as_configured, root.join("three")),
    ] {
        let res = c
            .run_job(&worker.base, "archive/extract", extract(json!(destination)))
            .await;
        assert_eq!(res["state"], "succeeded", "{destination}: {res}");
        let restored = dir.join(src.strip_prefix("/").unwrap());
        assert_eq!(tree(&restored), tree(&src), "{destination}");
    }

    // Outside the root, the root itself, traversal, and a link on the way: refused.
    let outside = repos.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    let before = entries(&root);
    let root_s = root.display().to_string();
    for destination in [
        outside.display().to_string(),
        "/tmp".to_string(),
        root_s.clone(),
        format!("{root_s}/../outside"),
        format!("{root_s}/out/x"),
        format!("{root_s}x/y"),
    ] {
        let resp = c
            .request(&worker.base, "archive/extract", extract(json!(destination)))
            .await;
        assert_eq!(error_code(&resp), "invalid", "{destination}: {resp}");
    }
    assert_eq!(entries(&root), before);
    assert!(
        entries(&outside).is_empty(),
        "something was written outside"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_dumps_brings_a_configured_sqlite_database_back() {
    let dbdir = tempfile::tempdir().unwrap();
    let db = dbdir.path().join("app.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\
             INSERT INTO notes (body) VALUES ('first'), ('second');",
        )
        .unwrap();
    }
    let read = |db: &Path| -> Vec<String> {
        let conn = rusqlite::Connection::open(db).unwrap();
        let mut st = conn.prepare("SELECT body FROM notes ORDER BY id").unwrap();
        st.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(read(&db), ["first", "second"]);
    let hook = format!(
        "sqlite_databases:\n  - name: app\n    path: {}\n",
        db.display()
    );
    let Scenario {
        broker: _broker,
        repos: _repos,
        worker,
        client: c,
    } = Scenario::new()
        .repo_with("nc", &hook)
        .repo("plain")
        .admin()
        .app()
        .await;
    let archive = c.backup_archive(&worker.base, "nc").await;

    // The database changes, then goes away altogether.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("DELETE FROM notes WHERE body = 'first';")
            .unwrap();
    }
    assert_eq!(read(&db), ["second"]);
    std::fs::remove_file(&db).unwrap();

    let jobs_before = c.job_count(&worker.base).await;
    // Refusals start nothing: a database the configuration does not name, a
    // pattern, hook options, a configuration without databases, the write role.
    for (token, label, body, code) in [
        (
            ADMIN_TOKEN,
            "nc",
            json!({"databases": ["other"]}),
            "invalid",
        ),
        (
            ADMIN_TOKEN,
            "nc",
            json!({"databases": ["app", "other"]}),
            "invalid",
        ),
        (ADMIN_TOKEN, "nc", json!({"databases": ["a*"]}), "invalid"),
        (
            ADMIN_TOKEN,
            "nc",
            json!({"databases": ["--hostname=x"]}),
            "invalid",
        ),
        (
            ADMIN_TOKEN,
            "nc",
            json!({"restore_path": "/tmp/x"}),
            "invalid",
        ),
        (ADMIN_TOKEN, "nc", json!({"hostname": "evil"}), "invalid"),
        (ADMIN_TOKEN, "plain", json!({}), "invalid"),
        (
            WRITE_TOKEN,
            "nc",
            json!({"databases": ["app"]}),
            "forbidden",
        ),
    ] {
        let mut b = json!({"token": token, "repository": label, "archive": archive});
        b.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        let resp = c.request(&worker.base, "backup/restore-dumps", b).await;
        assert_eq!(error_code(&resp), code, "{label} {body}: {resp}");
        assert!(resp["job_id"].is_null(), "{resp}");
    }
    let jobs_after = c.job_count(&worker.base).await;
    assert_eq!(jobs_after, jobs_before, "a refused request started a job");
    assert!(!db.exists(), "a refused request restored something");

    let res = c
        .run_job_ok(
            &worker.base,
            "backup/restore-dumps",
            json!({"token": ADMIN_TOKEN, "repository": "nc", "archive": archive,
                   "databases": ["app"]}),
        )
        .await;
    assert_eq!(res["data"]["databases"], json!(["app"]), "{res}");
    assert_eq!(read(&db), ["first", "second"]);

    // Without `databases`: every dump in the archive.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("DROP TABLE notes;").unwrap();
    }
    c.run_job_ok(
        &worker.base,
        "backup/restore-dumps",
        json!({"token": ADMIN_TOKEN, "repository": "nc", "archive": archive}),
    )
    .await;
    assert_eq!(read(&db), ["first", "second"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_stats_names_the_newest_archive_and_fails_without_one() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").repo("empty").app().await;
    let latest = |label: &str| {
        let label = label.to_string();
        let c = &c;
        let base = worker.base.clone();
        async move {
            c.run_job(
                &base,
                "repo/latest-stats",
                json!({"token": READ_TOKEN, "repository": label}),
            )
            .await
        }
    };
    let res = latest("empty").await;
    assert_eq!(res["state"], "failed", "{res}");
    assert!(
        res["error"].as_str().unwrap_or("").contains("no archives"),
        "{res}"
    );

    c.backup_archive(&worker.base, "nc").await;
    std::fs::write(repos.source("nc").join("more.txt"), "more\n").unwrap();
    let newest = c.backup_archive(&worker.base, "nc").await;
    let res = latest("nc").await;
    assert_eq!(res["state"], "succeeded", "{res}");
    assert_eq!(res["data"]["archive"]["name"], json!(newest), "{res}");
    assert!(
        res["data"]["archive"]["stats"]["nfiles"].as_u64() >= Some(3),
        "{res}"
    );
    assert!(res["data"]["repository"]["location"].is_string(), "{res}");
    assert!(res["data"]["cache"]["stats"].is_object(), "{res}");

    // The same figures as borgmatic's own `info --archive latest`.
    let out = repos
        .borgmatic(
            &repos.config_dir().join("nc.yaml"),
            &["info", "--json", "--archive", "latest"],
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    let direct: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(res["data"]["archive"], direct[0]["archives"][0]);
}
