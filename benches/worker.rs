//! `cargo bench --bench worker`: starts its own Mosquitto and worker (release
//! build) as the tests do, and prints one table: the median and the spread
//! (min–max) of several runs per figure. Speed and memory live here, never in tests.
//!
//! - `BENCH_RUNS` (default 5): runs per figure.
//! - `BENCH_ONLY=overhead,latest,stream,fanout,latency,slow,bulk,memory,store`: a subset.
//! - `BENCH_BIG=0`: skip the 1,000,000-line stream.
//! - `BENCH_BULK_SSE` (default 500): SSE clients in `bulk` (0 shows the MQTT side alone).

#[path = "../tests/it/helpers/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};
use support::*;
use tokio::sync::mpsc;

// ---------------------------------------------------------------- the table

struct Row {
    figure: String,
    values: Vec<f64>,
    unit: &'static str,
    target: &'static str,
}

#[derive(Default)]
struct Table(Vec<Row>);

impl Table {
    fn add(
        &mut self,
        figure: impl Into<String>,
        values: Vec<f64>,
        unit: &'static str,
        target: &'static str,
    ) {
        let row = Row {
            figure: figure.into(),
            values,
            unit,
            target,
        };
        eprintln!("  {}: {}", row.figure, render(&row));
        self.0.push(row);
    }

    fn print(&self) {
        println!("\n| figure | median | spread (min–max) | runs | target |");
        println!("|---|---|---|---|---|");
        for r in &self.0 {
            println!(
                "| {} | {} | {} |{}",
                r.figure,
                render(r),
                r.values.len(),
                if r.target.is_empty() {
                    " |".to_string()
                } else {
                    format!(" {} |", r.target)
                }
            );
        }
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 10_000.0 {
        let s = format!("{:.0}", v);
        // Thousands separators make rates readable.
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn render(r: &Row) -> String {
    let mut v = r.values.clone();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return "n/a | n/a".into();
    }
    let m = if v.len() % 2 == 0 {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    } else {
        v[v.len() / 2]
    };
    format!(
        "{} {} | {}–{}",
        fmt(m),
        r.unit,
        fmt(v[0]),
        fmt(v[v.len() - 1])
    )
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

// ---------------------------------------------------------------- the process

fn status_kb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

fn rss_mb(pid: u32) -> f64 {
    status_kb(pid, "VmRSS:") / 1024.0
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Samples a process's RSS until stopped; returns the highest seen.
fn sample_peak_rss(
    pid: u32,
) -> (
    tokio::task::JoinHandle<f64>,
    tokio_util::sync::CancellationToken,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let h = tokio::spawn(async move {
        let mut peak: f64 = rss_mb(pid);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => peak = peak.max(rss_mb(pid)),
                _ = s.cancelled() => return peak.max(rss_mb(pid)),
            }
        }
    });
    (h, stop)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------- the stand-in

/// A stand-in `borgmatic`: answers `--version`; for any action prints the lines
/// its `.json` file asks for to stderr (as fast as it can, or at a rate), noting
/// when the first one left, then `[]` on stdout (an empty archive list).
struct StandIn {
    bin: PathBuf,
}

impl StandIn {
    fn new(dir: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("fake-borgmatic");
        std::fs::write(
            &bin,
            "#!/bin/sh\ncase \"$*\" in *--version*) echo 2.1.10; exit 0;; esac\n\
             if [ -s \"$0.json\" ]; then exec python3 \"$0.py\" \"$0\"; fi\necho '[]'\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("fake-borgmatic.py"),
            r#"import json, os, sys, time
me = sys.argv[1]
conf = json.load(open(me + ".json"))
n, rate = conf["lines"], conf["rate"]
out = sys.stderr.buffer
if conf.get("gate"):
    # Wait (at most 120 s) until the bench has its listeners in place.
    t_end = time.monotonic() + 120
    while not os.path.exists(me + ".go") and time.monotonic() < t_end:
        time.sleep(0.01)
open(me + ".start", "w").write(repr(time.time()))
if rate == 0:
    step = 10000
    for a in range(1, n + 1, step):
        out.write("".join("line %d\n" % i for i in range(a, min(a + step, n + 1))).encode())
else:
    per_tick = max(1, rate // 100)
    t0 = time.monotonic()
    i = 1
    while i <= n:
        b = min(i + per_tick, n + 1)
        out.write("".join("line %d\n" % k for k in range(i, b)).encode())
        out.flush()
        i = b
        ahead = t0 + (i - 1) / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
out.flush()
print("[]")
"#,
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { bin }
    }

    /// 0 lines: the stand-in answers at once (shell only).
    fn set(&self, lines: u64, rate: u64) {
        let conf = format!("{}.json", self.bin.display());
        if lines == 0 {
            let _ = std::fs::remove_file(conf);
        } else {
            std::fs::write(conf, json!({"lines": lines, "rate": rate}).to_string()).unwrap();
        }
    }

    /// Like [`StandIn::set`] at full speed, but the child prints nothing until
    /// [`StandIn::open_gate`] (or 120 s).
    fn set_gated(&self, lines: u64) {
        let _ = std::fs::remove_file(format!("{}.go", self.bin.display()));
        let conf = format!("{}.json", self.bin.display());
        let body = json!({"lines": lines, "rate": 0, "gate": true}).to_string();
        std::fs::write(conf, body).unwrap();
    }

    fn open_gate(&self) {
        std::fs::write(format!("{}.go", self.bin.display()), "").unwrap();
    }

    /// When the child wrote its first line (wall clock).
    fn started_at(&self) -> f64 {
        std::fs::read_to_string(format!("{}.start", self.bin.display()))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(f64::NAN)
    }
}

// ---------------------------------------------------------------- lean clients

/// An MQTT v5 client that does only what a figure needs, so the bench's own
/// bookkeeping stays out of the measurement.
struct Lean {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, bytes::Bytes)>,
    id: String,
}

impl Lean {
    async fn connect(broker: &Broker) -> Lean {
        let id = uuid_like();
        let mut o = MqttOptions::new(id.clone(), "127.0.0.1", broker.port);
        o.set_credentials("client", CLIENT_PASSWORD);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(Some(64 * 1024 * 1024));
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        o.set_network_options(net);
        let (client, mut el) = AsyncClient::new(o, 1024);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = tx.send((String::new(), bytes::Bytes::new()));
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        if tx.send((topic, p.payload)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        ready_rx.recv().await.expect("lean client did not connect");
        Lean { client, rx, id }
    }

    async fn subscribe(&mut self, filter: String) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        // The SubAck shows up as an empty topic.
        while let Some((t, _)) = self.rx.recv().await {
            if t.is_empty() {
                return;
            }
        }
    }

    /// Runs `command` on repository `nc` and waits for its successful result; the
    /// seconds from publish to result.
    async fn timed_job(&mut self, worker: &Worker, command: &str) -> f64 {
        let t0 = Instant::now();
        let body = json!({"token": READ_TOKEN, "repository": "nc"});
        let r = self.request(&worker.base, command, body).await;
        self.succeeded(worker, &r).await;
        t0.elapsed().as_secs_f64()
    }

    /// Waits for the result of the job a response started; it must have succeeded.
    async fn succeeded(&mut self, worker: &Worker, response: &Value) {
        let job = response["job_id"].as_str().expect("no job id");
        let result = worker.topic(&format!("jobs/{job}/result"));
        while let Some((topic, p)) = self.rx.recv().await {
            if topic == result {
                let v: Value = serde_json::from_slice(&p).unwrap();
                assert_eq!(v["state"], "succeeded", "{v}");
                return;
            }
        }
        panic!("connection closed")
    }

    /// Subscribes to this client's own answer topic (see [`Lean::request`]).
    async fn hear_answers(&mut self, base: &str) {
        let topic = format!("{base}/response/bench/{}", self.id);
        self.subscribe(topic).await;
    }

    /// Publishes a command with a v5 Response Topic of this client's own.
    async fn request(&mut self, base: &str, command: &str, body: Value) -> Value {
        let reply = format!("{base}/response/bench/{}", self.id);
        let props = PublishProperties {
            response_topic: Some(reply.clone()),
            ..Default::default()
        };
        self.client
            .publish_with_properties(
                format!("{base}/cmd/{command}"),
                QoS::AtLeastOnce,
                false,
                body.to_string(),
                props,
            )
            .await
            .unwrap();
        while let Some((t, p)) = self.rx.recv().await {
            if t == reply {
                return serde_json::from_slice(&p).unwrap();
            }
        }
        panic!("connection closed")
    }
}

fn seq_of(payload: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(payload).ok()?;
    let i = s.find("\"seq\":")? + 6;
    let digits: String = s[i..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------- the figures

fn wanted(section: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(v) => v.split(',').any(|s| s.trim() == section),
        Err(_) => true,
    }
}

/// Figure 1: archive/list over MQTT against the same borgmatic run directly, A B A B.
async fn overhead(t: &mut Table, broker: &Broker, runs: usize) {
    let repos = Repos::new();
    repos.add("nc", "");
    let worker = Worker::start(broker, &repos, &[("BMQTT_LOG__LEVEL", "warn")]).await;
    let mut c = Lean::connect(broker).await;
    c.subscribe(worker.topic("jobs/+/result")).await;
    c.hear_answers(&worker.base).await;
    let cfg = repos.config_dir().join("nc.yaml");
    let (mut direct, mut mqtt, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        let out = repos
            .borgmatic(&cfg, &["repo-list", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let a = t0.elapsed().as_secs_f64();
        let b = c.timed_job(&worker, "archive/list").await;
        direct.push(a * 1000.0);
        mqtt.push(b * 1000.0);
        ratio.push(b / a);
    }
    t.add("archive/list: borgmatic run directly", direct, "ms", "");
    t.add("archive/list over MQTT (publish → result)", mqtt, "ms", "");
    t.add("overhead: MQTT ÷ direct", ratio, "×", "≤ 1.03");
}

/// Figure 1b: repo/latest-stats over MQTT against the fastest borgmatic run that
/// gives the same answer (`info --json --last 1`, one borg call), A B A B; and
/// `info --archive latest` (what the worker ran before: a listing, then info).
async fn latest_stats(t: &mut Table, broker: &Broker, runs: usize) {
    let repos = Repos::new();
    repos.add("nc", "");
    let cfg = repos.config_dir().join("nc.yaml");
    for i in 0..3 {
        std::fs::write(repos.source("nc").join(format!("f{i}")), format!("{i}")).unwrap();
        let out = repos.borgmatic(&cfg, &["create"]).output().unwrap();
        assert!(out.status.success());
    }
    let worker = Worker::start(broker, &repos, &[("BMQTT_LOG__LEVEL", "warn")]).await;
    let mut c = Lean::connect(broker).await;
    // The start-up health probe holds the repository briefly: await its report.
    let health = worker.topic("repos/nc/health");
    c.subscribe(health.clone()).await;
    while let Some((topic, _)) = c.rx.recv().await {
        if topic == health {
            break;
        }
    }
    c.subscribe(worker.topic("jobs/+/result")).await;
    c.hear_answers(&worker.base).await;
    let time_direct = |args: &[&str]| {
        let t0 = Instant::now();
        let out = repos.borgmatic(&cfg, args).output().unwrap();
        assert!(out.status.success());
        (t0.elapsed().as_secs_f64(), out.stdout)
    };
    let (mut direct, mut old, mut mqtt, mut ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (a, out) = time_direct(&["info", "--json", "--last", "1"]);
        let (o, latest) = time_direct(&["info", "--json", "--archive", "latest"]);
        let same = |v: &[u8]| serde_json::from_slice::<Value>(v).unwrap()[0]["archives"][0].clone();
        assert_eq!(
            same(&out),
            same(&latest),
            "--last 1 and --archive latest differ"
        );
        let b = c.timed_job(&worker, "repo/latest-stats").await;
        direct.push(a * 1000.0);
        old.push(o * 1000.0);
        mqtt.push(b * 1000.0);
        ratio.push(b / a);
    }
    t.add(
        "repo/latest-stats: borgmatic `info --last 1` run directly",
        direct,
        "ms",
        "",
    );
    t.add(
        "repo/latest-stats: borgmatic `info --archive latest` run directly (before)",
        old,
        "ms",
        "",
    );
    t.add(
        "repo/latest-stats over MQTT (publish → result)",
        mqtt,
        "ms",
        "",
    );
    t.add(
        "overhead: latest-stats over MQTT ÷ direct",
        ratio,
        "×",
        "≤ 1.05",
    );
}

/// A worker on the stand-in, with HTTP, no rate limits in the way.
async fn standin_worker(
    broker: &Broker,
    repos: &Repos,
    standin: &StandIn,
    listen: &str,
    log_qos: &str,
) -> Worker {
    for i in 0..10 {
        std::fs::write(
            repos.config_dir().join(format!("r{i}.yaml")),
            "source_directories: [/tmp]\nrepositories: []\n",
        )
        .unwrap();
    }
    let bin = standin.bin.display().to_string();
    Worker::start(
        broker,
        repos,
        &[
            ("BMQTT_BORGMATIC__BINARY", bin.as_str()),
            ("BMQTT_HTTP__LISTEN", listen),
            ("BMQTT_DOCKER__ENABLED", "false"),
            ("BMQTT_LIMITS__READ_PER_MINUTE", "100000000"),
            ("BMQTT_LIMITS__WRITE_PER_MINUTE", "100000000"),
            ("BMQTT_JOBS__LOG_QOS", log_qos),
            ("BMQTT_JOBS__MAX_CONCURRENT", "10"),
            ("BMQTT_LOG__LEVEL", "warn"),
        ],
    )
    .await
}

/// Figure 2: N lines as fast as the child can print them, to an MQTT subscriber
/// (QoS 1) and an SSE client at the same time.
async fn stream(t: &mut Table, broker: &Broker, runs: usize, qos: u8, sizes: &[u64]) {
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::new(dir.path());
    let repos = Repos::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let worker = standin_worker(broker, &repos, &standin, &listen, &qos.to_string()).await;
    let url = format!("http://{listen}");
    let http = reqwest::Client::new();
    for &n in sizes {
        standin.set(n, 0);
        let (mut mqtt_rate, mut sse_rate, mut lost, mut sse_lost) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let reps = if n >= 1_000_000 { runs.min(3) } else { runs };
        for _ in 0..reps {
            let mut sub = Lean::connect(broker).await;
            sub.subscribe(worker.topic("jobs/+/log")).await;
            sub.subscribe(worker.topic("jobs/+/result")).await;
            sub.hear_answers(&worker.base).await;
            let r = sub
                .request(
                    &worker.base,
                    "backup/run",
                    json!({"token": WRITE_TOKEN, "repository": "r0"}),
                )
                .await;
            let job = r["job_id"].as_str().expect("no job id").to_string();
            let sse = http
                .get(format!("{url}/api/v1/jobs/{job}/events"))
                .bearer_auth(READ_TOKEN)
                .send()
                .await
                .unwrap();
            let sse_task = tokio::spawn(async move {
                let mut seen = vec![false; n as usize + 1];
                let mut last_at = 0.0;
                let mut body = sse.bytes_stream();
                let mut carry = String::new();
                'read: while let Some(Ok(chunk)) = body.next().await {
                    carry.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = carry.find("\n\n") {
                        let block: String = carry.drain(..end + 2).collect();
                        if block.starts_with("event: log") {
                            if let Some(seq) = block
                                .lines()
                                .find_map(|l| l.strip_prefix("id: "))
                                .and_then(|v| v.parse::<usize>().ok())
                            {
                                if seq <= n as usize {
                                    seen[seq] = true;
                                }
                                last_at = now_secs();
                            }
                        } else if block.starts_with("event: result") {
                            break 'read;
                        }
                    }
                }
                (seen.iter().skip(1).filter(|s| **s).count() as u64, last_at)
            });
            let job_log = worker.topic(&format!("jobs/{job}/log"));
            let job_result = worker.topic(&format!("jobs/{job}/result"));
            let mut seen = vec![false; n as usize + 1];
            let mut last_at = 0.0;
            while let Some((topic, p)) =
                tokio::time::timeout(Duration::from_secs(300), sub.rx.recv())
                    .await
                    .expect("no result within 300 s")
            {
                if topic == job_log {
                    if let Some(seq) = seq_of(&p) {
                        if seq <= n {
                            seen[seq as usize] = true;
                        }
                    }
                    last_at = now_secs();
                } else if topic == job_result {
                    break;
                }
            }
            let start = standin.started_at();
            let got = seen.iter().skip(1).filter(|s| **s).count() as u64;
            mqtt_rate.push(got as f64 / (last_at - start));
            lost.push((n - got) as f64);
            let (sse_got, sse_last) = sse_task.await.unwrap();
            sse_rate.push(sse_got as f64 / (sse_last - start));
            sse_lost.push((n - sse_got) as f64);
        }
        t.add(
            format!(
                "stream {} lines → MQTT subscriber, log QoS {qos}",
                fmt(n as f64)
            ),
            mqtt_rate,
            "lines/s",
            "≥ 100,000",
        );
        t.add(
            format!(
                "stream {} lines: lost over MQTT, log QoS {qos}",
                fmt(n as f64)
            ),
            lost,
            "lines",
            "0",
        );
        t.add(
            format!(
                "stream {} lines → SSE client (same runs, QoS {qos})",
                fmt(n as f64)
            ),
            sse_rate,
            "lines/s",
            "≥ 100,000",
        );
        t.add(
            format!(
                "stream {} lines: lost over SSE (announced as `lagged`), QoS {qos}",
                fmt(n as f64)
            ),
            sse_lost,
            "lines",
            "",
        );
    }
}

/// Figure 3: 1,000 SSE clients on one job printing 10,000 lines/s for 5 s.
async fn fanout(t: &mut Table, broker: &Broker, runs: usize) {
    const CLIENTS: usize = 1000;
    const RATE: u64 = 10_000;
    const LINES: u64 = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::new(dir.path());
    let repos = Repos::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let worker = standin_worker(broker, &repos, &standin, &listen, "1").await;
    let pid = worker.pid().expect("worker not running");
    let url = format!("http://{listen}");
    let (mut delivered, mut lagged, mut cpu, mut rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.min(3) {
        standin.set(LINES, RATE);
        let mut c = Lean::connect(broker).await;
        c.hear_answers(&worker.base).await;
        // Clients connect while the job runs: each gets the backlog, then live lines.
        let r = c
            .request(
                &worker.base,
                "backup/run",
                json!({"token": WRITE_TOKEN, "repository": "r1"}),
            )
            .await;
        let job = r["job_id"].as_str().unwrap().to_string();
        let lines = Arc::new(AtomicU64::new(0));
        let lags = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let cpu0 = cpu_secs(pid);
        let t0 = Instant::now();
        let (peak, stop) = sample_peak_rss(pid);
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (http, url, job) = (http.clone(), url.clone(), job.clone());
            let (lines, lags) = (lines.clone(), lags.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(resp) = http
                    .get(format!("{url}/api/v1/jobs/{job}/events"))
                    .bearer_auth(READ_TOKEN)
                    .send()
                    .await
                else {
                    return;
                };
                let mut body = resp.bytes_stream();
                let mut carry = String::new();
                while let Some(Ok(chunk)) = body.next().await {
                    carry.push_str(&String::from_utf8_lossy(&chunk));
                    let (mut l, mut g) = (0, 0);
                    let mut done = false;
                    while let Some(end) = carry.find("\n\n") {
                        let block = &carry[..end];
                        if block.starts_with("event: log") {
                            l += 1;
                        } else if block.starts_with("event: lagged") {
                            g += 1;
                        } else if block.starts_with("event: result") {
                            done = true;
                        }
                        carry.drain(..end + 2);
                    }
                    lines.fetch_add(l, Ordering::Relaxed);
                    lags.fetch_add(g, Ordering::Relaxed);
                    if done {
                        return;
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        stop.cancel();
        let secs = t0.elapsed().as_secs_f64();
        cpu.push((cpu_secs(pid) - cpu0) / secs * 100.0);
        rss.push(peak.await.unwrap());
        delivered
            .push(lines.load(Ordering::Relaxed) as f64 / (LINES as f64 * CLIENTS as f64) * 100.0);
        lagged.push(lags.load(Ordering::Relaxed) as f64);
    }
    t.add(
        "fan-out: 1,000 SSE clients × 10,000 lines/s: lines delivered",
        delivered,
        "%",
        "",
    );
    t.add(
        "fan-out: `lagged` events (all clients)",
        lagged,
        "events",
        "",
    );
    t.add("fan-out: worker CPU (100 % = one core)", cpu, "%", "");
    t.add("fan-out: worker peak RSS", rss, "MB", "");
}

/// Figure 4: Request → response of `job/list` over MQTT and HTTP, 1 and 50 clients.
async fn latency(t: &mut Table, broker: &Broker, runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::new(dir.path());
    let repos = Repos::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let worker = standin_worker(broker, &repos, &standin, &listen, "1").await;
    let url = format!("http://{listen}");
    const REQUESTS: usize = 2000;
    for clients in [1usize, 50] {
        let mut figures: [Vec<f64>; 4] = Default::default();
        for _ in 0..runs {
            let per = REQUESTS / clients;
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let mut c = Lean::connect(broker).await;
                c.hear_answers(&worker.base).await;
                let base = worker.base.clone();
                tasks.push(tokio::spawn(async move {
                    let mut v = Vec::with_capacity(per);
                    for _ in 0..per {
                        let t0 = Instant::now();
                        let r = c
                            .request(&base, "job/list", json!({"token": READ_TOKEN, "limit": 1}))
                            .await;
                        assert_eq!(r["status"], "ok", "{r}");
                        v.push(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                    v
                }));
            }
            let mut mqtt = Vec::new();
            for task in tasks {
                mqtt.extend(task.await.unwrap());
            }
            let http = reqwest::Client::new();
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let (http, url) = (http.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let mut v = Vec::with_capacity(per);
                    for _ in 0..per {
                        let t0 = Instant::now();
                        let r = http
                            .post(format!("{url}/api/v1/cmd/job/list"))
                            .bearer_auth(READ_TOKEN)
                            .json(&json!({"limit": 1}))
                            .send()
                            .await
                            .unwrap();
                        assert!(r.status().is_success());
                        let _ = r.bytes().await;
                        v.push(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                    v
                }));
            }
            let mut http_v = Vec::new();
            for task in tasks {
                http_v.extend(task.await.unwrap());
            }
            for (i, mut v) in [mqtt, http_v].into_iter().enumerate() {
                figures[2 * i].push(percentile(&mut v, 0.5));
                figures[2 * i + 1].push(percentile(&mut v, 0.99));
            }
        }
        let [mqtt50, mqtt99, http50, http99] = figures;
        t.add(
            format!("job/list over MQTT, {clients} client(s): p50"),
            mqtt50,
            "ms",
            "",
        );
        t.add(
            format!("job/list over MQTT, {clients} client(s): p99"),
            mqtt99,
            "ms",
            "≤ 5",
        );
        t.add(
            format!("job/list over HTTP, {clients} client(s): p50"),
            http50,
            "ms",
            "",
        );
        t.add(
            format!("job/list over HTTP, {clients} client(s): p99"),
            http99,
            "ms",
            "≤ 5",
        );
    }
}

/// `job/list` over MQTT while six clients keep `net/tcp-check`s to a port that drops
/// SYNs in flight (each takes its full 3 s timeout): one slow request must hold up
/// no other (issue: 6 such checks once made a job/list take 17.7 s).
async fn slow_neighbours(t: &mut Table, broker: &Broker, runs: usize) {
    // A loopback port with a full accept queue (backlog 0, one connection never
    // accepted): the kernel drops further SYNs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let _listener = socket.listen(0).unwrap();
    let _filler = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let repos = Repos::new();
    std::fs::write(
        repos.config_dir().join("blackhole.yaml"),
        format!("source_directories: [/tmp]\nrepositories:\n  - path: ssh://root@127.0.0.1:{port}/./r\n    label: blackhole\n"),
    )
    .unwrap();
    let worker = Worker::start(
        broker,
        &repos,
        &[
            ("BMQTT_LIMITS__READ_PER_MINUTE", "100000000"),
            ("BMQTT_LOG__LEVEL", "warn"),
        ],
    )
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut slow = Vec::new();
    for _ in 0..6 {
        let mut c = Lean::connect(broker).await;
        c.hear_answers(&worker.base).await;
        let (base, stop) = (worker.base.clone(), stop.clone());
        slow.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"token": READ_TOKEN, "host": "127.0.0.1", "port": port});
                c.request(&base, "net/tcp-check", body).await;
            }
        }));
    }
    let mut c = Lean::connect(broker).await;
    c.hear_answers(&worker.base).await;
    let mut p99 = Vec::new();
    for _ in 0..runs {
        let mut v = Vec::with_capacity(200);
        for _ in 0..200 {
            let t0 = Instant::now();
            let r = c
                .request(
                    &worker.base,
                    "job/list",
                    json!({"token": READ_TOKEN, "limit": 1}),
                )
                .await;
            assert_eq!(r["status"], "ok", "{r}");
            v.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        p99.push(percentile(&mut v, 0.99));
    }
    stop.store(true, Ordering::Relaxed);
    for s in slow {
        let _ = s.await;
    }
    t.add(
        "job/list over MQTT while 6 tcp-checks hang: p99",
        p99,
        "ms",
        "≤ 2× idle",
    );
}

/// Jiffies the whole machine spent busy and in total (all cores), from `/proc/stat`.
fn machine_jiffies() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = f.iter().take(8).sum();
    // idle and iowait are not busy.
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// Seconds all threads of a process spent runnable but waiting for a CPU
/// (`/proc/<pid>/task/*/schedstat`, second field).
fn cpu_wait_secs(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return f64::NAN;
    };
    let ns: f64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum();
    ns / 1e9
}

/// An MQTT v5 subscriber that subscribes (QoS 1) and then never reads its socket
/// again: the broker's queue for it and the kernel's buffers fill, as with a client
/// on a dead link or in a debugger. Written by hand so that nothing reads for it.
async fn stuck_subscriber(broker: &Broker, filter: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    fn string(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
    fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        let mut n = body.len();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(body);
        out
    }
    async fn read_packet(s: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
        let kind = s.read_u8().await.unwrap();
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = s.read_u8().await.unwrap();
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).await.unwrap();
        (kind, body)
    }
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", broker.port))
        .await
        .unwrap();
    // CONNECT: v5, clean start, user name and password, no keep-alive (so the
    // broker never drops it for silence), no properties.
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.extend_from_slice(&[5, 0xC2, 0, 0, 0]);
    string(&mut body, &format!("stuck-{}", uuid_like()));
    string(&mut body, "client");
    string(&mut body, CLIENT_PASSWORD);
    s.write_all(&packet(0x10, &body)).await.unwrap();
    let (kind, ack) = read_packet(&mut s).await;
    assert_eq!((kind, ack.get(1)), (0x20, Some(&0)), "CONNACK refused");
    // SUBSCRIBE: packet id 1, no properties, the filter at QoS 1.
    let mut body = vec![0, 1, 0];
    string(&mut body, filter);
    body.push(1);
    s.write_all(&packet(0x82, &body)).await.unwrap();
    let (kind, ack) = read_packet(&mut s).await;
    assert_eq!((kind, ack.last()), (0x90, Some(&1)), "SUBACK refused");
    s
}

/// `job/list` over MQTT, `n` requests one after the other (at most `limit` long,
/// stopping early once `until` fires): the latencies in ms.
async fn job_list_times(
    c: &mut Lean,
    base: &str,
    n: usize,
    limit: Duration,
    until: Option<&tokio_util::sync::CancellationToken>,
) -> Vec<f64> {
    let mut v = Vec::with_capacity(n);
    let end = Instant::now() + limit;
    while v.len() < n && Instant::now() < end && !until.is_some_and(|u| u.is_cancelled()) {
        let t0 = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            c.request(base, "job/list", json!({"token": READ_TOKEN, "limit": 1})),
        )
        .await
        .expect("no answer to job/list within 30 s");
        assert_eq!(r["status"], "ok", "{r}");
        v.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    v
}

/// Answers before bulk: `job/list` over MQTT idle, then while one job prints
/// 200,000 lines at full speed (log QoS 1) to a subscriber that stopped reading its
/// socket, and 500 SSE clients on that job read slowly (half) or not at all (half).
/// No answer may queue behind the log lines.
async fn bulk(t: &mut Table, broker: &Broker, runs: usize) {
    const LINES: u64 = 200_000;
    let sse: usize = std::env::var("BENCH_BULK_SSE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    const IDLE_REQUESTS: usize = 1000;
    const MAX_LOADED_REQUESTS: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let standin = StandIn::new(dir.path());
    let repos = Repos::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let worker = standin_worker(broker, &repos, &standin, &listen, "1").await;
    let wpid = worker.pid().expect("worker not running");
    let bpid = broker.pid().expect("broker not running");
    let url = format!("http://{listen}");
    let mut c = Lean::connect(broker).await;
    c.hear_answers(&worker.base).await;
    let mut starter = Lean::connect(broker).await;
    starter.hear_answers(&worker.base).await;
    starter.subscribe(worker.topic("jobs/+/result")).await;
    let mut f: [Vec<f64>; 12] = Default::default();
    for _ in 0..runs {
        // (a) idle: nothing else runs (the last run's clients are gone).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut idle = job_list_times(
            &mut c,
            &worker.base,
            IDLE_REQUESTS,
            Duration::from_secs(60),
            None,
        )
        .await;
        // (b) loaded: the job waits at its gate until every listener is in place.
        standin.set_gated(LINES);
        let r = starter
            .request(
                &worker.base,
                "backup/run",
                json!({"token": WRITE_TOKEN, "repository": "r2"}),
            )
            .await;
        let job = r["job_id"].as_str().expect("no job id").to_string();
        let stuck = stuck_subscriber(broker, &worker.topic(&format!("jobs/{job}/log"))).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let ready = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..sse {
            let (http, url, job, stop, ready) = (
                http.clone(),
                url.clone(),
                job.clone(),
                stop.clone(),
                ready.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let Ok(resp) = http
                    .get(format!("{url}/api/v1/jobs/{job}/events"))
                    .bearer_auth(READ_TOKEN)
                    .send()
                    .await
                else {
                    return;
                };
                if resp.status().is_success() {
                    ready.fetch_add(1, Ordering::Relaxed);
                }
                if i % 2 == 0 {
                    // Never reads: the worker's writes to it stall.
                    stop.cancelled().await;
                    return;
                }
                // Reads a chunk every 100 ms.
                let mut body = resp.bytes_stream();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        chunk = body.next() => match chunk {
                            Some(Ok(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                            _ => return,
                        },
                    }
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while (ready.load(Ordering::Relaxed) as usize) < sse && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            ready.load(Ordering::Relaxed) as usize,
            sse,
            "not every SSE client connected within 60 s"
        );
        // The job's result ends the measurement.
        let done = tokio_util::sync::CancellationToken::new();
        let result_topic = worker.topic(&format!("jobs/{job}/result"));
        let mut rx = std::mem::replace(&mut starter.rx, mpsc::unbounded_channel().1);
        let watch = {
            let done = done.clone();
            tokio::spawn(async move {
                let end = tokio::time::sleep(Duration::from_secs(300));
                tokio::pin!(end);
                loop {
                    tokio::select! {
                        _ = &mut end => break,
                        m = rx.recv() => match m {
                            Some((topic, _)) if topic == result_topic => break,
                            Some(_) => {}
                            None => break,
                        },
                    }
                }
                done.cancel();
                rx
            })
        };
        let (cpu_w, cpu_b, cpu_me, (busy0, total0)) = (
            cpu_secs(wpid),
            cpu_secs(bpid),
            cpu_secs(std::process::id()),
            machine_jiffies(),
        );
        let (wait_w, wait_b) = (cpu_wait_secs(wpid), cpu_wait_secs(bpid));
        let t0 = Instant::now();
        standin.open_gate();
        let mut loaded = job_list_times(
            &mut c,
            &worker.base,
            MAX_LOADED_REQUESTS,
            Duration::from_secs(300),
            Some(&done),
        )
        .await;
        let secs = t0.elapsed().as_secs_f64();
        let (busy1, total1) = machine_jiffies();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        f[5].push((cpu_secs(wpid) - cpu_w) / secs * 100.0);
        f[6].push((cpu_secs(bpid) - cpu_b) / secs * 100.0);
        f[7].push((cpu_secs(std::process::id()) - cpu_me) / secs * 100.0);
        f[8].push((busy1 - busy0) / (total1 - total0).max(1.0) * cores * 100.0);
        f[9].push(secs);
        f[10].push((cpu_wait_secs(wpid) - wait_w) / secs * 1000.0);
        f[11].push((cpu_wait_secs(bpid) - wait_b) / secs * 1000.0);
        f[4].push(loaded.len() as f64);
        stop.cancel();
        drop(stuck);
        for task in tasks {
            let _ = task.await;
        }
        starter.rx = watch.await.unwrap();
        assert!(done.is_cancelled());
        let (i99, l99) = (percentile(&mut idle, 0.99), percentile(&mut loaded, 0.99));
        f[0].push(percentile(&mut idle, 0.5));
        f[1].push(i99);
        f[2].push(l99);
        f[3].push(l99 / i99);
        standin.set(0, 0);
    }
    let [idle50, idle99, loaded99, ratio, count, w, b, me, machine, secs, wait_w, wait_b] = f;
    t.add("job/list over MQTT, idle: p50", idle50, "ms", "");
    t.add("job/list over MQTT, idle: p99", idle99, "ms", "");
    t.add(
        "job/list over MQTT during 200,000 lines (log QoS 1) to a stuck subscriber + 500 SSE clients: p99",
        loaded99,
        "ms",
        "",
    );
    t.add("bulk: loaded p99 ÷ idle p99", ratio, "×", "≤ 2");
    t.add(
        "bulk: job/list answers during the stream",
        count,
        "requests",
        "",
    );
    t.add("bulk: stream duration", secs, "s", "");
    t.add("bulk: worker CPU (100 % = one core)", w, "%", "");
    t.add("bulk: Mosquitto CPU", b, "%", "");
    t.add("bulk: bench clients CPU (SSE, MQTT)", me, "%", "");
    t.add("bulk: whole machine CPU (all processes)", machine, "%", "");
    t.add(
        "bulk: worker threads waiting for a CPU, per second",
        wait_w,
        "ms/s",
        "",
    );
    t.add(
        "bulk: Mosquitto waiting for a CPU, per second",
        wait_b,
        "ms/s",
        "",
    );
}

/// Figure 5: Worker RSS idle, after 1,000 finished jobs, during 10 concurrent jobs.
async fn memory(t: &mut Table, broker: &Broker, runs: usize) {
    let (mut idle, mut after, mut during, mut per_job) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.min(3) {
        let dir = tempfile::tempdir().unwrap();
        let standin = StandIn::new(dir.path());
        let repos = Repos::new();
        let listen = format!("127.0.0.1:{}", free_port());
        let worker = standin_worker(broker, &repos, &standin, &listen, "1").await;
        let pid = worker.pid().expect("worker not running");
        // Settled: connected, announced, nothing running.
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle.push(rss_mb(pid));
        let mut c = Lean::connect(broker).await;
        c.subscribe(worker.topic("jobs/+/result")).await;
        c.hear_answers(&worker.base).await;
        let t0 = Instant::now();
        for i in 0..1000 {
            let r = c
                .request(
                    &worker.base,
                    "archive/list",
                    json!({"token": READ_TOKEN, "repository": format!("r{}", i % 10)}),
                )
                .await;
            c.succeeded(&worker, &r).await;
        }
        per_job.push(t0.elapsed().as_secs_f64());
        after.push(rss_mb(pid));
        standin.set(100_000, 20_000);
        let (peak, stop) = sample_peak_rss(pid);
        let mut jobs = Vec::new();
        for i in 0..10 {
            let r = c
                .request(
                    &worker.base,
                    "backup/run",
                    json!({"token": WRITE_TOKEN, "repository": format!("r{i}")}),
                )
                .await;
            jobs.push(worker.topic(&format!("jobs/{}/result", r["job_id"].as_str().unwrap())));
        }
        let mut pending: HashMap<String, ()> = jobs.into_iter().map(|j| (j, ())).collect();
        while !pending.is_empty() {
            let (topic, _) = c.rx.recv().await.unwrap();
            pending.remove(&topic);
        }
        stop.cancel();
        during.push(peak.await.unwrap());
        standin.set(0, 0);
    }
    t.add("worker RSS idle after start", idle, "MB", "≤ 18");
    t.add(
        "1,000 sequential jobs over MQTT (request → result)",
        per_job,
        "s",
        "",
    );
    t.add("worker RSS after 1,000 finished jobs", after, "MB", "");
    t.add(
        "worker peak RSS, 10 concurrent jobs × 20,000 lines/s",
        during,
        "MB",
        "",
    );
}

/// Figure 6: The job store alone: record and list 10,000 jobs, and its size.
fn store(t: &mut Table, runs: usize) {
    use borgmatic_mqtt::jobs::{JobRecord, JobState, LogLine, Store, Stream};
    let (mut rec, mut list, mut size) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.min(3) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let lines: Vec<LogLine> = (1..=20)
            .map(|i| LogLine {
                seq: i,
                ts: chrono::Utc::now(),
                stream: Stream::Stderr,
                line: format!("Creating archive at \"/repo::host-2026-11-24\" line {i}"),
            })
            .collect();
        let t0 = Instant::now();
        for _ in 0..10_000 {
            let mut r = JobRecord::queued("backup/run", Some("nc".into()), None);
            s.save(&r, None).unwrap();
            r.state = JobState::Succeeded;
            s.save(
                &r,
                Some(&json!({"archive": "host-2026-11-24", "stats": {"nfiles": 1234}})),
            )
            .unwrap();
            s.save_lines(r.job_id, &lines).unwrap();
        }
        rec.push(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        assert_eq!(s.load_all().unwrap().len(), 10_000);
        list.push(t0.elapsed().as_secs_f64() * 1000.0);
        let bytes: u64 = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        size.push(bytes as f64 / 1024.0 / 1024.0);
    }
    t.add(
        "job store: record 10,000 jobs (queued, final, 20 lines)",
        rec,
        "s",
        "",
    );
    t.add("job store: load 10,000 jobs", list, "ms", "");
    t.add("job store: size on disk after 10,000 jobs", size, "MB", "");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary
    // without it, and then there is nothing to check.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("figures come from `cargo bench --bench worker`; nothing to test here");
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let broker = Broker::start();
    let mut t = Table::default();
    if wanted("overhead") {
        eprintln!("overhead…");
        overhead(&mut t, &broker, runs).await;
    }
    if wanted("latest") {
        eprintln!("latest-stats…");
        latest_stats(&mut t, &broker, runs).await;
    }
    if wanted("stream") {
        eprintln!("stream…");
        let mut sizes = vec![100_000u64];
        if std::env::var("BENCH_BIG").as_deref() != Ok("0") {
            sizes.push(1_000_000);
        }
        stream(&mut t, &broker, runs, 1, &sizes).await;
        stream(&mut t, &broker, runs, 0, &[100_000]).await;
    }
    if wanted("fanout") {
        eprintln!("fan-out…");
        fanout(&mut t, &broker, runs).await;
    }
    if wanted("latency") {
        eprintln!("latency…");
        latency(&mut t, &broker, runs).await;
    }
    if wanted("slow") {
        eprintln!("slow neighbours…");
        slow_neighbours(&mut t, &broker, runs).await;
    }
    if wanted("bulk") {
        eprintln!("answers before bulk…");
        bulk(&mut t, &broker, runs).await;
    }
    if wanted("memory") {
        eprintln!("memory…");
        memory(&mut t, &broker, runs).await;
    }
    if wanted("store") {
        eprintln!("store…");
        store(&mut t, runs);
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "\nmachine: {cpus} cores, {:.0} GiB; runs per figure: {runs}",
        status_kb_total() / 1024.0 / 1024.0
    );
    t.print();
}

fn status_kb_total() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(f64::NAN)
}
