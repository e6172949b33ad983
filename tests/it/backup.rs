//! `backup/run` and `archive/list` end to end: real broker, real borgmatic, real borg.

use crate::helpers::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn backup_creates_one_archive_that_archive_list_names() {
    let Scenario {
        broker,
        repos,
        worker,
        client: c,
    } = Scenario::new()
        .repo("nc")
        .setting("BMQTT_JOBS__LOG_QOS", "1")
        .process()
        .await;

    let resp = c
        .request_ok(
            &worker.base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": "nc", "request_id": "nr-1"}),
        )
        .await;
    assert_eq!(resp["request_id"], "nr-1");
    let job_id = resp["job_id"].as_str().unwrap().to_string();
    assert_eq!(resp["data"]["job_id"], job_id);
    assert_eq!(resp["data"]["command"], "backup/run");
    assert_eq!(resp["data"]["request_id"], "nr-1");

    let result = c.job_result(&worker.base, &job_id).await;
    assert_eq!(
        result["state"],
        "succeeded",
        "{result} {:?}",
        c.job_lines(&worker.base, &job_id)
    );
    assert_eq!(result["exit_code"], 0);
    let archive = result["data"]["archive"].as_str().expect("archive name");
    assert!(result["data"]["stats"]["nfiles"].as_u64().unwrap() >= 2);

    // Exactly one archive, checked with borg itself, and it is the one reported.
    assert_eq!(repos.archives("nc"), vec![archive.to_string()]);

    // Log lines arrived with a contiguous seq from 1 to the record's count.
    let lines = c.job_lines(&worker.base, &job_id);
    let n = result["lines"].as_u64().unwrap();
    assert!(n > 0, "a backup with --progress --stats logs something");
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    assert!(lines
        .iter()
        .all(|l| l["ts"].is_string() && l["line"].is_string()));

    // Every state change on `events`, in order; the final state retained.
    let states: Vec<String> = c
        .messages()
        .get(&worker.topic("events"))
        .unwrap()
        .iter()
        .map(|m| m.json())
        .filter(|r| r["job_id"] == job_id)
        .map(|r| r["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["queued", "running", "succeeded"]);
    let late = Client::connect(&broker).await;
    late.subscribe(&worker.topic(&format!("jobs/{job_id}/state")))
        .await;
    let retained = late.wait_for(|m| m.topic.ends_with("/state")).await;
    assert!(retained.retain);
    assert_eq!(retained.json()["state"], "succeeded");

    // archive/list (a read command) names the archive.
    let list = c
        .run_job_ok(
            &worker.base,
            "archive/list",
            json!({"token": READ_TOKEN, "repository": "nc"}),
        )
        .await;
    let names: Vec<&str> = list["data"]["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![archive]);

    // job/get returns the finished job with its data.
    let got = c.job(&worker.base, &job_id).await;
    assert_eq!(got["state"], "succeeded");
    assert_eq!(got["data"]["archive"], archive);

    assert_no_secrets("published payloads", &c.all_text());
    assert_no_secrets("the worker's log", &worker.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_creates_nothing_and_duplicate_request_runs_once() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").app().await;

    let res = c
        .run_job_ok(
            &worker.base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": "nc", "dry_run": true}),
        )
        .await;
    assert_eq!(res["data"]["dry_run"], true);
    assert!(
        repos.archives("nc").is_empty(),
        "a dry run wrote an archive"
    );

    // QoS 1 redelivery: the same request_id twice gets the same answer, one job.
    let body = json!({"token": WRITE_TOKEN, "repository": "nc", "request_id": "dup-1"});
    let first = c.request(&worker.base, "backup/run", body.clone()).await;
    let second = c.request(&worker.base, "backup/run", body).await;
    assert_eq!(first["status"], "ok");
    assert_eq!(first, second, "a duplicate got a different answer");
    let res = c
        .job_result(&worker.base, first["job_id"].as_str().unwrap())
        .await;
    assert_eq!(res["state"], "succeeded");
    assert_eq!(repos.archives("nc").len(), 1);
    let jobs = c
        .request(&worker.base, "job/list", json!({"token": READ_TOKEN}))
        .await;
    let backups = jobs["data"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["command"] == "backup/run")
        .count();
    assert_eq!(backups, 2, "the dry run and one real backup");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_backup_is_failed_with_its_reason() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    // The repository vanishes after configuration: borgmatic must fail.
    std::fs::remove_dir_all(repos.repo_path("nc")).unwrap();
    let worker = Worker::start(&broker, &repos, &[]).await;
    let c = subscribed(&broker, &worker.base).await;
    let res = c.backup(&worker.base, "nc").await;
    assert_eq!(res["state"], "failed", "{res}");
    assert_ne!(res["exit_code"], 0);
    let error = res["error"].as_str().unwrap();
    assert!(error.contains("exited with code"), "{error}");
    assert_no_secrets("published payloads", &c.all_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_backup_publishes_progress_objects_while_it_runs() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("big", "");
    // 200 MB that lz4 cannot shrink: borg needs a few seconds for it.
    let mut src = std::fs::File::open("/dev/urandom").unwrap();
    let mut dst = std::fs::File::create(repos.source("big").join("random.bin")).unwrap();
    std::io::copy(&mut std::io::Read::take(&mut src, 200 << 20), &mut dst).unwrap();
    drop(dst);

    let worker = Worker::start(&broker, &repos, &[]).await;
    let c = subscribed(&broker, &worker.base).await;
    let res = c.backup_ok(&worker.base, "big").await;
    let job_id = res["job_id"].as_str().unwrap();
    let topic = worker.topic(&format!("jobs/{job_id}/state"));
    let progress: Vec<serde_json::Value> = c
        .messages()
        .remove(&topic)
        .unwrap_or_default()
        .iter()
        .map(|m| m.json())
        .filter(|r| r["state"] == "running" && r["progress"].is_object())
        .map(|r| r["progress"].clone())
        .collect();
    assert!(!progress.is_empty(), "no progress object was published");
    let sizes: Vec<u64> = progress
        .iter()
        .filter_map(|p| p["original_size"].as_u64())
        .collect();
    assert!(sizes.iter().any(|s| *s > 0), "{progress:?}");
    assert!(
        sizes.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {sizes:?}"
    );
    // The final record carries no stale progress.
    assert!(res["progress"].is_null());
    assert!(res["data"]["stats"]["original_size"].as_u64().unwrap() >= 200 << 20);
}
