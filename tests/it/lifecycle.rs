//! Jobs and the worker over time: busy, cancel, timeout, restarts of the worker and
//! of the broker, and what a dead worker leaves behind.

use std::path::Path;

use crate::helpers::*;
use serde_json::json;

/// A repository whose backup blocks: borg reads a FIFO nobody writes to
/// (`read_special`), holding the repository lock until it is stopped.
fn blocking_repo(repos: &Repos, label: &str) {
    repos.add(label, "");
    repos.block_backups(label);
}

/// Ends borg processes a killed worker left behind.
fn kill_orphans(repo: &Path) {
    let _ = std::process::Command::new("pkill")
        .args(["-KILL", "-f", repo.to_str().unwrap()])
        .status();
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_then_cancel_leaves_a_repository_that_passes_check() {
    let broker = Broker::start();
    let repos = Repos::new();
    blocking_repo(&repos, "nc");
    let worker = Worker::start(&broker, &repos, &[]).await;
    let c = subscribed(&broker, &worker.base).await;

    let job = c.start_backup(&worker.base, "nc").await;
    until_locked(&repos.repo_path("nc")).await;
    assert_eq!(c.job(&worker.base, &job).await["state"], "running");

    // A second job on the same repository is refused, naming the running one.
    let busy = c
        .refused(
            &worker.base,
            "archive/list",
            json!({"token": READ_TOKEN, "repository": "nc"}),
            "busy",
        )
        .await;
    assert_eq!(busy["data"]["job_id"], job);

    let res = c.cancel(&worker.base, &job).await;
    assert_eq!(res["state"], "cancelled", "{res}");
    assert!(res["finished_at"].is_string());
    assert!(
        !repos.repo_path("nc").join("lock.exclusive").exists(),
        "the lock outlived the job"
    );
    assert!(repos.check("nc"), "borg check fails after a cancel");

    // The repository is free again.
    let again = c
        .request_ok(
            &worker.base,
            "archive/list",
            json!({"token": READ_TOKEN, "repository": "nc"}),
        )
        .await;
    let res = c
        .job_result(&worker.base, again["job_id"].as_str().unwrap())
        .await;
    assert_eq!(res["state"], "succeeded", "{res}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_past_its_timeout_fails_and_releases_the_lock() {
    let broker = Broker::start();
    let repos = Repos::new();
    blocking_repo(&repos, "nc");
    let worker = Worker::start(
        &broker,
        &repos,
        &[("BMQTT_JOBS__TIMEOUTS__BACKUP_RUN", "3")],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    let job = c.start_backup(&worker.base, "nc").await;
    let res = c.job_result(&worker.base, &job).await;
    assert_eq!(res["state"], "failed", "{res}");
    assert_eq!(res["error"], "timed out after 3s");
    assert!(repos.check("nc"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_history_and_marks_the_running_job_interrupted() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("done", "");
    blocking_repo(&repos, "nc");
    let mut worker = Worker::start(&broker, &repos, &[]).await;
    let c = subscribed(&broker, &worker.base).await;

    let finished = c.start_backup(&worker.base, "done").await;
    assert_eq!(
        c.job_result(&worker.base, &finished).await["state"],
        "succeeded"
    );
    let running = c.start_backup(&worker.base, "nc").await;
    until_locked(&repos.repo_path("nc")).await;

    worker.restart(&broker).await;
    kill_orphans(&repos.repo_path("nc"));

    let rec = c.job(&worker.base, &running).await;
    assert_eq!(rec["state"], "interrupted", "{rec}");
    assert!(rec["finished_at"].is_string());
    let old = c.job(&worker.base, &finished).await;
    assert_eq!(old["state"], "succeeded");
    assert!(old["data"]["archive"].is_string(), "result data was lost");

    let list = c
        .request(&worker.base, "job/list", json!({"token": READ_TOKEN}))
        .await;
    let ids: Vec<&str> = list["data"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![running.as_str(), finished.as_str()],
        "newest first"
    );

    // The retained state the dead worker left (`running`) was corrected.
    let late = Client::connect(&broker).await;
    let topic = worker.topic(&format!("jobs/{running}/state"));
    late.subscribe(&topic).await;
    let m = late.wait_for(|m| m.topic == topic).await;
    assert_eq!(m.json()["state"], "interrupted");

    // The log lines of a finished job survive too.
    let lines = c.job_lines(&worker.base, &finished);
    assert!(!lines.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_broker_restart_the_worker_resubscribes_and_answers() {
    let mut broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let worker = Worker::start(&broker, &repos, &[]).await;

    broker.restart();
    // The broker keeps nothing (persistence off): `online` can only come from the
    // worker reconnecting.
    let c = subscribed(&broker, &worker.base).await;
    let status = worker.topic("status");
    c.wait_for(|m| m.topic == status && m.payload == b"online")
        .await;
    let fresh = Client::connect(&broker).await;
    fresh.subscribe(&status).await;
    let retained = fresh.wait_for(|m| m.topic == status).await;
    assert!(retained.retain);
    assert_eq!(retained.text(), "online");
    c.request_ok(&worker.base, "job/list", json!({"token": READ_TOKEN}))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_leaves_a_retained_offline() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let mut worker = Worker::start(&broker, &repos, &[]).await;
    worker.kill9();
    let c = Client::connect(&broker).await;
    let status = worker.topic("status");
    c.subscribe(&status).await;
    let m = c
        .wait_for(|m| m.topic == status && m.payload == b"offline")
        .await;
    // Either the Last Will reached us live or as the retained value; a fresh
    // subscriber must see it retained.
    let fresh = Client::connect(&broker).await;
    fresh.subscribe(&status).await;
    let r = fresh.wait_for(|m| m.topic == status).await;
    assert_eq!(r.text(), "offline", "{m:?}");
    assert!(r.retain);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_interrupts_jobs_publishes_offline_and_exits_cleanly() {
    let broker = Broker::start();
    let repos = Repos::new();
    blocking_repo(&repos, "nc");
    let mut worker = Worker::start(&broker, &repos, &[]).await;
    let c = subscribed(&broker, &worker.base).await;
    let job = c.start_backup(&worker.base, "nc").await;
    until_locked(&repos.repo_path("nc")).await;

    let status = worker.terminate();
    assert!(
        status.success(),
        "exit status {status}: {}",
        worker.log_text()
    );

    let res = c.job_result(&worker.base, &job).await;
    assert_eq!(res["state"], "interrupted", "{res}");
    let topic = worker.topic("status");
    c.wait_for(|m| m.topic == topic && m.payload == b"offline")
        .await;
    let fresh = Client::connect(&broker).await;
    fresh.subscribe(&topic).await;
    let retained = fresh.wait_for(|m| m.topic == topic).await;
    assert!(retained.retain);
    assert_eq!(retained.text(), "offline");
    // The final state came before `offline`, and borg let go of the repository.
    let seen = c.seen.lock().unwrap().clone();
    let pos_result = seen
        .iter()
        .position(|m| m.topic.ends_with(&format!("{job}/result")))
        .unwrap();
    let pos_offline = seen
        .iter()
        .position(|m| m.topic == topic && m.payload == b"offline")
        .unwrap();
    assert!(pos_result < pos_offline);
    assert!(repos.check("nc"));
    assert_no_secrets("the worker's log", &worker.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_connects_over_tls_and_answers() {
    let broker = Broker::start_tls();
    let repos = Repos::new();
    repos.add("nc", "");
    let tls_port = broker.tls_port.unwrap().to_string();
    let ca = broker.ca_file().display().to_string();
    // `online` only arrives if the TLS connection (verified against the CA) worked.
    let worker = Worker::start(
        &broker,
        &repos,
        &[
            ("BMQTT_MQTT__HOST", "localhost"),
            ("BMQTT_MQTT__PORT", tls_port.as_str()),
            ("BMQTT_MQTT__TLS", "true"),
            ("BMQTT_MQTT__CA_FILE", ca.as_str()),
        ],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    c.request_ok(&worker.base, "job/list", json!({"token": READ_TOKEN}))
        .await;
}
