//! Option injection, tried as an attacker would, over MQTT and HTTP: every command
//! field that reaches an argv (borgmatic → borg → ssh, ssh itself, docker exec) gets
//! option look-alikes (also behind `/`, `./`, blanks and newlines), NUL and other
//! control characters. Each must be answered `invalid`, start no job, write
//! nothing (a planted `--debug-profile` target stays absent, the repository's
//! `config` unchanged) and leave the worker answering. A legitimate path with a dash
//! inside still extracts.

use std::path::{Path, PathBuf};

use crate::helpers::*;
use serde_json::{json, Value};

/// One request over one transport: the answer's `error.code` (or `"ok"`).
async fn code(
    c: &Client,
    url: &str,
    base: &str,
    over_http: bool,
    cmd: &str,
    body: Value,
) -> String {
    if over_http {
        let (status, v) = post_cmd(url, cmd, Some(ADMIN_TOKEN), body.clone()).await;
        let code = v["error"]["code"].as_str().unwrap_or("ok").to_string();
        if code == "invalid" {
            assert_eq!(
                status,
                reqwest::StatusCode::BAD_REQUEST,
                "{cmd} {body}: {v}"
            );
        }
        code
    } else {
        let mut body = body;
        body["token"] = json!(ADMIN_TOKEN);
        let v = c.request(base, cmd, body).await;
        v["error"]["code"].as_str().unwrap_or("ok").to_string()
    }
}

fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Values that must never reach an argv, for a field holding `good` otherwise.
fn hostile(planted: &Path) -> Vec<String> {
    let p = planted.display();
    vec![
        "-x".into(),
        "--debug-profile=/tmp/p".into(),
        format!("--debug-profile={p}"),
        format!("/--debug-profile={p}"),
        format!("//--debug-profile={p}"),
        format!("/--rsh=sh -c 'touch {p}' x"),
        "./-x".into(),
        "a\n--x".into(),
        "a\0b".into(),
        "x\u{1b}[2J".into(),
        " -x".into(),
        "\t--x".into(),
        "/ --x".into(),
        "-".into(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_field_that_reaches_an_argv_refuses_option_lookalikes_over_both_transports() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let key_dir = repos.dir.path().join("keys");
    let key_dir_s = key_dir.display().to_string();
    let (worker, url) = start_with_http(
        &broker,
        &repos,
        &[
            WITH_ADMIN,
            ("BMQTT_SSH__KEY_DIR", key_dir_s.as_str()),
            // Hundreds of attempts in a few seconds: the rate limit is not under test.
            ("BMQTT_LIMITS__READ_PER_MINUTE", "100000"),
            ("BMQTT_LIMITS__WRITE_PER_MINUTE", "100000"),
            ("BMQTT_LIMITS__ADMIN_PER_MINUTE", "100000"),
        ],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    let backup = c.backup_ok(&worker.base, "nc").await;
    let archive = backup["data"]["archive"].as_str().unwrap().to_string();
    c.request_ok(
        &worker.base,
        "ssh-key/create",
        json!({"token": ADMIN_TOKEN, "name": "k"}),
    )
    .await;

    let planted = repos.dir.path().join("planted-profile");
    let repo_config = repos.repo_path("nc").join("config");
    let config_before = std::fs::read(&repo_config).unwrap();
    let jobs_before = c.job_count(&worker.base).await;
    let watched: Vec<PathBuf> = vec![
        repos.restore_root(),
        repos.mount_root(),
        key_dir.clone(),
        repos.repo_path("nc"),
    ];
    let trees_before: Vec<Vec<String>> = watched.iter().map(|d| tree(d)).collect();

    // (command, a valid body, the fields to poison: values, then lists)
    let extract = json!({"repository": "nc", "archive": archive, "destination": "d"});
    let export = json!({"repository": "nc", "archive": archive, "destination": "d.tar"});
    let in_archive = json!({"repository": "nc", "archive": archive});
    let mount = json!({"repository": "nc", "archive": archive, "mount_point": "m"});
    let mount_point = json!({"repository": "nc", "mount_point": "m"});
    let repository = json!({"repository": "nc"});
    let ssh_test = json!({"name": "k", "host": "127.0.0.1"});
    let exec = json!({"container": "nextcloud-aio-nextcloud", "command": ["/bin/true"]});
    let none: &[&str] = &[];
    let cases: Vec<(&str, Value, &[&str], &[&str])> = vec![
        (
            "archive/extract",
            extract,
            &["archive", "destination", "repository"],
            &["paths"],
        ),
        (
            "archive/export-tar",
            export,
            &["archive", "destination"],
            &["paths"],
        ),
        (
            "backup/restore-dumps",
            in_archive.clone(),
            &["archive"],
            &["databases"],
        ),
        ("archive/info", in_archive.clone(), &["archive"], none),
        ("archive/mount", mount, &["archive"], none),
        ("archive/mount", mount_point.clone(), &["mount_point"], none),
        ("archive/umount", mount_point, &["mount_point"], none),
        ("backup/verify", in_archive.clone(), &["archive"], none),
        ("repo/info", repository.clone(), &["repository"], none),
        ("archive/delete", in_archive, &["archive"], none),
        (
            "repo/create",
            json!({"repository": "nc", "encryption": "repokey"}),
            &["encryption"],
            none,
        ),
        ("key/export", repository, &["repository"], none),
        ("ssh-key/test", ssh_test, &["name", "host"], none),
        ("ssh-key/delete", json!({"name": "k"}), &["name"], none),
        ("ssh-key/rotate", json!({"name": "k"}), &["name"], none),
        ("ssh-key/create", json!({"name": "k2"}), &["name"], none),
        (
            "net/tcp-check",
            json!({"host": "127.0.0.1", "port": 22}),
            &["host"],
            none,
        ),
        ("container/exec", exec, &["container"], none),
    ];
    let cases: Vec<(&str, &Value, &str, bool)> = cases
        .iter()
        .flat_map(|(cmd, body, values, lists)| {
            let values = values.iter().map(move |f| (*cmd, body, *f, false));
            values.chain(lists.iter().map(move |f| (*cmd, body, *f, true)))
        })
        .collect();
    let mut tried = 0;
    for over_http in [false, true] {
        for &(cmd, body, field, list) in &cases {
            for bad in hostile(&planted) {
                let mut b = body.clone();
                b[field] = if list { json!([bad]) } else { json!(bad) };
                let got = code(&c, &url, &worker.base, over_http, cmd, b).await;
                let transport = if over_http { "HTTP" } else { "MQTT" };
                assert_eq!(got, "invalid", "{transport} {cmd} {field}={bad:?}");
                tried += 1;
            }
        }
        // Fields of their own shape: an exec's program and environment names,
        // an IPv6-looking host whose brackets hide a dash.
        for (cmd, body) in [
            (
                "container/exec",
                json!({"container": "nextcloud-aio-nextcloud", "command": ["-x"]}),
            ),
            (
                "container/exec",
                json!({"container": "nextcloud-aio-nextcloud", "command": ["--help"]}),
            ),
            (
                "container/exec",
                json!({"container": "nextcloud-aio-nextcloud", "command": ["/bin/true"],
                       "env": {"A=B": "x"}}),
            ),
            (
                "container/exec",
                json!({"container": "nextcloud-aio-nextcloud", "command": ["/bin/true"],
                       "env": {"A": "x\ny"}}),
            ),
            (
                "net/tcp-check",
                json!({"host": "[-oProxyCommand=x]", "port": 22}),
            ),
            ("ssh-key/test", json!({"name": "k", "host": "[-x]"})),
            (
                "archive/extract",
                json!({"repository": "nc", "archive": "sh:*", "destination": "d"}),
            ),
            (
                "archive/extract",
                json!({"repository": "nc", "archive": "*", "destination": "d"}),
            ),
            (
                "archive/extract",
                json!({"repository": "nc", "archive": archive, "destination": "d",
                       "paths": ["ok", "-x"]}),
            ),
            (
                "archive/extract",
                json!({"repository": "nc", "archive": archive, "destination": "d/-x"}),
            ),
        ] {
            let got = code(&c, &url, &worker.base, over_http, cmd, body.clone()).await;
            assert_eq!(got, "invalid", "over_http={over_http} {cmd} {body}");
            tried += 1;
        }
    }
    assert!(tried > 400, "only {tried} attempts");

    // Nothing ran, nothing was written, and the worker still answers.
    assert_eq!(
        c.job_count(&worker.base).await,
        jobs_before,
        "a job was created"
    );
    assert!(!planted.exists(), "borg wrote the planted debug profile");
    assert_eq!(std::fs::read(&repo_config).unwrap(), config_before);
    for (d, before) in watched.iter().zip(&trees_before) {
        assert_eq!(&tree(d), before, "{} changed", d.display());
    }
    c.run_job_ok(
        &worker.base,
        "repo/info",
        json!({"token": READ_TOKEN, "repository": "nc"}),
    )
    .await;
    let status = http_client()
        .get(format!("{url}/api/v1/jobs"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success());
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_with_dashes_inside_still_extract_exactly() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let src = repos.source("nc");
    std::fs::create_dir_all(src.join("data")).unwrap();
    std::fs::write(src.join("data/my-file"), "mine\n").unwrap();
    std::fs::write(src.join("data/-odd"), "odd\n").unwrap();
    std::fs::write(src.join("data/re:x"), "pattern-looking\n").unwrap();
    let worker = Worker::start(&broker, &repos, &[]).await;
    let c = subscribed(&broker, &worker.base).await;
    let backup = c.backup_ok(&worker.base, "nc").await;
    let archive = backup["data"]["archive"].as_str().unwrap();
    let rel = src.strip_prefix("/").unwrap().display().to_string();
    let res = c
        .run_job_ok(
            &worker.base,
            "archive/extract",
            json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive,
                   "destination": "with-dashes/my-restore",
                   "paths": [format!("/{rel}/data/my-file"), format!("{rel}/data/-odd"),
                             format!("{rel}/data/re:x/")]}),
        )
        .await;
    let out = repos
        .restore_root()
        .join("with-dashes/my-restore")
        .join(&rel);
    assert_eq!(
        std::fs::read_to_string(out.join("data/my-file")).unwrap(),
        "mine\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("data/-odd")).unwrap(),
        "odd\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("data/re:x")).unwrap(),
        "pattern-looking\n"
    );
    assert!(
        !out.join("hello.txt").exists(),
        "paths did not limit the extract"
    );
    // The answer names the paths as the client meant them.
    assert_eq!(res["data"]["paths"][1], format!("{rel}/data/-odd"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_key_delete_and_rotate_touch_only_keys_the_worker_made() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let key_dir = repos.dir.path().join("dot-ssh");
    std::fs::create_dir(&key_dir).unwrap();
    // What a real ~/.ssh holds besides our keys.
    std::fs::write(
        key_dir.join("known_hosts"),
        "[127.0.0.1]:22 ssh-ed25519 AAAAC3Nz\n",
    )
    .unwrap();
    std::fs::write(key_dir.join("config"), "Host *\n  ServerAliveInterval 60\n").unwrap();
    std::fs::write(key_dir.join("authorized_keys"), "ssh-ed25519 AAAAC3Nz me\n").unwrap();
    std::fs::write(key_dir.join("notes"), "not a key\n").unwrap();
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "root@host", "-f"])
        .arg(key_dir.join("id_ed25519"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen failed");
    std::os::unix::fs::symlink(key_dir.join("id_ed25519"), key_dir.join("link")).unwrap();
    std::os::unix::fs::symlink(key_dir.join("id_ed25519.pub"), key_dir.join("link.pub")).unwrap();
    let key_dir_s = key_dir.display().to_string();
    let (worker, url) = start_with_http(
        &broker,
        &repos,
        &[WITH_ADMIN, ("BMQTT_SSH__KEY_DIR", key_dir_s.as_str())],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    let snapshot = || {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&key_dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let link = std::fs::read_link(e.path()).ok();
                let body = match link {
                    Some(l) => l.display().to_string().into_bytes(),
                    None => std::fs::read(e.path()).unwrap(),
                };
                (name, body)
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot();
    for over_http in [false, true] {
        for cmd in ["ssh-key/delete", "ssh-key/rotate"] {
            for name in [
                "known_hosts",
                "config",
                "authorized_keys",
                "notes",
                "id_ed25519",
                "id_ed25519.pub",
                "link",
                "absent",
            ] {
                let got = code(
                    &c,
                    &url,
                    &worker.base,
                    over_http,
                    cmd,
                    json!({"name": name}),
                )
                .await;
                assert!(
                    got == "invalid" || got == "not_found",
                    "over_http={over_http} {cmd} {name}: {got}"
                );
            }
        }
    }
    assert_eq!(
        snapshot(),
        before,
        "a refused request changed the key directory"
    );

    // A key the worker made is rotated and deleted as before.
    c.request_ok(
        &worker.base,
        "ssh-key/create",
        json!({"token": ADMIN_TOKEN, "name": "k"}),
    )
    .await;
    c.request_ok(
        &worker.base,
        "ssh-key/rotate",
        json!({"token": ADMIN_TOKEN, "name": "k"}),
    )
    .await;
    for name in ["k.old", "k"] {
        let del = code(
            &c,
            &url,
            &worker.base,
            true,
            "ssh-key/delete",
            json!({"name": name}),
        )
        .await;
        assert_eq!(del, "ok", "{name}");
    }
    assert_eq!(
        snapshot(),
        before,
        "deleting our keys touched something else"
    );
}
