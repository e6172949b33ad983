//! Docker and Nextcloud AIO against a real Docker engine: exec streaming and exit
//! codes, listings, AIO backups judged
//! by the borgbackup container, AIO/borgmatic mutual exclusion, a lost engine.
//! (The exec policy's refusals: tests/exec_policy.rs.)

use crate::helpers::docker::{engine_or_skip, Aio, EngineProxy};
use crate::helpers::*;
use serde_json::{json, Value};

async fn worker_for(
    broker: &Broker,
    repos: &Repos,
    aio: &Aio,
    extra: &[(&str, &str)],
) -> (Worker, Client) {
    let env = aio.worker_env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    let worker = Worker::start(broker, repos, &all).await;
    let client = subscribed(broker, &worker.base).await;
    (worker, client)
}

/// Every `daily-backup.sh` flag, as the built-in write-role rule `aio-backup`
/// requires them (an unset flag would be inherited from the container).
static BACKUP_ENV: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    json!({"DAILY_BACKUP": "1", "CHECK_BACKUP": "0", "STOP_CONTAINERS": "0",
           "START_CONTAINERS": "1", "AUTOMATIC_UPDATES": "0"})
});

/// `container/exec` of AIO's `/daily-backup.sh` in its master container, with
/// every flag the write role needs.
fn daily_backup(aio: &Aio) -> Value {
    json!({"token": WRITE_TOKEN, "container": aio.master(),
           "command": ["/daily-backup.sh"], "env": BACKUP_ENV.clone()})
}

fn lines_of(c: &Client, base: &str, job: &Value) -> Vec<String> {
    c.job_lines(base, job["job_id"].as_str().unwrap())
        .iter()
        .map(|l| l["line"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_streams_lines_in_order_with_env_and_exit_codes() {
    if !engine_or_skip("exec_streams_lines_in_order_with_env_and_exit_codes") {
        return;
    }
    let broker = Broker::start();
    let repos = Repos::new();
    let aio = Aio::start(&["SCRIPT_EXIT=3"], &[]);
    let (worker, c) = worker_for(&broker, &repos, &aio, &[("BMQTT_JOBS__LOG_QOS", "1")]).await;

    // `/daily-backup.sh` contains "sh": the predecessor's substring rule blocked it.
    let res = c
        .run_job(&worker.base, "container/exec", daily_backup(&aio))
        .await;
    assert_eq!(res["state"], "failed", "{res}");
    assert_eq!(res["exit_code"], 3, "the exit code comes from exec inspect");
    let lines = c.job_lines(&worker.base, res["job_id"].as_str().unwrap());
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=lines.len() as u64).collect::<Vec<_>>());
    // Order holds within a stream (stdout and stderr travel apart).
    let text: Vec<&str> = lines
        .iter()
        .filter(|l| l["stream"] == "stdout")
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert!(
        text[0].contains("DAILY_BACKUP=1") && text[0].contains("AUTOMATIC_UPDATES=0"),
        "{text:?}"
    );
    let numbered: Vec<&str> = text
        .iter()
        .copied()
        .filter(|l| l.starts_with("daily-backup line"))
        .collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("daily-backup line {i}")).collect();
    assert_eq!(numbered, expected, "lines out of order");
    assert!(lines
        .iter()
        .any(|l| l["stream"] == "stderr" && l["line"] == "daily-backup: a line on stderr"));

    let res = c
        .run_job_ok(
            &worker.base,
            "aio/healthcheck",
            json!({"token": READ_TOKEN}),
        )
        .await;
    assert_eq!(res["exit_code"], 0);
    assert!(lines_of(&c, &worker.base, &res).contains(&"healthy".to_string()));

    let policy = c
        .request(
            &worker.base,
            "security/exec-policy",
            json!({"token": READ_TOKEN}),
        )
        .await;
    assert_eq!(
        policy["data"]["allow"][0]["argv"],
        json!(["/daily-backup.sh"])
    );
    assert_eq!(policy["data"]["allow"][0]["container"], json!(aio.master()));
    assert_eq!(policy["data"]["allow"][0]["name"], "aio-backup");
    assert_eq!(policy["data"]["allow"][0]["role"], "write");
}

#[tokio::test(flavor = "multi_thread")]
async fn container_and_volume_listings() {
    if !engine_or_skip("container_and_volume_listings") {
        return;
    }
    let broker = Broker::start();
    let repos = Repos::new();
    let mut aio = Aio::start(&[], &[]);
    let volume = aio.add_volume("nextcloud_aio_nextcloud");
    let (worker, c) = worker_for(&broker, &repos, &aio, &[]).await;

    let list = c
        .request(&worker.base, "container/list", json!({"token": READ_TOKEN}))
        .await;
    let containers = list["data"]["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![aio.borgbackup(), aio.master()]);
    assert_eq!(containers[1]["state"], "running");
    assert_eq!(containers[0]["state"], "created");

    let vols = c
        .request_ok(
            &worker.base,
            "volume/list",
            json!({"token": READ_TOKEN, "sizes": true}),
        )
        .await;
    let names: Vec<&str> = vols["data"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![volume.as_str()]);

    // The engine's version is part of the retained info.
    let info = c.wait_for(|m| m.topic.ends_with("/info")).await.json();
    assert_eq!(info["docker"]["available"], true, "{info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aio_backup_is_judged_by_the_borgbackup_container() {
    if !engine_or_skip("an_aio_backup_is_judged_by_the_borgbackup_container") {
        return;
    }
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("aio", "");
    let mut aio = Aio::start(&["SCRIPT_EXIT=0"], &["BORG_EXIT=0"]);
    let (worker, c) = worker_for(
        &broker,
        &repos,
        &aio,
        &[
            ("BMQTT_REPOSITORIES__AIO__AIO", "true"),
            ("BMQTT_DOCKER__BORGBACKUP_START_GRACE_SECS", "3"),
            ("BMQTT_JOBS__LOG_QOS", "1"),
        ],
    )
    .await;

    // Backup and check together is refused, as AIO refuses it.
    c.refused(
        &worker.base,
        "aio/backup",
        json!({"token": WRITE_TOKEN, "backup": true, "check": true}),
        "invalid",
    )
    .await;

    // A backup whose borgbackup container succeeds.
    let run = |c: Client, base: String| async move {
        c.request(&base, "aio/backup", json!({"token": WRITE_TOKEN}))
            .await
    };
    let started = run(c.clone(), worker.base.clone()).await;
    assert_eq!(started["status"], "ok", "{started}");
    let job = started["job_id"].as_str().unwrap().to_string();
    let log_topic = worker.topic(&format!("jobs/{job}/log"));
    c.wait_for(|m| m.topic == log_topic && m.text().contains("DAILY_BACKUP=1"))
        .await;
    aio.start_borgbackup();
    let res = c.job_result(&worker.base, &job).await;
    assert_eq!(res["state"], "succeeded", "{res}");
    assert_eq!(res["data"]["borgbackup_exit_code"], 0);
    let lines = lines_of(&c, &worker.base, &res);
    let script = lines
        .iter()
        .position(|l| l == "daily-backup line 10")
        .unwrap();
    let borg = lines.iter().position(|l| l == "borgbackup line 3").unwrap();
    assert!(
        script < borg,
        "the borgbackup lines follow the script's: {lines:?}"
    );

    // A script that "succeeds" while the borgbackup container fails: failed.
    aio.create_borgbackup(&["BORG_EXIT=1"]);
    let started = run(c.clone(), worker.base.clone()).await;
    let job = started["job_id"].as_str().unwrap().to_string();
    let log_topic = worker.topic(&format!("jobs/{job}/log"));
    c.wait_for(|m| m.topic == log_topic && m.text().contains("DAILY_BACKUP=1"))
        .await;
    aio.start_borgbackup();
    let res = c.job_result(&worker.base, &job).await;
    assert_eq!(res["state"], "failed", "{res}");
    assert_eq!(res["exit_code"], 1);
    assert!(res["error"]
        .as_str()
        .unwrap()
        .contains("borgbackup exited with code 1"));

    // The borgbackup container never starts: failed, saying so.
    let res = c
        .run_job(
            &worker.base,
            "aio/backup",
            json!({"token": WRITE_TOKEN, "check": true}),
        )
        .await;
    assert_eq!(res["state"], "failed", "{res}");
    assert!(
        res["error"].as_str().unwrap().contains("never started"),
        "{res}"
    );
    assert!(lines_of(&c, &worker.base, &res)
        .iter()
        .any(|l| l.contains("DAILY_BACKUP=0 CHECK_BACKUP=1 ")));

    // AIO's own archive list, read without borg.
    let list = c
        .request(
            &worker.base,
            "archive/list",
            json!({"token": READ_TOKEN, "repository": "aio", "source": "aio", "last": 1}),
        )
        .await;
    assert_eq!(list["data"]["source"], "aio", "{list}");
    assert_eq!(
        list["data"]["archives"],
        json!([{"name": "20261123_020000-nextcloud-aio", "time": "Mon Nov 23 02:00:04 2026"}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn aio_backups_and_borgmatic_backups_never_overlap() {
    if !engine_or_skip("aio_backups_and_borgmatic_backups_never_overlap") {
        return;
    }
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("aio", "");
    let aio = Aio::start(&["SCRIPT_SLEEP=600"], &[]);
    let (worker, c) = worker_for(
        &broker,
        &repos,
        &aio,
        &[("BMQTT_REPOSITORIES__AIO__AIO", "true")],
    )
    .await;

    // Our own AIO backup runs (its script sleeps): backup/run on the AIO repository is busy.
    let job = c
        .start_job(&worker.base, "aio/backup", json!({"token": WRITE_TOKEN}))
        .await;
    let busy = c
        .refused(
            &worker.base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": "aio"}),
            "busy",
        )
        .await;
    assert_eq!(busy["data"]["job_id"], json!(job));
    assert_eq!(c.cancel(&worker.base, &job).await["state"], "cancelled");

    // AIO's borgbackup container runs on its own: both refuse.
    aio.start_borgbackup_running();
    for (cmd, body) in [
        (
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": "aio"}),
        ),
        ("aio/backup", json!({"token": WRITE_TOKEN})),
    ] {
        c.refused_saying(&worker.base, cmd, body, "busy", "borgbackup")
            .await;
    }
    aio.stop_borgbackup();

    // The reverse: a borgmatic backup of the AIO repository holds off aio/backup.
    repos.block_backups("aio");
    let b = c.start_backup(&worker.base, "aio").await;
    c.refused(
        &worker.base,
        "aio/backup",
        json!({"token": WRITE_TOKEN}),
        "busy",
    )
    .await;
    c.cancel(&worker.base, &b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_engine_answers_unavailable_and_never_hangs() {
    if !engine_or_skip("a_lost_engine_answers_unavailable_and_never_hangs") {
        return;
    }
    let broker = Broker::start();
    let repos = Repos::new();
    let aio = Aio::start(&["SCRIPT_SLEEP=600"], &[]);
    let proxy = EngineProxy::start().await;
    let host = proxy.host();
    let (worker, c) = worker_for(
        &broker,
        &repos,
        &aio,
        &[("BMQTT_DOCKER__HOST", host.as_str())],
    )
    .await;

    let job = c
        .start_job(&worker.base, "container/exec", daily_backup(&aio))
        .await;
    let log_topic = worker.topic(&format!("jobs/{job}/log"));
    c.wait_for(|m| m.topic == log_topic && m.text().contains("daily-backup line 10"))
        .await;
    proxy.cut();
    let res = c.job_result(&worker.base, &job).await;
    assert_eq!(res["state"], "failed", "{res}");
    assert!(
        res["error"].as_str().unwrap().contains("unavailable"),
        "{res}"
    );
    c.refused(
        &worker.base,
        "container/list",
        json!({"token": READ_TOKEN}),
        "unavailable",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exec_past_its_timeout_ends_failed_and_says_so() {
    if !engine_or_skip("an_exec_past_its_timeout_ends_failed_and_says_so") {
        return;
    }
    let broker = Broker::start();
    let repos = Repos::new();
    let aio = Aio::start(&["SCRIPT_SLEEP=600"], &[]);
    let (worker, c) = worker_for(
        &broker,
        &repos,
        &aio,
        &[("BMQTT_JOBS__TIMEOUTS__CONTAINER_EXEC", "2")],
    )
    .await;
    let res = c
        .run_job(&worker.base, "container/exec", daily_backup(&aio))
        .await;
    assert_eq!(res["state"], "failed", "{res}");
    assert_eq!(res["error"], "timed out after 2s");
    // The container's lock is released: the next exec is accepted.
    c.request_ok(
        &worker.base,
        "container/exec",
        json!({"token": WRITE_TOKEN, "container": aio.master(), "command": ["/healthcheck.sh"]}),
    )
    .await;
}
