//! Keeping a repository healthy: prune, compact, check, locks, passphrase change.

use crate::helpers::*;
use serde_json::json;

async fn backup(c: &Client, base: &str, label: &str) -> String {
    let res = c
        .run_job(
            base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": label}),
        )
        .await;
    assert_eq!(res["state"], "succeeded", "{res}");
    res["data"]["archive"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_dry_run_deletes_nothing_and_prune_keeps_what_retention_says() {
    let broker = Broker::start();
    let repos = Repos::new();
    // One daily archive: of three made today only the newest stays. (With a rule
    // still unfulfilled, borg 1.2 would also keep the oldest.)
    repos.add("nc", "keep_daily: 1\n");
    let worker = Worker::start(&broker, &repos, &[]).await;
    let c = Client::connect(&broker).await;
    c.subscribe(&worker.topic("#")).await;
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(backup(&c, &worker.base, "nc").await);
    }
    assert_eq!(repos.archives("nc").len(), 3);

    let res = c
        .run_job(
            &worker.base,
            "repo/prune",
            json!({"token": WRITE_TOKEN, "repository": "nc", "dry_run": true}),
        )
        .await;
    assert_eq!(res["state"], "succeeded", "{res}");
    assert_eq!(res["data"]["dry_run"], true);
    assert_eq!(repos.archives("nc").len(), 3, "a dry run pruned");

    let res = c
        .run_job(
            &worker.base,
            "repo/prune",
            json!({"token": WRITE_TOKEN, "repository": "nc"}),
        )
        .await;
    assert_eq!(res["state"], "succeeded", "{res}");
    assert_eq!(
        repos.archives("nc"),
        vec![names[2].clone()],
        "keep_daily 1 keeps the newest of the day"
    );

    let res = c
        .run_job(
            &worker.base,
            "repo/compact",
            json!({"token": WRITE_TOKEN, "repository": "nc"}),
        )
        .await;
    assert_eq!(res["state"], "succeeded", "{res}");
    assert!(repos.check("nc"));

    let res = c
        .run_job(
            &worker.base,
            "repo/info",
            json!({"token": READ_TOKEN, "repository": "nc"}),
        )
        .await;
    assert_eq!(res["state"], "succeeded", "{res}");
    assert_eq!(res["data"]["encryption"]["mode"], "repokey-blake2");
    assert!(res["data"]["cache"]["stats"].is_object());

    // Prune is a write command.
    let resp = c
        .request(
            &worker.base,
            "repo/prune",
            json!({"token": READ_TOKEN, "repository": "nc"}),
        )
        .await;
    assert_eq!(resp["error"]["code"], "forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_passes_and_fails_on_a_corrupted_segment_and_repair_needs_admin() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").admin().process().await;
    backup(&c, &worker.base, "nc").await;

    let body = json!({"token": WRITE_TOKEN, "repository": "nc"});
    let res = c.run_job(&worker.base, "repo/check", body.clone()).await;
    assert_eq!(res["state"], "succeeded", "{res}");

    let resp = c
        .request(
            &worker.base,
            "repo/check",
            json!({"token": WRITE_TOKEN, "repository": "nc", "repair": true}),
        )
        .await;
    assert_eq!(resp["error"]["code"], "forbidden", "{resp}");
    assert!(resp["error"]["message"].as_str().unwrap().contains("admin"));

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
    // Its own process group, no inherited pipes: killing the group leaves nothing
    // behind that would keep the test runner's output open.
    use std::os::unix::process::CommandExt;
    let mut holder = std::process::Command::new("borg")
        .args([
            "with-lock",
            repos.repo_path("nc").to_str().unwrap(),
            "sleep",
            "600",
        ])
        .envs(repos.borg_env())
        .env("BORG_PASSPHRASE", PASSPHRASE)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let kill_group = |pid: u32| {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
    };
    let lock = repos.repo_path("nc").join("lock.roster");
    tokio::time::timeout(WAIT, async {
        while !lock.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("borg with-lock never locked");

    let status = c
        .request(
            &worker.base,
            "repo/lock-status",
            json!({"token": READ_TOKEN}),
        )
        .await;
    let lock_info = &status["data"]["repositories"][0]["lock"];
    assert_eq!(lock_info["locked"], true, "{status}");
    assert_eq!(lock_info["stale"], false);
    let pids: Vec<u64> = lock_info["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, vec![holder.id() as u64]);
    assert_eq!(lock_info["holders"][0]["alive"], true);

    // A backup meets the lock and says so.
    let res = c
        .run_job(
            &worker.base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": "nc"}),
        )
        .await;
    assert_eq!(res["state"], "failed", "{res}");
    assert!(
        res["error"]
            .as_str()
            .unwrap()
            .contains("locked by another borg process"),
        "{res}"
    );

    // break-lock is an admin command.
    let resp = c
        .request(
            &worker.base,
            "repo/break-lock",
            json!({"token": WRITE_TOKEN, "repository": "nc"}),
        )
        .await;
    assert_eq!(resp["error"]["code"], "forbidden");
    kill_group(holder.id());
    let _ = holder.wait();
    let status = c
        .request(
            &worker.base,
            "repo/lock-status",
            json!({"token": READ_TOKEN}),
        )
        .await;
    assert_eq!(
        status["data"]["repositories"][0]["lock"]["stale"], true,
        "{status}"
    );
    let res = c
        .run_job(
            &worker.base,
            "repo/break-lock",
            json!({"token": ADMIN_TOKEN, "repository": "nc"}),
        )
        .await;
    assert_eq!(res["state"], "succeeded", "{res}");
    let status = c
        .request(
            &worker.base,
            "repo/lock-status",
            json!({"token": READ_TOKEN}),
        )
        .await;
    assert_eq!(status["data"]["repositories"][0]["lock"]["locked"], false);
    backup(&c, &worker.base, "nc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn change_passphrase_makes_the_old_one_fail_and_the_new_one_work() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").admin().process().await;
    backup(&c, &worker.base, "nc").await;
    let new = "a-brand-new-passphrase-4321";

    let resp = c
        .request(
            &worker.base,
            "key/change-passphrase",
            json!({"token": WRITE_TOKEN, "repository": "nc", "new_passphrase": new}),
        )
        .await;
    assert_eq!(resp["error"]["code"], "forbidden");

    let res = c
        .run_job(
            &worker.base,
            "key/change-passphrase",
            json!({"token": ADMIN_TOKEN, "repository": "nc", "new_passphrase": new}),
        )
        .await;
    assert_eq!(res["state"], "succeeded", "{res}");
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
