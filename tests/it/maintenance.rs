//! Keeping a repository healthy: prune, compact, check, locks, passphrase change.

use crate::helpers::*;
use serde_json::json;

/// `repo/lock-status` of every repository.
async fn lock_status(c: &Client, base: &str) -> serde_json::Value {
    c.request(base, "repo/lock-status", json!({"token": READ_TOKEN}))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_dry_run_deletes_nothing_and_prune_keeps_what_retention_says() {
    let broker = Broker::start();
    let repos = Repos::new();
    // One daily archive: of three made today only the newest stays. (With a rule
    // still unfulfilled, borg 1.2 would also keep the oldest.)
    repos.add("nc", "keep_daily: 1\n");
    let worker = Worker::start(&broker, &repos, &[]).await;
    let c = subscribed(&broker, &worker.base).await;
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(c.backup_archive(&worker.base, "nc").await);
    }
    assert_eq!(repos.archives("nc").len(), 3);

    let res = c
        .run_job_ok(
            &worker.base,
            "repo/prune",
            json!({"token": WRITE_TOKEN, "repository": "nc", "dry_run": true}),
        )
        .await;
    assert_eq!(res["data"]["dry_run"], true);
    assert_eq!(repos.archives("nc").len(), 3, "a dry run pruned");

    c.run_job_ok(
        &worker.base,
        "repo/prune",
        json!({"token": WRITE_TOKEN, "repository": "nc"}),
    )
    .await;
    assert_eq!(
        repos.archives("nc"),
        vec![names[2].clone()],
        "keep_daily 1 keeps the newest of the day"
    );

    c.run_job_ok(
        &worker.base,
        "repo/compact",
        json!({"token": WRITE_TOKEN, "repository": "nc"}),
    )
    .await;
    assert!(repos.check("nc"));

    let res = c
        .run_job_ok(
            &worker.base,
            "repo/info",
            json!({"token": READ_TOKEN, "repository": "nc"}),
        )
        .await;
    assert_eq!(res["data"]["encryption"]["mode"], "repokey-blake2");
    assert!(res["data"]["cache"]["stats"].is_object());

    // Prune is a write command.
    c.refused(
        &worker.base,
        "repo/prune",
        json!({"token": READ_TOKEN, "repository": "nc"}),
        "forbidden",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_passes_and_fails_on_a_corrupted_segment_and_repair_needs_admin() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").admin().process().await;
    c.backup_archive(&worker.base, "nc").await;

    let body = json!({"token": WRITE_TOKEN, "repository": "nc"});
    c.run_job_ok(&worker.base, "repo/check", body.clone()).await;

    c.refused_saying(
        &worker.base,
        "repo/check",
        json!({"token": WRITE_TOKEN, "repository": "nc", "repair": true}),
        "forbidden",
        "admin",
    )
    .await;

    // Flip bytes in the middle of the largest segment file.
    let data = repos.repo_path("nc").join("data");
    let mut segments: Vec<_> = walk(&data);
    segments.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let seg = segments.last().expect("no segment").clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&seg, bytes).unwrap();

    let res = c.run_job(&worker.base, "repo/check", body).await;
    assert_eq!(res["state"], "failed", "{res}");
    assert!(!repos.check("nc"));

    // The admin may repair.
    let res = c
        .run_job(
            &worker.base,
            "repo/check",
            json!({"token": ADMIN_TOKEN, "repository": "nc", "repair": true}),
        )
        .await;
    assert_eq!(res["data"]["repair"], true, "{res}");
    assert_no_secrets("published payloads", &c.all_text());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_lock_is_reported_named_in_the_failure_and_broken_by_the_admin() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new()
        .repo_with("nc", "lock_wait: 1\n")
        .admin()
        .app()
        .await;

    let status = c
        .request(
            &worker.base,
            "repo/lock-status",
            json!({"token": READ_TOKEN, "repository": "nc"}),
        )
        .await;
    assert_eq!(
        status["data"]["repositories"][0]["lock"]["locked"], false,
        "{status}"
    );

    // Another borg process holds the lock.
    let holder = LockHolder::hold(&repos, "nc").await;

    let status = lock_status(&c, &worker.base).await;
    let lock_info = &status["data"]["repositories"][0]["lock"];
    assert_eq!(lock_info["locked"], true, "{status}");
    assert_eq!(lock_info["stale"], false);
    let pids: Vec<u64> = lock_info["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, vec![holder.pid() as u64]);
    assert_eq!(lock_info["holders"][0]["alive"], true);

    // A backup meets the lock and says so.
    let res = c.backup(&worker.base, "nc").await;
    assert_eq!(res["state"], "failed", "{res}");
    assert!(
        res["error"]
            .as_str()
            .unwrap()
            .contains("locked by another borg process"),
        "{res}"
    );

    // break-lock is an admin command.
    c.refused(
        &worker.base,
        "repo/break-lock",
        json!({"token": WRITE_TOKEN, "repository": "nc"}),
        "forbidden",
    )
    .await;
    holder.kill();
    let status = lock_status(&c, &worker.base).await;
    assert_eq!(
        status["data"]["repositories"][0]["lock"]["stale"], true,
        "{status}"
    );
    c.run_job_ok(
        &worker.base,
        "repo/break-lock",
        json!({"token": ADMIN_TOKEN, "repository": "nc"}),
    )
    .await;
    let status = lock_status(&c, &worker.base).await;
    assert_eq!(status["data"]["repositories"][0]["lock"]["locked"], false);
    c.backup_archive(&worker.base, "nc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn change_passphrase_makes_the_old_one_fail_and_the_new_one_work() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").admin().process().await;
    c.backup_archive(&worker.base, "nc").await;
    let new = "a-brand-new-passphrase-4321";

    c.refused(
        &worker.base,
        "key/change-passphrase",
        json!({"token": WRITE_TOKEN, "repository": "nc", "new_passphrase": new}),
        "forbidden",
    )
    .await;

    let res = c
        .run_job_ok(
            &worker.base,
            "key/change-passphrase",
            json!({"token": ADMIN_TOKEN, "repository": "nc", "new_passphrase": new}),
        )
        .await;
    assert!(res["data"]["next_step"]
        .as_str()
        .unwrap()
        .contains("passphrase"));
    let repo = repos.repo_path("nc");
    let old = repos.borg_with(PASSPHRASE, &["list", repo.to_str().unwrap()]);
    assert!(
        !old.status.success(),
        "the old passphrase still opens the repository"
    );
    let fresh = repos.borg_with(new, &["list", repo.to_str().unwrap()]);
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );

    let published = c.all_text();
    assert!(!published.contains(new), "the new passphrase was published");
    assert!(
        !worker.log_text().contains(new),
        "the new passphrase was logged"
    );
    assert_no_secrets("published payloads", &published);
}
