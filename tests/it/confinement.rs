//! Confinement to the restore root holds when the job starts, not only when the
//! request is accepted: a queued extract whose destination's parent is swapped for
//! a symbolic link while it waits fails with a confinement error and writes nothing
//! outside. Links in a destination are refused at acceptance, over both transports.

use std::io::Write;

use crate::helpers::*;
use serde_json::{json, Value};

fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_extract_whose_parent_became_a_link_fails_and_writes_nothing_outside() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let cfg = repos.config_dir().join("nc.yaml");
    let out = repos.borgmatic(&cfg, &["create"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = repos.archives("nc").pop().expect("an archive");
    // A backup of "slow" waits, in a hook, until the test opens this FIFO; with one
    // job at a time the extract on "nc" queues behind it.
    let fifo = repos.dir.path().join("release");
    mkfifo(&fifo);
    repos.add(
        "slow",
        &format!(
            "commands:\n  - before: action\n    when: [create]\n    run:\n      - cat {}\n",
            fifo.display()
        ),
    );

    let worker = Worker::start(&broker, &repos, &[("BMQTT_JOBS__MAX_CONCURRENT", "1")]).await;
    let c = subscribed(&broker, &worker.base).await;

    let blocker_id = c.start_backup(&worker.base, "slow").await;
    let queued_id = c
        .start_job(
            &worker.base,
            "archive/extract",
            json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive,
                   "destination": "a/b"}),
        )
        .await;
    let state = c.job(&worker.base, &queued_id).await;
    assert_eq!(state["state"], "queued", "{state}");
    let root = repos.restore_root();
    assert!(root.join("a/b").is_dir(), "accepted destinations are made");

    // While it waits, `a` becomes a link to a directory outside the root.
    let outside = repos.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("b")).unwrap();
    std::fs::remove_dir_all(root.join("a")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("a")).unwrap();

    // Release the backup (the hook's `cat` returns at end of file).
    let writer = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        f.write_all(b"go\n").unwrap();
    });
    tokio::time::timeout(WAIT, writer)
        .await
        .expect("the hook never read the FIFO")
        .unwrap();
    let first = c.job_result(&worker.base, &blocker_id).await;
    assert_ne!(first["state"], "running", "{first}");

    let res = c.job_result(&worker.base, &queued_id).await;
    assert_eq!(res["state"], "failed", "{res}");
    let error = res["error"].as_str().unwrap_or_default();
    assert!(error.contains("confinement"), "unclear error: {error}");
    assert_eq!(
        entries(&outside.join("b")),
        0,
        "the extract wrote outside the restore root"
    );
    assert_eq!(entries(&outside), 1);

    // The worker goes on answering, and an extract to a clean destination works.
    c.run_job_ok(
        &worker.base,
        "archive/extract",
        json!({"token": WRITE_TOKEN, "repository": "nc", "archive": archive,
                   "destination": "clean"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn links_in_a_destination_are_refused_at_acceptance_over_both_transports() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").http().app().await;
    let url = worker.url();
    let root = repos.restore_root();
    let outside = repos.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir(root.join("real")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    // Even a link that stays inside the root is refused: it could be re-pointed.
    std::os::unix::fs::symlink(root.join("real"), root.join("in")).unwrap();
    std::os::unix::fs::symlink(repos.mount_root(), root.join("to-mnt")).unwrap();
    std::os::unix::fs::symlink(&outside, repos.mount_root().join("out")).unwrap();

    let http = reqwest::Client::new();
    for over_http in [false, true] {
        for (cmd, body) in [
            (
                "archive/extract",
                json!({"repository": "nc", "archive": "x", "destination": "out"}),
            ),
            (
                "archive/extract",
                json!({"repository": "nc", "archive": "x", "destination": "out/x"}),
            ),
            (
                "archive/extract",
                json!({"repository": "nc", "archive": "x", "destination": "in"}),
            ),
            (
                "archive/extract",
                json!({"repository": "nc", "archive": "x", "destination": "in/x/y"}),
            ),
            (
                "archive/extract",
                json!({"repository": "nc", "archive": "x", "destination": "to-mnt/z"}),
            ),
            (
                "archive/umount",
                json!({"repository": "nc", "mount_point": "out"}),
            ),
        ] {
            let (code, message) = if over_http {
                let r = http
                    .post(format!("{url}/api/v1/cmd/{cmd}"))
                    .bearer_auth(WRITE_TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let v: Value = r.json().await.unwrap();
                (v["error"]["code"].clone(), v["error"]["message"].clone())
            } else {
                let mut b = body.clone();
                b["token"] = json!(WRITE_TOKEN);
                let v = c.request(&worker.base, cmd, b).await;
                (v["error"]["code"].clone(), v["error"]["message"].clone())
            };
            // Unmounting needs FUSE; without it the answer is `unavailable`, and
            // either way nothing is touched.
            if cmd == "archive/umount" && code == "unavailable" {
                continue;
            }
            assert_eq!(
                code, "invalid",
                "over_http={over_http} {cmd} {body}: {message}"
            );
            assert!(
                message
                    .as_str()
                    .unwrap_or_default()
                    .contains("symbolic link"),
                "{message}"
            );
        }
    }
    assert_eq!(entries(&outside), 0);
    assert_eq!(
        entries(&root.join("real")),
        0,
        "created through an inner link"
    );
    assert_eq!(entries(&repos.mount_root()), 1);
}
