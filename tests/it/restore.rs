//! Getting data back: `archive/extract` into the restore root (and nowhere else),
//! `archive/mount` / `archive/umount`, `archive/info`.

use crate::helpers::*;
use serde_json::{json, Value};

fn files_below(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn extract_restores_bytes_and_refuses_every_escape() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").process().await;
    let archive = c.backup_archive(&worker.base, "nc").await;

    // The whole archive, then only one path.
    c.run_job_ok(&worker.base,
            "archive/extract",
            json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive, "destination": "full"})).await;
    let src = repos.source("nc");
    let rel = src.strip_prefix("/").unwrap();
    let restored = repos.restore_root().join("full").join(rel);
    for f in ["hello.txt", "data.bin"] {
        assert_eq!(
            std::fs::read(restored.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f} differs"
        );
    }
    let only = format!("{}/hello.txt", rel.display());
    c.run_job_ok(
        &worker.base,
        "archive/extract",
        json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive,
                   "destination": "partial/one", "paths": [only]}),
    )
    .await;
    let partial = repos.restore_root().join("partial/one").join(rel);
    assert!(partial.join("hello.txt").is_file());
    assert!(
        !partial.join("data.bin").exists(),
        "paths did not limit the extract"
    );

    // Every escape is refused before anything runs.
    let outside = repos.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, repos.restore_root().join("link")).unwrap();
    let before = files_below(&repos.restore_root());
    for (dest, paths) in [
        (json!("../outside"), json!([])),
        (json!("/tmp/x"), json!([])),
        (json!("a/../../outside"), json!([])),
        (json!("link"), json!([])),
        (json!("link/deeper"), json!([])),
        (json!("ok"), json!(["../../etc/passwd"])),
        (json!("ok"), json!(["--strip-components=1"])),
        (json!("ok; touch /tmp/pwned"), json!([])),
    ] {
        let resp = c
            .request(
                &worker.base,
                "archive/extract",
                json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive,
                       "destination": dest, "paths": paths}),
            )
            .await;
        assert_eq!(resp["error"]["code"], "invalid", "{dest} {paths}: {resp}");
    }
    assert_eq!(
        files_below(&repos.restore_root()),
        before,
        "a refusal wrote something"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // Extract needs the write role and an archive name that is not an option.
    c.refused(
        &worker.base,
        "archive/extract",
        json!({"token": READ_TOKEN, "repository": "nc", "archive": archive, "destination": "x"}),
        "forbidden",
    )
    .await;
    c.refused(
        &worker.base,
        "archive/extract",
        json!({"token": WRITE_TOKEN, "repository": "nc", "archive": "--help", "destination": "x"}),
        "invalid",
    )
    .await;

    // archive/info of the named archive and of the latest one.
    for body in [
        json!({"token": READ_TOKEN, "repository": "nc", "archive": archive}),
        json!({"token": READ_TOKEN, "repository": "nc"}),
    ] {
        let res = c.run_job_ok(&worker.base, "archive/info", body).await;
        assert_eq!(res["data"]["archives"][0]["name"], json!(archive));
    }
    let res = c
        .run_job(
            &worker.base,
            "repo/latest-stats",
            json!({"token": READ_TOKEN, "repository": "nc"}),
        )
        .await;
    assert_eq!(res["data"]["archive"]["name"], json!(archive), "{res}");
    assert!(res["data"]["archive"]["stats"]["nfiles"].as_u64().unwrap() >= 2);
    assert_no_secrets("published payloads", &c.all_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_lists_the_archive_and_umount_releases_it() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").app().await;
    let archive = c.backup_archive(&worker.base, "nc").await;
    let body =
        json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive, "mount_point": "m1"});

    if !fuse_or_skip("mount_lists_the_archive_and_umount_releases_it") {
        c.refused_saying(&worker.base, "archive/mount", body, "unavailable", "FUSE")
            .await;
        return;
    }
    c.run_job_ok(&worker.base, "archive/mount", body).await;
    let mounted = repos
        .mount_root()
        .join("m1")
        .join(repos.source("nc").strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(mounted.join("hello.txt")).unwrap(),
        b"hello world\n"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(mountinfo.contains(repos.mount_root().join("m1").to_str().unwrap()));

    c.run_job_ok(
        &worker.base,
        "archive/umount",
        json!({"token": WRITE_TOKEN, "repository": "nc", "mount_point": "m1"}),
    )
    .await;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(repos.mount_root().join("m1").to_str().unwrap()));
    let listed: Value = c
        .request(&worker.base, "job/list", json!({"token": READ_TOKEN}))
        .await;
    assert_eq!(listed["status"], "ok");
}
