//! Admin operations against real borg: `archive/delete`, `repo/create` and
//! `key/export` (what they change, what they refuse, and where a key may go).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::helpers::*;
use serde_json::{json, Value};

/// Waits for the start-up health report of each label: the probe holds the
/// repository briefly, and a request meanwhile would be `busy`.
async fn settled(c: &Client, base: &str, labels: &[&str]) {
    for label in labels {
        let topic = format!("{base}/repos/{label}/health");
        c.wait_for(move |m| m.topic == topic).await;
    }
}

fn listed(res: &Value) -> Vec<String> {
    let mut names: Vec<String> = res["data"]["archives"]
        .as_array()
        .unwrap_or_else(|| panic!("no archives: {res}"))
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A borgmatic config of `label` whose repository is not created.
fn config_only(repos: &Repos, label: &str, entry_extra: &str) {
    let src = repos.source(label);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        repos.config_dir().join(format!("{label}.yaml")),
        format!(
            "source_directories:\n  - {}\nrepositories:\n  - path: {}\n    label: {label}\n{entry_extra}keep_daily: 7\n",
            src.display(),
            repos.repo_path(label).display(),
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_exactly_one_archive_and_refuses_patterns_roles_and_a_busy_repository() {
    let broker = Broker::start();
    let repos = Repos::new();
    // A backup waits on this FIFO while it exists: a job that holds the repository
    // for as long as the test needs, released by an event, not a timer.
    let fifo = repos.dir.path().join("hold");
    repos.add(
        "nc",
        &format!(
            "commands:\n  - before: action\n    when: [create]\n    run:\n      - test ! -p {0} || cat {0} > /dev/null\n",
            fifo.display()
        ),
    );
    let worker = Worker::start(&broker, &repos, &[WITH_ADMIN]).await;
    let base = worker.base.clone();
    let c = subscribed(&broker, &worker.base).await;
    settled(&c, &base, &["nc"]).await;
    let first = c.backup_archive(&base, "nc").await;
    let second = c.backup_archive(&base, "nc").await;
    let delete = |token: &str, archive: &str| json!({"token": token, "repository": "nc", "archive": archive});

    // Refused before anything runs: the write role, option and pattern look-alikes,
    // `latest`, unknown fields.
    c.refused(
        &base,
        "archive/delete",
        delete(WRITE_TOKEN, &first),
        "forbidden",
    )
    .await;
    for bad in [
        "-a", "--help", "*", "nc-*", "a?", "[ab]", "sh:x*", "re:.*", "latest", "a/b",
    ] {
        let resp = c
            .request(&base, "archive/delete", delete(ADMIN_TOKEN, bad))
            .await;
        assert_eq!(resp["error"]["code"], "invalid", "{bad}: {resp}");
        assert!(resp.get("job_id").is_none(), "{bad}: {resp}");
    }
    let mut body = delete(ADMIN_TOKEN, &first);
    body["match_archives"] = json!("*");
    c.refused(&base, "archive/delete", body, "invalid").await;
    assert_eq!(repos.archives("nc").len(), 2, "a refusal deleted something");

    // While a backup holds the repository, a delete is `busy` and names it.
    mkfifo(&fifo);
    let holder = c.start_backup(&base, "nc").await;
    c.wait_state(&worker.base, &holder, "running").await;
    let busy = c
        .refused(&base, "archive/delete", delete(ADMIN_TOKEN, &first), "busy")
        .await;
    assert_eq!(busy["data"]["job_id"], holder, "{busy}");
    // Release the hook: opening the FIFO for writing waits for its reader.
    let f = fifo.clone();
    tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || {
            drop(std::fs::OpenOptions::new().write(true).open(&f).unwrap());
            std::fs::remove_file(&f).unwrap();
        }),
    )
    .await
    .expect("the holding backup never reached its hook")
    .unwrap();
    let held = c.job_result(&base, &holder).await;
    assert_eq!(held["state"], "succeeded", "{held}");
    let third = held["data"]["archive"].as_str().unwrap().to_string();
    assert_eq!(repos.archives("nc").len(), 3);

    // The delete itself: only that archive goes, the result says so and points
    // at repo/compact.
    let res = c
        .run_job_ok(&base, "archive/delete", delete(ADMIN_TOKEN, &first))
        .await;
    assert_eq!(res["data"]["archive"], first.as_str(), "{res}");
    assert!(
        res["data"]["next_step"]
            .as_str()
            .unwrap()
            .contains("repo/compact"),
        "{res}"
    );
    let list = c
        .run_job(
            &base,
            "archive/list",
            json!({"token": READ_TOKEN, "repository": "nc"}),
        )
        .await;
    let mut expected = vec![second.clone(), third.clone()];
    expected.sort();
    assert_eq!(listed(&list), expected, "{list}");
    let mut from_borg = repos.archives("nc");
    from_borg.sort();
    assert_eq!(from_borg, expected);

    // Again: it is gone, so the job fails cleanly and deletes nothing else.
    let again = c
        .run_job(&base, "archive/delete", delete(ADMIN_TOKEN, &first))
        .await;
    assert_eq!(again["state"], "failed", "{again}");
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("nothing was deleted"),
        "{again}"
    );
    let mut from_borg = repos.archives("nc");
    from_borg.sort();
    assert_eq!(from_borg, expected);
    assert!(repos.check("nc"));
    assert_no_secrets("published payloads", &c.all_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn create_makes_a_usable_repository_once_and_never_touches_an_existing_one() {
    let broker = Broker::start();
    let repos = Repos::new();
    config_only(&repos, "fresh", "");
    config_only(&repos, "cfgenc", "    encryption: repokey-blake2\n");
    let worker = Worker::start(&broker, &repos, &[WITH_ADMIN]).await;
    let base = worker.base.clone();
    let c = subscribed(&broker, &worker.base).await;
    settled(&c, &base, &["fresh", "cfgenc"]).await;
    let create = |token: &str, label: &str| json!({"token": token, "repository": label});

    // Refusals: the write role, an unknown mode or an option look-alike, and no
    // mode anywhere.
    c.refused(
        &base,
        "repo/create",
        create(WRITE_TOKEN, "fresh"),
        "forbidden",
    )
    .await;
    for bad in ["--other-repo=/x", "blake2", "REPOKEY", ""] {
        let mut body = create(ADMIN_TOKEN, "fresh");
        body["encryption"] = json!(bad);
        c.refused(&base, "repo/create", body, "invalid").await;
    }
    c.refused_saying(
        &base,
        "repo/create",
        create(ADMIN_TOKEN, "fresh"),
        "invalid",
        "encryption is required",
    )
    .await;
    assert!(!repos.repo_path("fresh").exists());

    // Created with the requested mode; a backup then succeeds.
    let mut body = create(ADMIN_TOKEN, "fresh");
    body["encryption"] = json!("repokey");
    let res = c.run_job_ok(&base, "repo/create", body.clone()).await;
    assert_eq!(res["data"]["encryption"], "repokey", "{res}");
    assert_eq!(res["data"]["created"], true, "{res}");
    let archive = c.backup_archive(&base, "fresh").await;
    assert_eq!(repos.archives("fresh"), vec![archive.clone()]);
    let info = repos.borg(&["info", "--json", repos.repo_path("fresh").to_str().unwrap()]);
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["encryption"]["mode"], "repokey", "{info}");

    // A second create is refused `conflict` at once; the repository is unchanged.
    let config_before = std::fs::read(repos.repo_path("fresh").join("config")).unwrap();
    for mode in ["repokey", "none"] {
        body["encryption"] = json!(mode);
        let resp = c
            .refused_saying(
                &base,
                "repo/create",
                body.clone(),
                "conflict",
                "already exists",
            )
            .await;
        assert!(resp.get("job_id").is_none(), "{resp}");
    }
    assert_eq!(
        std::fs::read(repos.repo_path("fresh").join("config")).unwrap(),
        config_before
    );
    assert_eq!(repos.archives("fresh"), vec![archive]);
    assert!(repos.check("fresh"));

    // With no mode in the request, the configuration's `encryption` decides.
    c.run_job_ok(&base, "repo/create", create(ADMIN_TOKEN, "cfgenc"))
        .await;
    let info = repos.borg(&[
        "info",
        "--json",
        repos.repo_path("cfgenc").to_str().unwrap(),
    ]);
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["encryption"]["mode"], "repokey-blake2", "{info}");
    assert_no_secrets("published payloads", &c.all_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exported_key_opens_a_copy_of_the_repository_and_never_reaches_mqtt_or_the_log() {
    let broker = Broker::start();
    let repos = Repos::new();
    config_only(&repos, "kf", "");
    let cfg = repos.config_dir().join("kf.yaml");
    let out = repos
        .borgmatic(&cfg, &["repo-create", "--encryption", "keyfile-blake2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let worker = Worker::start(&broker, &repos, &[WITH_ADMIN]).await;
    let base = worker.base.clone();
    let c = subscribed(&broker, &worker.base).await;
    settled(&c, &base, &["kf"]).await;
    let archive = c.backup_archive(&base, "kf").await;
    let export = |token: &str| json!({"token": token, "repository": "kf"});

    c.refused(&base, "key/export", export(WRITE_TOKEN), "forbidden")
        .await;
    let mut body = export(ADMIN_TOKEN);
    body["path"] = json!("/tmp/stolen.key");
    let resp = c.request(&base, "key/export", body).await;
    assert_eq!(
        resp["error"]["code"], "invalid",
        "a client named the file: {resp}"
    );

    let res = c.run_job_ok(&base, "key/export", export(ADMIN_TOKEN)).await;
    let key_dir = worker.state_dir.path().join("keys");
    let file = std::path::PathBuf::from(res["data"]["path"].as_str().unwrap());
    assert_eq!(file.parent(), Some(key_dir.as_path()), "{res}");
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("kf-") && name.ends_with(".key"), "{name}");
    assert_eq!(mode(&key_dir), 0o700);
    assert_eq!(mode(&file), 0o600);
    let key = std::fs::read_to_string(&file).unwrap();
    assert!(key.starts_with("BORG_KEY "), "not a borg key file");

    let mut body = export(ADMIN_TOKEN);
    body["paper"] = json!(true);
    let paper = c.run_job_ok(&base, "key/export", body).await;
    let paper_file = std::path::PathBuf::from(paper["data"]["path"].as_str().unwrap());
    assert!(paper_file.to_str().unwrap().ends_with(".txt"), "{paper}");
    assert_eq!(mode(&paper_file), 0o600);
    let paper_key = std::fs::read_to_string(&paper_file).unwrap();
    assert!(!paper_key.trim().is_empty());

    // No key material in anything published, nor in the worker's log.
    let published = c.all_text();
    let log = worker.log_text();
    let secret_lines: Vec<&str> = key
        .lines()
        .skip(1)
        .chain(paper_key.lines())
        .map(str::trim)
        .filter(|l| l.len() >= 16 && !l.starts_with("To restore") && !l.contains("BORG PAPER KEY"))
        .collect();
    assert!(!secret_lines.is_empty());
    for l in &secret_lines {
        // Paper lines are `NN: xxxx xxxx … - cc`; their hex groups are the key.
        let probe = l.split_once(": ").map_or(*l, |(_, rest)| rest);
        assert!(
            !published.contains(probe),
            "key material published: {probe}"
        );
        assert!(
            !log.contains(probe),
            "key material in the worker's log: {probe}"
        );
    }

    // The exported key opens a copy of the repository once the local key is gone.
    let copy = repos.dir.path().join("repo-kf-copy");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(repos.repo_path("kf"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let keys_dir = repos.dir.path().join("borg-base/.config/borg/keys");
    let local_keys: Vec<_> = std::fs::read_dir(&keys_dir).unwrap().flatten().collect();
    assert_eq!(local_keys.len(), 1, "one keyfile repository, one local key");
    for k in local_keys {
        std::fs::remove_file(k.path()).unwrap();
    }
    let copy_arg = copy.to_str().unwrap();
    let without = repos.borg(&["list", "--short", copy_arg]);
    assert!(!without.status.success(), "the copy opened with no key");
    let import = repos.borg(&["key", "import", copy_arg, file.to_str().unwrap()]);
    assert!(
        import.status.success(),
        "borg key import: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    let with = repos.borg(&["list", "--short", copy_arg]);
    assert!(
        with.status.success(),
        "borg list: {}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&with.stdout).trim(), archive);
    assert_no_secrets("published payloads", &published);
}
