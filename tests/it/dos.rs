//! Denial of service, tried as an attacker would (real Mosquitto, borgmatic and the
//! worker binary): one slow request must hold up no other, no payload, id or topic
//! may grow the worker's memory without bound or drop it off the broker, and a flood
//! of read jobs must not starve a backup. Each test proves the worker kept answering,
//! nothing ran that should not, and memory stayed bounded (VmRSS, a generous
//! correctness bound, not a benchmark).

use std::io::{Read, Write};
use std::time::Duration;

use crate::helpers::*;
use bytes::Bytes;
use reqwest::StatusCode;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use serde_json::{json, Value};

/// A loopback port whose accept queue is full: the kernel drops every further SYN,
/// as a firewalled host does, so a connect hangs until its timeout.
struct Blackhole {
    _listener: tokio::net::TcpListener,
    _filler: std::net::TcpStream,
    port: u16,
}

impl Blackhole {
    fn new() -> Blackhole {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        // Backlog 0: one finished handshake fills the queue; it is never accepted.
        let listener = socket.listen(0).unwrap();
        let filler = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        Blackhole {
            _listener: listener,
            _filler: filler,
            port,
        }
    }

    /// A configuration naming the port (net/tcp-check only reaches configured hosts;
    /// a backup of it hangs in ssh's connect).
    fn configure(&self, repos: &Repos) {
        let src = repos.source("blackhole");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            repos.config_dir().join("blackhole.yaml"),
            format!(
                "source_directories:\n  - {}\nrepositories:\n  - path: ssh://root@127.0.0.1:{}/./repo\n    label: blackhole\n",
                src.display(),
                self.port
            ),
        )
        .unwrap();
    }
}

/// SYNs the kernel dropped at full accept queues so far (this network namespace).
fn listen_drops() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenDrops")
        .expect("no ListenDrops counter");
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

/// The generous bound on the worker's memory after a flood (idle it uses ~15 MiB).
const RSS_BOUND_MIB: u64 = 150;

async fn post(url: &str, command: &str, token: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let resp = http_client()
        .post(format!("{url}/api/v1/cmd/{command}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Writes a whole HTTP request on a fresh connection and returns it unread.
fn raw_post(url: &str, command: &str, token: &str, body: &Value) -> std::net::TcpStream {
    let addr = url.trim_start_matches("http://");
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /api/v1/cmd/{command} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// Waits until `pred` holds (polls a kernel counter; there is no event to await).
async fn until(mut pred: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !pred() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition not reached");
}

fn has_id(m: &Msg, id: &str) -> bool {
    let needle = format!("\"request_id\":\"{id}\"");
    m.payload
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Where in arrival order the response with `id` on `topic` is (waiting for it).
async fn answer_at(c: &Client, topic: &str, id: &str) -> (usize, Value) {
    let m = c.wait_for(|m| m.topic == topic && has_id(m, id)).await;
    let seen = c.seen.lock().unwrap();
    let at = seen
        .iter()
        .position(|s| s.topic == topic && has_id(s, id))
        .unwrap();
    (at, m.json())
}

/// Sends a request marked with v5 Correlation Data `corr` and waits for the answer
/// that carries it (request ids repeat in these tests, correlation never does).
async fn ask(c: &Client, base: &str, command: &str, body: Value, corr: &str) -> Value {
    let props = PublishProperties {
        correlation_data: Some(Bytes::copy_from_slice(corr.as_bytes())),
        ..Default::default()
    };
    c.publish_with(base, command, body.to_string().into_bytes(), props)
        .await;
    let topic = format!("{base}/response/{command}");
    c.wait_for(|m| m.topic == topic && m.correlation.as_deref() == Some(corr.as_bytes()))
        .await
        .json()
}

fn count_answers(c: &Client, topic: &str, id: &str) -> usize {
    c.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.topic == topic && has_id(m, id))
        .count()
}

/// The worker never lost its broker connection: one retained `online`, no Last Will,
/// no reconnect in its log. `watcher` subscribed to `<base>/status` at the start.
async fn assert_never_dropped(worker: &impl Running, watcher: &Client) {
    // A request answered after everything else proves it still listens.
    watcher
        .request_ok(
            worker.base(),
            "job/list",
            json!({"token": READ_TOKEN, "request_id": "still-there"}),
        )
        .await;
    let status = worker.topic("status");
    let msgs = watcher.messages();
    let states: Vec<String> = msgs
        .get(&status)
        .map(|v| v.iter().map(Msg::text).collect())
        .unwrap_or_default();
    assert_eq!(
        states,
        vec!["online"],
        "the worker went offline or reconnected"
    );
    let log = worker.log_text();
    assert!(
        !log.contains("MQTT connection error"),
        "the worker lost its connection:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_command_holds_up_no_other_request() {
    let hole = Blackhole::new();
    let broker = Broker::start();
    let repos = Repos::new();
    hole.configure(&repos);
    let (worker, url) = start_with_http(&broker, &repos, &[]).await;
    let c = Client::connect(&broker).await;
    c.subscribe(&worker.topic("response/#")).await;
    c.subscribe(&worker.topic("status")).await;
    let check = |id: &str| json!({"token": READ_TOKEN, "request_id": id, "host": "127.0.0.1", "port": hole.port});

    // MQTT: six tcp-checks to the silent port, then job/list. The broker delivers
    // them in this order; job/list must be answered before any of them.
    for i in 0..6 {
        c.publish_raw(
            &worker.base,
            "net/tcp-check",
            check(&format!("t{i}")).to_string().into_bytes(),
            false,
        )
        .await;
    }
    // A second copy of t0 waits for t0's answer and gets it (nothing runs twice).
    let copy = PublishProperties {
        correlation_data: Some(Bytes::from_static(b"copy")),
        ..Default::default()
    };
    c.publish_with(
        &worker.base,
        "net/tcp-check",
        check("t0").to_string().into_bytes(),
        copy,
    )
    .await;
    c.publish_raw(
        &worker.base,
        "job/list",
        json!({"token": READ_TOKEN, "request_id": "quick"})
            .to_string()
            .into_bytes(),
        false,
    )
    .await;
    let (list_at, list) = answer_at(&c, &worker.topic("response/job/list"), "quick").await;
    assert_eq!(list["status"], "ok", "{list}");
    let tcp = worker.topic("response/net/tcp-check");
    for i in 0..6 {
        let (at, resp) = answer_at(&c, &tcp, &format!("t{i}")).await;
        assert!(
            at > list_at,
            "job/list waited for a tcp-check ({at} <= {list_at})"
        );
        assert_eq!(resp["status"], "ok", "{resp}");
        assert_eq!(
            resp["data"]["reachable"], false,
            "the blackhole answered: {resp}"
        );
    }
    let copy = c
        .wait_for(|m| m.topic == tcp && m.correlation.as_deref() == Some(b"copy".as_slice()))
        .await;
    let (_, t0) = answer_at(&c, &tcp, "t0").await;
    assert_eq!(copy.json(), t0, "the copy got another answer");

    // HTTP: six tcp-checks in flight (their connects are being dropped), then job/list
    // is answered while none of them has an answer yet.
    let drops = listen_drops();
    let mut pending: Vec<std::net::TcpStream> = (0..6)
        .map(|i| raw_post(&url, "net/tcp-check", READ_TOKEN, &check(&format!("h{i}"))))
        .collect();
    until(|| listen_drops() >= drops + 6).await;
    let (status, list) = post(
        &url,
        "job/list",
        READ_TOKEN,
        json!({"request_id": "hquick"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    for s in &pending {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        let r = s.peek(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a tcp-check was answered before job/list: {r:?}"
        );
    }
    for s in &mut pending {
        s.set_nonblocking(false).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("\"reachable\":false"), "{text}");
    }
    assert_never_dropped(&worker, &c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_and_deep_requests_are_refused_before_parsing() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let (worker, url) = start_with_http_process(&broker, &repos, &[]).await;
    let pid = worker.pid().unwrap();
    let c = subscribed(&broker, &worker.base).await;

    // No token needed to try: three 24 MiB arrays. The broker never delivers them
    // (larger than the worker's maximum packet size), so they cost it nothing.
    let array = {
        let mut v = Vec::with_capacity(24 << 20);
        v.push(b'[');
        while v.len() < (24 << 20) - 2 {
            v.extend_from_slice(b"1,");
        }
        v.extend_from_slice(b"1]");
        v
    };
    for _ in 0..3 {
        c.publish_raw(&worker.base, "backup/run", array.clone(), false)
            .await;
    }
    // A body over the limit that still reaches the worker, and one nested 10,000 deep,
    // both with the write token: refused, nothing runs.
    let pad = "x".repeat(100 * 1024);
    let big = json!({"token": WRITE_TOKEN, "repository": "nc", "pad": pad}).to_string();
    let deep = format!(
        r#"{{"token":"{WRITE_TOKEN}","repository":"nc","x":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    for (corr, body) in [("big", big.clone()), ("deep", deep.clone())] {
        let props = PublishProperties {
            correlation_data: Some(Bytes::from(corr)),
            ..Default::default()
        };
        c.publish_with(&worker.base, "backup/run", body.into_bytes(), props)
            .await;
        let topic = worker.topic("response/backup/run");
        let m = c
            .wait_for(|m| m.topic == topic && m.correlation.as_deref() == Some(corr.as_bytes()))
            .await;
        let resp = m.json();
        assert_eq!(resp["error"]["code"], "invalid", "{resp}");
        let msg = resp["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("limits.max_request_bytes") || msg.contains("limits.max_request_depth"),
            "{msg}"
        );
    }

    // HTTP: the same two, and a body over the HTTP limit.
    for body in [big, deep] {
        let (status, resp) = post(&url, "backup/run", WRITE_TOKEN, body.into_bytes()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
        assert_eq!(resp["error"]["code"], "invalid", "{resp}");
    }
    let (status, _) = post(&url, "backup/run", WRITE_TOKEN, array[..3 << 19].to_vec()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Nothing ran, the worker answers, its memory stayed bounded.
    let list = c
        .request(&worker.base, "job/list", json!({"token": READ_TOKEN}))
        .await;
    assert_eq!(list["data"]["jobs"], json!([]), "{list}");
    assert!(
        !c.messages().keys().any(|t| t.contains("/jobs/")),
        "a job was started"
    );
    let rss = rss_mib(pid);
    assert!(rss < RSS_BOUND_MIB, "the worker uses {rss} MiB");
    assert_never_dropped(&worker, &c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_flood_gets_busy_answers_one_each() {
    let hole = Blackhole::new();
    let broker = Broker::start();
    let repos = Repos::new();
    hole.configure(&repos);
    let worker = Worker::start(
        &broker,
        &repos,
        &[
            ("BMQTT_LIMITS__MAX_IN_FLIGHT", "1"),
            ("BMQTT_LIMITS__READ_PER_MINUTE", "100000"),
        ],
    )
    .await;
    let pid = worker.pid().unwrap();
    let c = Client::connect(&broker).await;
    c.subscribe(&worker.topic("response/#")).await;
    c.subscribe(&worker.topic("status")).await;
    // The one in-flight place is taken by a slow check; 150 requests follow.
    let slow =
        json!({"token": READ_TOKEN, "request_id": "slow", "host": "127.0.0.1", "port": hole.port});
    c.publish_raw(
        &worker.base,
        "net/tcp-check",
        slow.to_string().into_bytes(),
        false,
    )
    .await;
    for i in 0..150 {
        let body = json!({"token": READ_TOKEN, "request_id": format!("f{i}")});
        c.publish_raw(
            &worker.base,
            "job/list",
            body.to_string().into_bytes(),
            false,
        )
        .await;
    }
    let topic = worker.topic("response/job/list");
    let (mut busy, mut ok) = (0, 0);
    for i in 0..150 {
        let (_, resp) = answer_at(&c, &topic, &format!("f{i}")).await;
        match resp["status"].as_str() {
            Some("ok") => ok += 1,
            _ => {
                assert_eq!(resp["error"]["code"], "busy", "{resp}");
                assert!(resp["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("too many requests"));
                busy += 1;
            }
        }
    }
    answer_at(&c, &worker.topic("response/net/tcp-check"), "slow").await;
    assert!(busy > 0 && ok > 0, "busy {busy}, ok {ok}");
    assert_never_dropped(&worker, &c).await;
    for i in 0..150 {
        assert_eq!(count_answers(&c, &topic, &format!("f{i}")), 1, "f{i}");
    }
    let rss = rss_mib(pid);
    assert!(rss < RSS_BOUND_MIB, "the worker uses {rss} MiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_per_principal_and_their_answers_bounded() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let worker = Worker::start(
        &broker,
        &repos,
        &[
            ("BMQTT_LIMITS__DEDUP_CACHE_BYTES", "65536"),
            ("BMQTT_LIMITS__READ_PER_MINUTE", "100000"),
        ],
    )
    .await;
    let pid = worker.pid().unwrap();
    let c = subscribed(&broker, &worker.base).await;
    let base = &worker.base;

    // The answer to "a" before any job exists.
    let a = || json!({"token": READ_TOKEN, "request_id": "a"});
    let first = ask(&c, base, "job/list", a(), "first").await;
    assert_eq!(first["data"]["jobs"], json!([]));
    // A job per principal with the same request id: each runs its own.
    let validate = |token: &str| json!({"token": token, "request_id": "v1"});
    let j1 = ask(&c, base, "config/validate", validate(READ_TOKEN), "j1").await;
    let j2 = ask(&c, base, "config/validate", validate(WRITE_TOKEN), "j2").await;
    assert_eq!(j1["status"], "ok", "{j1}");
    assert_eq!(j2["status"], "ok", "{j2}");
    assert_ne!(
        j1["job_id"], j2["job_id"],
        "another principal got someone else's stored answer"
    );
    for j in [&j1, &j2] {
        c.job_result(base, j["job_id"].as_str().unwrap()).await;
    }
    // The same principal and id: replayed with the same body, refused with another.
    let j1_again = ask(
        &c,
        base,
        "config/validate",
        validate(READ_TOKEN),
        "j1-again",
    )
    .await;
    assert_eq!(j1_again, j1, "a duplicate must get the first answer");
    let other_body = json!({"token": READ_TOKEN, "request_id": "v1", "repository": "nc"});
    let reused = ask(&c, base, "config/validate", other_body, "reused").await;
    assert_eq!(reused["error"]["code"], "invalid", "{reused}");
    assert!(reused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("request_id reused"));
    let again = ask(&c, base, "job/list", a(), "again").await;
    assert_eq!(again, first, "a duplicate must get the first answer");

    // 400 fresh ids overflow a 64 KiB memory cache: memory stays bounded, and the
    // oldest ("a") is still answered as the first time from the job store, which
    // keeps request ids for the whole dedup window (they survive restarts too).
    for i in 0..400 {
        let body = json!({"token": READ_TOKEN, "request_id": format!("n{i}")});
        c.publish_raw(base, "job/list", body.to_string().into_bytes(), false)
            .await;
    }
    let topic = worker.topic("response/job/list");
    for i in 0..400 {
        answer_at(&c, &topic, &format!("n{i}")).await;
    }
    let after = ask(&c, base, "job/list", a(), "after").await;
    assert_eq!(
        after, first,
        "a duplicate within the window gets the first answer"
    );
    let rss = rss_mib(pid);
    assert!(rss < RSS_BOUND_MIB, "the worker uses {rss} MiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_reads_are_capped_and_cannot_starve_a_backup() {
    let hole = Blackhole::new();
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    hole.configure(&repos);
    let (worker, url) = start_with_http(
        &broker,
        &repos,
        &[
            ("BMQTT_JOBS__MAX_CONCURRENT", "1"),
            ("BMQTT_JOBS__MAX_QUEUED_READ", "3"),
        ],
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    let base = &worker.base;

    // The only running place: a backup hanging in ssh's connect to the silent port.
    let holder = c.start_backup(base, "blackhole").await;
    c.wait_state(&worker.base, &holder, "running").await;

    // Three reads queue; the fourth is refused on both transports.
    let mut reads = Vec::new();
    for _ in 0..3 {
        let r = c
            .request_ok(base, "config/validate", json!({"token": READ_TOKEN}))
            .await;
        reads.push(r["job_id"].as_str().unwrap().to_string());
    }
    c.refused_saying(
        base,
        "config/validate",
        json!({"token": READ_TOKEN}),
        "busy",
        "queued",
    )
    .await;
    let (status, resp) = post(&url, "config/validate", READ_TOKEN, b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{resp}");

    // A backup is still accepted and, once the place is free, runs before the reads.
    let backup = c.start_backup(base, "nc").await;
    c.request_ok(
        base,
        "job/cancel",
        json!({"token": WRITE_TOKEN, "job_id": holder}),
    )
    .await;
    let result = c.job_result(base, &backup).await;
    assert_eq!(result["state"], "succeeded", "{result}");
    for r in &reads {
        c.job_result(base, r).await;
    }
    let running_at = |id: &str| {
        let topic = worker.topic(&format!("jobs/{id}/state"));
        c.seen
            .lock()
            .unwrap()
            .iter()
            .position(|m| m.topic == topic && m.json()["state"] == "running")
            .unwrap()
    };
    let b = running_at(&backup);
    for r in &reads {
        assert!(b < running_at(r), "a queued read started before the backup");
    }
    assert_never_dropped(&worker, &c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_topic_or_property_a_client_sends_drops_the_worker() {
    let Scenario {
        broker: _broker,
        repos: _repos,
        worker,
        client: c,
    } = Scenario::new().app().await;
    let base = &worker.base;

    // No token: a command topic as long as MQTT allows, and other suffixes that
    // cannot name a command. None is answered; the worker stays connected.
    let room = 65_535 - format!("{base}/cmd/").len();
    for suffix in ["x".repeat(room), "y".repeat(1_000), "a b/c".into()] {
        c.publish_raw(base, &suffix, b"{}".to_vec(), false).await;
    }
    // A Response Topic too long to use: answered on the default topic.
    let props = PublishProperties {
        response_topic: Some(format!("{base}/response/{}", "r".repeat(60_000))),
        correlation_data: Some(Bytes::from_static(b"rt")),
        ..Default::default()
    };
    let body = json!({"token": READ_TOKEN, "request_id": "rt"});
    c.publish_with(base, "job/list", body.to_string().into_bytes(), props)
        .await;
    let list = worker.topic("response/job/list");
    let m = c.wait_for(|m| m.topic == list && has_id(m, "rt")).await;
    assert_eq!(m.correlation.as_deref(), Some(b"rt".as_slice()));
    assert_eq!(m.json()["status"], "ok");
    // Correlation Data too long to copy: refused, not run, answered without it.
    let props = PublishProperties {
        correlation_data: Some(Bytes::from(vec![b'c'; 60_000])),
        ..Default::default()
    };
    let body = json!({"token": READ_TOKEN, "request_id": "corr"});
    c.publish_with(base, "job/list", body.to_string().into_bytes(), props)
        .await;
    let m = c.wait_for(|m| m.topic == list && has_id(m, "corr")).await;
    assert_eq!(m.correlation, None);
    let resp = m.json();
    assert_eq!(resp["error"]["code"], "invalid", "{resp}");
    assert!(resp["error"]["message"]
        .as_str()
        .unwrap()
        .contains("correlation data"));

    assert_never_dropped(&worker, &c).await;
    let published: Vec<String> = c.messages().into_keys().collect();
    assert!(
        published
            .iter()
            .all(|t| t.len() < 1_000 || t.contains("/cmd/")),
        "the worker published on a long topic"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_too_large_for_the_broker_becomes_a_small_error() {
    // The broker takes packets of at most 4 KiB (its CONNACK says so).
    let broker = Broker::start_with_config("max_packet_size 4096");
    let repos = Repos::new();
    for i in 0..60 {
        std::fs::write(
            repos.config_dir().join(format!("r{i:02}.yaml")),
            format!(
                "source_directories:\n  - /srv\nrepositories:\n  - path: /backups/r{i:02}\n    label: r{i:02}\n"
            ),
        )
        .unwrap();
    }
    let worker = Worker::start(&broker, &repos, &[]).await;
    let c = subscribed(&broker, &worker.base).await;
    c.refused_saying(
        &worker.base,
        "config/list",
        json!({"token": READ_TOKEN}),
        "unavailable",
        "4096 bytes",
    )
    .await;
    assert_never_dropped(&worker, &c).await;
}
