//! Job output under load: a job printing faster than the broker takes lines loses
//! none of them at QoS 1 (the job is paced instead), and a broker outage never
//! stalls a job (its lines stay readable over HTTP, and the worker says how many
//! it did not publish).

use std::collections::HashSet;

use crate::helpers::*;
use serde_json::json;

/// More lines than the engine lets the MQTT publisher fall behind by (8,192) and
/// than an SSE listener's buffer holds (16,384): only pacing delivers them all.
const LINES: u64 = 60_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_job_printing_faster_than_the_broker_loses_no_line_at_qos_1() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let dir = tempfile::tempdir().unwrap();
    let bin = fast_printing_borgmatic(dir.path(), LINES);
    let bin = bin.to_str().unwrap();
    let worker = Worker::start(
        &broker,
        &repos,
        &[
            ("BMQTT_BORGMATIC__BINARY", bin),
            ("BMQTT_JOBS__LOG_QOS", "1"),
            ("BMQTT_LOG__LEVEL", "info"),
        ],
    )
    .await;
    let c = Client::connect(&broker).await;
    c.subscribe(&worker.topic("jobs/#")).await;
    c.subscribe(&worker.topic("response/#")).await;
    let result = c.backup_ok(&worker.base, "nc").await;
    assert_eq!(result["lines"], LINES);
    let job = result["job_id"].as_str().unwrap();
    // The result is published after the job's last line: all of them are here.
    let seqs: Vec<u64> = c
        .job_lines(&worker.base, job)
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len() as u64, LINES, "lines were lost or repeated");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs[0] == 1,
        "lines arrived out of order"
    );
    let last = c
        .job_lines(&worker.base, job)
        .last()
        .map(|l| l["line"].clone());
    assert_eq!(last, Some(json!(format!("line {LINES}"))));
    assert!(
        !worker.log_text().contains("not published"),
        "{}",
        worker.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_never_stalls_a_job_and_its_lines_stay_readable() {
    let mut broker = Broker::start();
    let (_repos, _dir, worker, url) =
        printing_worker(&broker, LINES, ("BMQTT_JOBS__LOG_QOS", "1")).await;
    broker.stop();
    let http = reqwest::Client::new();
    let resp: serde_json::Value = http
        .post(format!("{url}/api/v1/cmd/backup/run"))
        .bearer_auth(WRITE_TOKEN)
        .json(&json!({"repository": "nc"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = resp["job_id"].as_str().expect("no job id").to_string();
    // The stream ends with the job's result: it must come although no broker
    // takes the lines.
    let events = read_sse(
        http.get(format!("{url}/api/v1/jobs/{job}/events"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap(),
        |e| e.event == "result",
    )
    .await;
    let result = events
        .iter()
        .find(|e| e.event == "result")
        .expect("no result event")
        .json();
    assert_eq!(result["state"], "succeeded", "{result}");
    assert_eq!(result["lines"], LINES);
    let ids: HashSet<u64> = events
        .iter()
        .filter(|e| e.event == "log")
        .filter_map(|e| e.id.as_ref()?.parse().ok())
        .collect();
    let lagged = events.iter().any(|e| e.event == "lagged");
    // Every line reached the SSE client, or the gap was announced as `lagged`.
    assert!(ids.len() as u64 == LINES || lagged, "{} lines", ids.len());

    // Back online: the worker reconnects and still knows the job.
    broker.restart();
    let c = Client::connect(&broker).await;
    let status = worker.topic("status");
    c.subscribe(&status).await;
    c.subscribe(&worker.topic("response/#")).await;
    c.wait_for(|m| m.topic == status && m.payload == b"online")
        .await;
    let r = c.job(&worker.base, &job).await;
    assert_eq!(r["state"], "succeeded", "{r}");
    // The next job's lines are published again, and the worker says what it skipped.
    c.subscribe(&worker.topic("jobs/#")).await;
    let again = c.backup_ok(&worker.base, "nc").await;
    let job = again["job_id"].as_str().unwrap();
    assert_eq!(c.job_lines(&worker.base, job).len() as u64, LINES);
    assert!(
        worker
            .log_text()
            .contains("log lines were not published while the broker was unreachable"),
        "{}",
        worker.log_text()
    );
}

/// A finished job whose lines are no longer kept (`jobs.stored_lines = 0`): its
/// event stream says `lagged` for every seq before the result, never ends short
/// in silence.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_of_a_job_whose_lines_are_gone_says_so_before_the_result() {
    const N: u64 = 500;
    let broker = Broker::start();
    let (_repos, _dir, worker, url) =
        printing_worker(&broker, N, ("BMQTT_JOBS__STORED_LINES", "0")).await;
    let c = Client::connect(&broker).await;
    c.subscribe(&worker.topic("jobs/#")).await;
    c.subscribe(&worker.topic("response/#")).await;
    let result = c.backup_ok(&worker.base, "nc").await;
    assert_eq!(result["lines"], N);
    let job = result["job_id"].as_str().unwrap();
    let events = read_sse(
        http_client()
            .get(format!("{url}/api/v1/jobs/{job}/events"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap(),
        |e| e.event == "result",
    )
    .await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["state", "lagged", "result"], "{kinds:?}");
    let lagged = events[1].json();
    assert_eq!(
        (lagged["missed_from"].as_u64(), lagged["missed_to"].as_u64()),
        (Some(1), Some(N)),
        "{lagged}"
    );
}

/// A worker with its HTTP sidecar whose borgmatic prints `lines` numbered lines as
/// fast as it can (repository `nc`), with one more setting.
async fn printing_worker(
    broker: &Broker,
    lines: u64,
    setting: (&str, &str),
) -> (Repos, tempfile::TempDir, TestApp, String) {
    let repos = Repos::new();
    repos.add("nc", "");
    let dir = tempfile::tempdir().unwrap();
    let bin = fast_printing_borgmatic(dir.path(), lines);
    let (worker, url) = start_with_http(
        broker,
        &repos,
        &[("BMQTT_BORGMATIC__BINARY", bin.to_str().unwrap()), setting],
    )
    .await;
    (repos, dir, worker, url)
}
