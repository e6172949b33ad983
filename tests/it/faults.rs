//! The fault suite: what a bad night does to the worker, with real Mosquitto, borg
//! and borgmatic. Broker `kill -9`/restart loops with persistence off and on, the
//! worker killed (`kill -9`, SIGTERM) at several moments of a real backup, the same
//! request delivered again after a restart, a full `state_dir` while running and a
//! full or read-only one at start. Each test asserts the guarantee topics.md states,
//! with counts (jobs started = results received = records stored; zero orphans;
//! zero extra runs). Every loop is bounded.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::helpers::*;
use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, Packet, PingResp, PubAck, Publish, SubAck, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUNDS: usize = 3;

/// Starts a backup; a `busy` answer (the start-up health probe or reconciliation
/// holds the repository) waits for that job's end and tries again.
async fn start_backup(
    broker: &Broker,
    c: &Client,
    base: &str,
    label: &str,
    rid: Option<&str>,
) -> Value {
    let mut body = json!({"token": WRITE_TOKEN, "repository": label});
    if let Some(r) = rid {
        body["request_id"] = json!(r);
    }
    for _ in 0..10 {
        let resp = c.request(base, "backup/run", body.clone()).await;
        if resp["error"]["code"] != "busy" {
            return resp;
        }
        let holder = resp["data"]["job_id"].as_str().unwrap().to_string();
        until_final(broker, base, &holder).await;
    }
    panic!("the repository stayed busy");
}

/// A client that reads the worker's responses.
async fn requester(broker: &Broker, base: &str) -> Client {
    let c = Client::connect(broker).await;
    c.subscribe(&format!("{base}/response/#")).await;
    c
}

/// Waits for the start-up health probe of `label` to end (it holds the repository).
async fn until_probed(broker: &Broker, base: &str, label: &str) {
    let w = Client::connect(broker).await;
    let topic = format!("{base}/repos/{label}/health");
    w.subscribe(&topic).await;
    w.wait_for(|m| m.topic == topic && m.json()["probed_at"].is_string())
        .await;
}

/// A job's record once it is final (its retained state says so).
async fn until_final(broker: &Broker, base: &str, job_id: &str) -> Value {
    let watcher = Client::connect(broker).await;
    let topic = format!("{base}/jobs/{job_id}/state");
    watcher.subscribe(&topic).await;
    watcher
        .wait_for(|m| m.topic == topic && !m.payload.is_empty() && is_final(&m.json()["state"]))
        .await
        .json()
}

fn is_final(state: &Value) -> bool {
    !matches!(state.as_str(), Some("queued") | Some("running") | None)
}

/// The ids of every stored `backup/run` job.
async fn stored_backups(c: &Client, base: &str) -> BTreeSet<String> {
    c.jobs(base)
        .await
        .iter()
        .filter(|j| j["command"] == "backup/run")
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect()
}

/// borgmatic or borg processes of a backup (`create`) under `dir` (the health
/// probe's `repo-list` may legitimately run at start-up).
fn backups_under(dir: &str) -> Vec<String> {
    processes_with(dir)
        .into_iter()
        .filter(|l| l.contains("create"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_kill_9_mid_backup_and_after_borg_leaves_no_orphan_and_an_honest_record() {
    let broker = Broker::start();
    let repos = Repos::new();
    // Mid-backup: borg blocks reading a FIFO nobody writes to (one repository per
    // round: a killed borg may leave its lock behind).
    for round in 0..ROUNDS {
        let label = format!("mid{round}");
        repos.add(&label, "");
        repos.block_backups(&label);
    }
    // After borg: the archive is written, then a hook keeps borgmatic busy.
    // A sleep length of this run only, so that a process is recognised as ours.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let hook = format!("sleep {}", 1000 + nanos % 8000);
    repos.add(
        "after",
        &format!(
            "commands:\n  - after: action\n    when:\n      - create\n    run:\n      - {hook}\n"
        ),
    );
    let mut worker = Worker::start(&broker, &repos, &[]).await;
    let base = worker.base.clone();
    let c = requester(&broker, &base).await;
    let dir = repos.dir.path().display().to_string();

    let mut interrupted = 0;
    let mut reported = 0;
    for round in 0..ROUNDS {
        // Mid-backup.
        let label = format!("mid{round}");
        let mid = start_backup(&broker, &c, &base, &label, None).await;
        assert_eq!(mid["status"], "ok", "{mid}");
        until_locked(&repos.repo_path(&label)).await;
        assert!(!backups_under(&dir).is_empty(), "the backup runs");
        worker.restart(&broker).await;
        // `online` comes after start-up reconciliation: nothing of the job lives.
        assert_eq!(
            backups_under(&dir),
            Vec::<String>::new(),
            "orphans, round {round}"
        );
        let rec = c.job(&base, mid["job_id"].as_str().unwrap()).await;
        assert_eq!(rec["state"], "interrupted", "{rec}");
        assert!(rec.get("archive_written").is_none(), "{rec}");
        interrupted += 1;

        // After borg wrote the archive.
        let before = repos.archives("after").len();
        let after = start_backup(&broker, &c, &base, "after", None).await;
        assert_eq!(after["status"], "ok", "{after}");
        let job = after["job_id"].as_str().unwrap().to_string();
        tokio::time::timeout(WAIT, async {
            while repos.archives("after").len() == before {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("borg never wrote the archive");
        assert!(!processes_with(&hook).is_empty(), "the hook runs");
        worker.restart(&broker).await;
        assert_eq!(processes_with(&hook), Vec::<String>::new());
        assert_eq!(backups_under(&dir), Vec::<String>::new());
        let archives = repos.archives("after");
        let newest = archives.last().unwrap().clone();
        let rec = c.job(&base, &job).await;
        assert_eq!(rec["state"], "interrupted", "{rec}");
        assert_eq!(rec["archive_written"], json!(newest), "{rec}");
        // The retained summary says the same.
        let late = Client::connect(&broker).await;
        let topic = worker.topic("last/after/backup");
        late.subscribe(&topic).await;
        let summary = late
            .wait_for(|m| m.topic == topic && m.json()["job_id"] == json!(job))
            .await
            .json();
        assert_eq!(summary["archive_written"], json!(newest), "{summary}");
        assert_eq!(summary["state"], "interrupted");
        interrupted += 1;
        reported += 1;
    }
    assert!(repos.check("after"));
    eprintln!(
        "worker kill -9: {interrupted} jobs interrupted, 0 orphans, {reported} archives reported"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_request_after_a_worker_restart_runs_once() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let mut worker = Worker::start(&broker, &repos, &[]).await;
    let base = worker.base.clone();
    let c = requester(&broker, &base).await;
    let rid = uuid_like();
    until_probed(&broker, &base, "nc").await;
    let first = start_backup(&broker, &c, &base, "nc", Some(&rid)).await;
    assert_eq!(first["status"], "ok", "{first}");
    let job = first["job_id"].as_str().unwrap().to_string();
    until_final(&broker, &base, &job).await;
    let mut duplicates = 0;
    for _ in 0..ROUNDS {
        worker.restart(&broker).await;
        // A QoS 1 redelivery after a crash looks exactly like this.
        let again = c
            .request_ok(
                &base,
                "backup/run",
                json!({"token": WRITE_TOKEN, "repository": "nc", "request_id": rid}),
            )
            .await;
        assert_eq!(again["job_id"], json!(job), "a second run was started");
        duplicates += 1;
    }
    assert_eq!(stored_backups(&c, &base).await, BTreeSet::from([job]));
    assert_eq!(repos.archives("nc").len(), 1, "extra runs");
    eprintln!("duplicate delivery: {duplicates} copies after restarts, 1 run");
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_kill_9_without_persistence_leaves_every_retained_topic_whole() {
    let mut broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let worker = Worker::start(&broker, &repos, &[]).await;
    let base = worker.base.clone();
    let mut started = Vec::new();
    let mut answered = 0;
    for _ in 0..ROUNDS {
        let c = requester(&broker, &base).await;
        let resp = start_backup(&broker, &c, &base, "nc", None).await;
        assert_eq!(resp["status"], "ok", "{resp}");
        started.push(resp["job_id"].as_str().unwrap().to_string());
        // While the backup runs and its states and result are on their way.
        broker.restart();
        // A client that asks as soon as it sees `online` is answered: the worker
        // subscribed again before it said so (the broker forgot its session).
        let w = requester(&broker, &base).await;
        let status = worker.topic("status");
        w.subscribe(&status).await;
        w.wait_for(|m| m.topic == status && m.payload == b"online")
            .await;
        let id = started.last().unwrap();
        assert_eq!(w.job(&base, id).await["job_id"], json!(id));
        answered += 1;
    }
    assert_eq!(answered, ROUNDS, "requests answered after a broker restart");
    // The broker kept nothing: every retained topic is there again, and final.
    let c = requester(&broker, &base).await;
    let mut finals = 0;
    for id in &started {
        let rec = until_final(&broker, &base, id).await;
        assert_eq!(rec["state"], "succeeded", "{rec}");
        finals += 1;
    }
    let last = started.last().unwrap();
    let fresh = Client::connect(&broker).await;
    fresh.subscribe(&worker.topic("last/nc/backup")).await;
    fresh.subscribe(&worker.topic("repos/nc/running")).await;
    let summary = fresh
        .wait_for(|m| m.topic.ends_with("last/nc/backup") && m.json()["job_id"] == json!(last))
        .await;
    assert!(summary.retain);
    let running = fresh
        .wait_for(|m| m.topic.ends_with("repos/nc/running"))
        .await;
    assert_eq!(running.text(), "OFF");
    let stored = stored_backups(&c, &base).await;
    assert_eq!(stored, started.iter().cloned().collect());
    assert_eq!(repos.archives("nc").len(), ROUNDS, "extra or missing runs");
    eprintln!(
        "broker kill -9 without persistence: {} started, {answered} requests answered after a restart, {finals} final retained states, {} stored, {} archives",
        started.len(),
        stored.len(),
        ROUNDS
    );
}

/// Reads one MQTT v5 packet from the worker (the test plays the broker).
async fn read_packet(s: &mut TcpStream, buf: &mut BytesMut) -> Packet {
    loop {
        match Packet::read(buf, None) {
            Ok(p) => return p,
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => panic!("the worker sent an unreadable packet: {e}"),
        }
        let n = tokio::time::timeout(WAIT, s.read_buf(buf))
            .await
            .expect("the worker sent nothing")
            .unwrap();
        assert!(n > 0, "the worker closed the connection");
    }
}

async fn write_packet(s: &mut TcpStream, p: Packet) {
    let mut buf = BytesMut::new();
    p.write(&mut buf, None).unwrap();
    s.write_all(&buf).await.unwrap();
}

/// Whether `p` is the worker's `online`.
fn is_online(p: &Packet, status: &str) -> bool {
    matches!(p, Packet::Publish(p) if p.topic == status.as_bytes() && p.payload == b"online".as_slice())
}

/// On every connect the worker's first packet is its SUBSCRIBE, ahead of every
/// publish, also when the broker has no session for it and the last connection left
/// publishes unacknowledged (among them an `online`, sent again first): a client
/// that sees `online` and asks at once is always heard. (A broker restarted without
/// persistence used to get the carried-over `online` before the SUBSCRIBE, and the
/// request that followed it went to no subscriber.) The test plays the broker to
/// see the order of the packets and to hold back every acknowledgement but in the
/// last round, where a request sent right after the first `online` is answered.
#[tokio::test(flavor = "multi_thread")]
async fn every_connect_subscribes_before_anything_is_published_also_without_a_session() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = Broker::at_port(listener.local_addr().unwrap().port());
    let repos = Repos::new();
    repos.add("nc", "");
    let worker = Worker::launch(&broker, &repos);
    let (status, commands) = (worker.topic("status"), worker.topic("cmd/#"));
    let response = worker.topic("response/job/list");
    let rounds = ROUNDS + 2;
    let (mut subscribed_first, mut onlines_carried_over, mut answered) = (0, 0, 0);
    for round in 0..rounds {
        let (mut s, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("the worker did not connect")
            .unwrap();
        let mut buf = BytesMut::new();
        let connect = read_packet(&mut s, &mut buf).await;
        assert!(matches!(connect, Packet::Connect(..)), "{connect:?}");
        let connack = ConnAck {
            session_present: false,
            code: ConnectReturnCode::Success,
            properties: None,
        };
        write_packet(&mut s, Packet::ConnAck(connack)).await;
        let first = read_packet(&mut s, &mut buf).await;
        let Packet::Subscribe(sub) = &first else {
            panic!(
                "round {round}: the first packet after the ConnAck is not the SUBSCRIBE: {first:?}"
            );
        };
        assert!(
            sub.filters.iter().any(|f| f.path == commands),
            "{:?}",
            sub.filters
        );
        subscribed_first += 1;
        if round + 1 < rounds {
            // Nothing is acknowledged: every `online` so far (one per connection)
            // comes again on the next one.
            let mut onlines = 0;
            while onlines < round + 1 {
                if is_online(&read_packet(&mut s, &mut buf).await, &status) {
                    onlines += 1;
                }
            }
            onlines_carried_over += onlines - 1;
            continue;
        }
        // The last round acknowledges everything and asks at the first `online`.
        let suback = SubAck {
            pkid: sub.pkid,
            return_codes: vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); sub.filters.len()],
            properties: None,
        };
        write_packet(&mut s, Packet::SubAck(suback)).await;
        let mut asked = false;
        loop {
            let p = read_packet(&mut s, &mut buf).await;
            if is_online(&p, &status) && !asked {
                let body = json!({"token": READ_TOKEN, "request_id": "after-reconnect"});
                let mut request = Publish::new(
                    worker.topic("cmd/job/list"),
                    QoS::AtLeastOnce,
                    body.to_string(),
                    None,
                );
                request.pkid = 1;
                write_packet(&mut s, Packet::Publish(request)).await;
                asked = true;
            }
            match p {
                Packet::Publish(p) if p.topic == response.as_bytes() => {
                    let r: Value = serde_json::from_slice(&p.payload).unwrap();
                    assert_eq!(r["request_id"], "after-reconnect", "{r}");
                    assert_eq!(r["status"], "ok", "{r}");
                    answered += 1;
                    break;
                }
                Packet::Publish(p) if p.qos != QoS::AtMostOnce => {
                    write_packet(&mut s, Packet::PubAck(PubAck::new(p.pkid, None))).await
                }
                Packet::PingReq(_) => write_packet(&mut s, Packet::PingResp(PingResp)).await,
                _ => {}
            }
        }
    }
    assert_eq!(
        subscribed_first, rounds,
        "connections that subscribed first"
    );
    assert_eq!(
        onlines_carried_over,
        (0..rounds - 1).sum::<usize>(),
        "unacknowledged `online`s sent again"
    );
    assert_eq!(answered, 1);
    eprintln!(
        "{rounds} connections without a session: {subscribed_first} subscribed first, {onlines_carried_over} carried-over `online`s after the SUBSCRIBE, {answered} request answered"
    );
}

/// A subscriber with a persistent session (clean start off, session kept 10
/// minutes) that reconnects after every broker restart and collects job results.
fn persistent_subscriber(
    port: u16,
    filter: String,
) -> tokio::sync::watch::Receiver<BTreeSet<String>> {
    let (tx, rx) = tokio::sync::watch::channel(BTreeSet::new());
    let mut o = MqttOptions::new(uuid_like(), "127.0.0.1", port);
    o.set_credentials("client", CLIENT_PASSWORD);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(600));
    o.set_max_packet_size(Some(64 * 1024 * 1024));
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    tokio::spawn(async move {
        let mut subscribed = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) if !subscribed => {
                    subscribed = true;
                    let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                        // Only backups (health probes publish results too).
                        if let (Some(id), "backup/run") =
                            (v["job_id"].as_str(), v["command"].as_str().unwrap_or(""))
                        {
                            tx.send_modify(|s| {
                                s.insert(id.to_string());
                            });
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread")]
async fn with_broker_persistence_a_persistent_subscriber_gets_every_result_once_per_job() {
    let mut broker = Broker::start_persistent();
    let repos = Repos::new();
    repos.add("nc", "");
    let worker = Worker::start(&broker, &repos, &[]).await;
    let base = worker.base.clone();
    let mut results = persistent_subscriber(broker.port, worker.topic("jobs/+/result"));
    // The subscription exists before the first job.
    let probe = requester(&broker, &base).await;
    let resp = start_backup(&broker, &probe, &base, "nc", None).await;
    assert_eq!(resp["status"], "ok", "{resp}");
    let mut started = vec![resp["job_id"].as_str().unwrap().to_string()];
    tokio::time::timeout(WAIT, results.wait_for(|s| s.contains(&started[0])))
        .await
        .expect("no result")
        .unwrap();
    for round in 0..ROUNDS {
        let c = requester(&broker, &base).await;
        let resp = start_backup(&broker, &c, &base, "nc", None).await;
        assert_eq!(resp["status"], "ok", "{resp}");
        started.push(resp["job_id"].as_str().unwrap().to_string());
        // Stop the broker while the job runs: its result is published meanwhile.
        if round % 2 == 0 {
            broker.terminate();
        } else {
            broker.stop(); // kill -9: saved at most a second ago
        }
        broker.restart();
        let w = Client::connect(&broker).await;
        let status = worker.topic("status");
        w.subscribe(&status).await;
        w.wait_for(|m| m.topic == status && m.payload == b"online")
            .await;
    }
    let want: BTreeSet<String> = started.iter().cloned().collect();
    let got = tokio::time::timeout(WAIT, results.wait_for(|s| want.is_subset(s)))
        .await
        .expect("results missing for the persistent subscriber")
        .unwrap()
        .clone();
    let c = requester(&broker, &base).await;
    let stored = stored_backups(&c, &base).await;
    assert_eq!(got, want);
    assert_eq!(stored, want);
    assert_eq!(repos.archives("nc").len(), started.len(), "extra runs");
    eprintln!(
        "broker restarts with persistence: {} started, {} results received, {} stored",
        started.len(),
        got.len(),
        stored.len()
    );
}

/// A small tmpfs for `state_dir`, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            assert!(
                std::env::var("CI").is_err(),
                "cannot mount a tmpfs (root needed)"
            );
            panic!("cannot mount a tmpfs for state_dir (this test needs root)");
        }
        SmallDisk { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.path().join("fill").display()))
            .output();
    }
    /// Read-only from now on (only possible while no file in it is open for
    /// writing: a worker's own open store keeps writing, so this is for start-up).
    fn read_only(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount ro");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn readyz(http: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{http}/readyz")).await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// Waits (bounded) until /readyz answers `code` (its store probe is cached ~2 s).
async fn until_ready(http: &str, code: u16) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let (c, body) = readyz(http).await;
            if c == code {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/readyz never answered {code}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_state_dir_refuses_jobs_says_why_and_recovers() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let disk = SmallDisk::mount();
    let state = disk.path().display().to_string();
    let (worker, http) =
        start_with_http(&broker, &repos, &[("BMQTT_STATE_DIR", state.as_str())]).await;
    let base = worker.base.clone();
    let c = requester(&broker, &base).await;
    until_ready(&http, 200).await;
    let before = stored_backups(&c, &base).await;

    // The disk fills while the worker runs.
    disk.fill();
    let resp = start_backup(&broker, &c, &base, "nc", None).await;
    assert_eq!(resp["error"]["code"], "unavailable", "{resp}");
    let msg = resp["error"]["message"].as_str().unwrap();
    assert!(msg.contains("disk holding state_dir is full"), "{msg}");
    let body = until_ready(&http, 503).await;
    assert!(body.to_string().contains("full"), "{body}");
    // The worker keeps answering what needs no disk.
    c.request_ok(&base, "job/list", json!({"token": READ_TOKEN}))
        .await;
    // Space returns: the worker recovers by itself.
    std::fs::remove_file(disk.path().join("fill")).unwrap();
    until_ready(&http, 200).await;
    let resp = start_backup(&broker, &c, &base, "nc", None).await;
    assert_eq!(resp["status"], "ok", "{resp}");
    let job = resp["job_id"].as_str().unwrap().to_string();
    assert_eq!(
        until_final(&broker, &base, &job).await["state"],
        "succeeded"
    );
    let after = stored_backups(&c, &base).await;
    assert_eq!(
        after.len() - before.len(),
        1,
        "only the accepted job is stored"
    );
    assert_eq!(repos.archives("nc").len(), 1);
    eprintln!("full state_dir: 1 job refused unavailable (disk full), readyz 503 then 200, 1 accepted after recovery");
}

/// The worker's start-up output on a broken `state_dir`.
fn start_output(disk: &SmallDisk) -> String {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let mut env = Worker::env(&broker, &repos);
    env.push(("BMQTT_STATE_DIR".into(), disk.path().display().to_string()));
    env.push((
        "BMQTT_MQTT__BASE_TOPIC".into(),
        format!("test/{}", uuid_like()),
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_borgmatic-mqtt"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn starting_on_a_full_or_read_only_state_dir_says_which() {
    let full = SmallDisk::mount();
    full.fill();
    let text = start_output(&full);
    assert!(
        text.contains("the disk holding state_dir is full"),
        "{text}"
    );
    let ro = SmallDisk::mount();
    ro.read_only();
    let text = start_output(&ro);
    assert!(text.contains("ead-only file system"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_backup_ends_the_job_interrupted_with_nothing_left_running() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    repos.block_backups("nc");
    let mut worker = Worker::start(&broker, &repos, &[]).await;
    let base = worker.base.clone();
    let c = requester(&broker, &base).await;
    let watcher = Client::connect(&broker).await;
    watcher.subscribe(&worker.topic("jobs/+/result")).await;
    let resp = start_backup(&broker, &c, &base, "nc", None).await;
    assert_eq!(resp["status"], "ok", "{resp}");
    let job = resp["job_id"].as_str().unwrap().to_string();
    until_locked(&repos.repo_path("nc")).await;
    let status = worker.terminate();
    assert!(status.success(), "{status:?}");
    let dir = repos.dir.path().display().to_string();
    assert_eq!(backups_under(&dir), Vec::<String>::new(), "left running");
    // The result went out before the worker exited.
    let topic = worker.topic(&format!("jobs/{job}/result"));
    let result = watcher.wait_for(|m| m.topic == topic).await.json();
    assert_eq!(result["state"], "interrupted", "{result}");
    assert!(repos.check("nc"));
    eprintln!("SIGTERM: 1 job interrupted, result published, 0 processes left, repository checks");
}
