//! Connection-level denial of service (security issue, class 5): what anyone who
//! can reach a port, without a token, could do to the worker. Half-sent HTTP
//! requests, `/readyz` floods, unauthenticated request floods against the audit
//! trail, and other broker users taking over the worker's MQTT session.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A worker started here rather than by `support::Worker`: under a chosen
/// open-file limit, or against a broker with the deployment's users.
struct Proc {
    child: Child,
    base: String,
    state_dir: tempfile::TempDir,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value.into()));
}

/// Starts the worker with `env` on `base`, under `prlimit --nofile` when given, and
/// waits for its retained `online` as `watcher` sees it.
async fn start_proc(
    watcher: &Client,
    mut env: Vec<(String, String)>,
    base: &str,
    nofile: Option<u64>,
) -> Proc {
    let state_dir = tempfile::tempdir().unwrap();
    set(&mut env, "BMQTT_MQTT__BASE_TOPIC", base);
    set(
        &mut env,
        "BMQTT_STATE_DIR",
        &state_dir.path().display().to_string(),
    );
    let log = state_dir.path().join("worker.log");
    let status = format!("{base}/status");
    watcher.subscribe(&status).await;
    let bin = env!("CARGO_BIN_EXE_borgmatic-mqtt");
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let out = std::fs::File::create(&log).unwrap();
    let child = cmd
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .envs(env)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("cannot start the worker");
    let proc = Proc {
        child,
        base: base.into(),
        state_dir,
        log,
    };
    watcher
        .wait_for(|m| m.topic == status && m.payload == b"online".as_slice())
        .await;
    proc
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What happened to one half-sent request.
struct HalfSent {
    answer: Vec<u8>,
    lived: Duration,
    /// Closed with RST: only a refusal does that (a timed-out connection has been
    /// read to its end, so it is closed with FIN).
    reset: bool,
}

impl HalfSent {
    fn refused(&self) -> bool {
        self.answer.starts_with(b"HTTP/1.1 503") || self.reset
    }
    fn connected(&self) -> bool {
        self.answer != b"not connected"
    }
}

/// Connects, sends part of a request's headers, and waits for the worker to close
/// the connection (it must, one way or the other, within [`WAIT`]).
async fn half_sent(addr: String) -> HalfSent {
    let start = Instant::now();
    let Ok(mut s) = TcpStream::connect(&addr).await else {
        // The client's own ports ran short: not the worker's doing.
        return HalfSent {
            answer: b"not connected".to_vec(),
            lived: start.elapsed(),
            reset: false,
        };
    };
    let _ = s
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: worker\r\nX-Slow: ")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut answer)).await;
    let Ok(read) = read else {
        panic!("the worker kept a half-sent request open");
    };
    let held = answer.is_empty() && read.is_ok();
    assert!(
        held || answer.starts_with(b"HTTP/1.1 503") || read.is_err(),
        "unexpected answer {:?}",
        String::from_utf8_lossy(&answer)
    );
    HalfSent {
        answer,
        lived: start.elapsed(),
        reset: read.is_err(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_sent_requests_never_starve_jobs_of_file_descriptors() {
    const NOFILE: u64 = 160;
    const RESERVE: u64 = 96;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
    let cap = (NOFILE - RESERVE - 1) as usize;
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut env = Worker::env(&broker, &repos);
    for (k, v) in [
        ("BMQTT_HTTP__LISTEN", addr.as_str()),
        ("BMQTT_DOCKER__ENABLED", "false"),
        ("BMQTT_HTTP__MAX_CONNECTIONS", "100000"),
        ("BMQTT_HTTP__FD_RESERVE", &RESERVE.to_string()),
        ("BMQTT_HTTP__HEADER_READ_TIMEOUT_SECS", "3"),
    ] {
        set(&mut env, k, v);
    }
    let client = Client::connect(&broker).await;
    let base = format!("test/{}", uuid_like());
    let worker = start_proc(&client, env, &base, Some(NOFILE)).await;
    client.subscribe(&format!("{base}/#")).await;
    let pid = worker.pid();
    let baseline = open_fds(pid);
    assert!(baseline > 0 && baseline < 60, "{baseline} fds at idle");

    // An attacker keeps 300 half-sent requests open, opening a new one whenever
    // the worker closes one.
    let stop = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let flood = {
        let stop = stop.clone();
        let addr = addr.clone();
        let (timed_out, progress) = (timed_out.clone(), progress.clone());
        tokio::spawn(async move {
            let mut open = tokio::task::JoinSet::new();
            let mut done = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if open.len() < 300 {
                    open.spawn(half_sent(addr.clone()));
                } else if let Some(r) = open.join_next().await {
                    let r = r.unwrap();
                    if r.connected() && !r.refused() {
                        timed_out.fetch_add(1, Ordering::Relaxed);
                        progress.notify_waiters();
                    }
                    done.push(r);
                    // Refused connections come back at once: pace the
                    // replacements so the client does not run out of ports.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            while let Some(r) = open.join_next().await {
                done.push(r.unwrap());
            }
            done
        })
    };
    let peak = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(open_fds(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };

    // Meanwhile a backup over MQTT starts, runs and succeeds.
    client.backup_ok(&base, "nc").await;
    // Until a full round of held connections has reached the header timeout.
    loop {
        let next = progress.notified();
        if timed_out.load(Ordering::Relaxed) >= cap {
            break;
        }
        tokio::time::timeout(WAIT, next)
            .await
            .expect("held connections were never closed");
    }
    client
        .request_ok(&base, "job/list", json!({"token": READ_TOKEN}))
        .await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = flood.await.unwrap();
    let peak = peak.await.unwrap();

    let refused = outcomes.iter().filter(|o| o.refused()).count();
    eprintln!(
        "{} connections: {refused} refused, {} not connected; peak {peak} fds (idle {baseline}, cap {cap})",
        outcomes.len(),
        outcomes.iter().filter(|o| !o.connected()).count()
    );
    let held: Vec<&HalfSent> = outcomes
        .iter()
        .filter(|o| o.connected() && !o.refused())
        .collect();
    assert!(
        refused >= 300 - cap,
        "{refused} of {} refused",
        outcomes.len()
    );
    assert!(held.len() >= cap, "only {} held", held.len());
    // Held connections were closed by the header timeout, not before it.
    let early = held
        .iter()
        .filter(|o| o.lived < HEADER_TIMEOUT - Duration::from_millis(200))
        .count();
    assert_eq!(
        early, 0,
        "held connections closed before the header timeout"
    );
    assert!(
        peak <= baseline + cap + 16,
        "{peak} fds open at the peak (idle {baseline}, cap {cap})"
    );
    assert!(peak < (NOFILE - 16) as usize, "{peak} fds of {NOFILE}");
    let log = worker.log_text();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains(&format!("max_connections={cap}")), "{log}");

    // Afterwards HTTP answers again.
    let body = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn event_streams_are_bounded() {
    let broker = Broker::start();
    let repos = Repos::new();
    let (_worker, url) =
        start_with_http(&broker, &repos, &[("BMQTT_HTTP__MAX_EVENT_STREAMS", "2")]).await;
    let http = reqwest::Client::new();
    let open = || {
        http.get(format!("{url}/api/v1/events"))
            .bearer_auth(READ_TOKEN)
            .send()
    };
    let a = open().await.unwrap();
    let b = open().await.unwrap();
    assert_eq!(a.status(), 200);
    assert_eq!(b.status(), 200);
    let c = open().await.unwrap();
    assert_eq!(c.status(), 503);
    let body: Value = c.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // A stream that ends gives its slot back.
    drop(a);
    let mut reopened = false;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if open().await.unwrap().status() == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened, "the closed stream's slot was not freed");
    drop(b);
}

/// A `borgmatic` that notes each `--version` (slowly, so concurrent probes would
/// overlap) and hands everything to the real one.
fn counting_borgmatic(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let count = dir.join("versions");
    let bin = dir.join("counting-borgmatic");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\ncase \"$*\" in *--version*) echo . >> '{}'; sleep 1;; esac\nexec '{}' \"$@\"\n",
            count.display(),
            borgmatic_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (bin, count)
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_probes_borgmatic_once_at_a_time() {
    let broker = Broker::start();
    let repos = Repos::new();
    let dir = tempfile::tempdir().unwrap();
    let (bin, count) = counting_borgmatic(dir.path());
    let (_worker, url) = start_with_http(
        &broker,
        &repos,
        &[("BMQTT_BORGMATIC__BINARY", bin.to_str().unwrap())],
    )
    .await;
    let at_start = lines_in(&count);
    assert_eq!(at_start, 1, "start-up checks the version once");
    let http = reqwest::Client::new();
    for round in 0..2 {
        let calls = (0..60).map(|_| http.get(format!("{url}/readyz")).send());
        for r in futures_util::future::join_all(calls).await {
            let r = r.unwrap();
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["parts"]["borgmatic"]["ok"], true, "{body}");
        }
        assert_eq!(
            lines_in(&count),
            at_start + 1,
            "round {round}: one `borgmatic --version` for 60 concurrent /readyz"
        );
    }
    // /metrics, unauthenticated: concurrent scrapes all answer.
    let calls = (0..60).map(|_| http.get(format!("{url}/metrics")).send());
    for r in futures_util::future::join_all(calls).await {
        let text = r.unwrap().text().await.unwrap();
        assert!(text.contains("bmqtt_requests_total") || text.contains("bmqtt_"));
    }
}

fn audit_lines(state_dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for name in ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"] {
        if let Ok(text) = std::fs::read_to_string(state_dir.join(name)) {
            out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_floods_leave_a_bounded_audit_trail() {
    const HTTP_REFUSALS: usize = 1500;
    const MQTT_REFUSALS: usize = 300;
    const MAX_BYTES: u64 = 65536;
    let broker = Broker::start();
    let repos = Repos::new();
    let (worker, url) = start_with_http(
        &broker,
        &repos,
        &[
            WITH_ADMIN,
            ("BMQTT_AUDIT__REFUSAL_WINDOW_SECS", "2"),
            ("BMQTT_AUDIT__MAX_BYTES", &MAX_BYTES.to_string()),
            ("BMQTT_AUDIT__KEEP_FILES", "2"),
            ("BMQTT_LIMITS__READ_PER_MINUTE", "100000"),
        ],
    )
    .await;
    let state = worker.state_dir.path().to_path_buf();
    let http = reqwest::Client::new();
    let flood_start = Instant::now();
    // No token, a wrong token, a body that is not JSON: over HTTP ...
    let mut sent = 0;
    for chunk in 0..(HTTP_REFUSALS / 50) {
        let calls = (0..50).map(|i| {
            let req = http.post(format!("{url}/api/v1/cmd/job/list"));
            match (chunk + i) % 3 {
                0 => req.body("{}"),
                1 => req.bearer_auth("not-a-token-0123456789abcdef").body("{}"),
                _ => req.body("{not json"),
            }
            .send()
        });
        for r in futures_util::future::join_all(calls).await {
            let status = r.unwrap().status().as_u16();
            assert!(status == 401 || status == 400, "{status}");
            sent += 1;
        }
    }
    // ... and over MQTT, each answered.
    let client = Client::connect(&broker).await;
    client.subscribe(&worker.topic("response/#")).await;
    for n in 0..MQTT_REFUSALS {
        let body = json!({"request_id": format!("flood-{n}")});
        client
            .publish_raw(
                &worker.base,
                "job/list",
                body.to_string().into_bytes(),
                false,
            )
            .await;
    }
    let last = format!("flood-{}", MQTT_REFUSALS - 1);
    let topic = worker.topic("response/job/list");
    client
        .wait_for(|m| m.topic == topic && m.json()["request_id"] == json!(last))
        .await;
    sent += MQTT_REFUSALS;

    // Every refusal is in the trail, itemised or counted, once the window closes.
    let deadline = Instant::now() + WAIT;
    let (lines, accounted) = loop {
        let lines = audit_lines(&state);
        let accounted: u64 = lines
            .iter()
            .filter(|l| l["role"].is_null())
            .map(|l| l["count"].as_u64().unwrap_or(1))
            .sum();
        if accounted as usize >= sent || Instant::now() > deadline {
            break (lines, accounted);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(accounted as usize, sent, "refusals lost or double-counted");
    // Per 2 s window: 10 itemised, and one count per transport, client and outcome.
    let windows = flood_start.elapsed().as_secs() as usize / 2 + 2;
    assert!(
        lines.len() <= windows * (10 + 6),
        "{} audit lines for {sent} refusals in {windows} windows",
        lines.len()
    );
    assert!(lines.len() < sent / 5);
    assert!(lines.iter().any(|l| l["count"].as_u64().unwrap_or(0) > 1));
    assert!(lines
        .iter()
        .any(|l| l["transport"] == "mqtt" && l["count"].is_u64()));

    // A file that grew huge (here: 16 GiB of holes) is rotated away, and
    // audit/list reads only tails.
    std::fs::OpenOptions::new()
        .write(true)
        .open(state.join("audit.jsonl"))
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    let authenticated = |n: usize| {
        let client = client.clone();
        let base = worker.base.clone();
        async move {
            client
                .request_ok(
                    &base,
                    "job/list",
                    json!({"token": READ_TOKEN, "request_id": format!("authn-{n}"), "limit": 1}),
                )
                .await;
        }
    };
    for n in 0..100 {
        authenticated(n).await;
    }
    let listed = client
        .request_ok(
            &worker.base,
            "audit/list",
            json!({"token": ADMIN_TOKEN, "limit": 1000}),
        )
        .await;
    let records = listed["data"]["records"].as_array().unwrap();
    assert_eq!(records[0]["request_id"], "authn-99", "newest first");
    assert_eq!(records.len(), 100, "the huge file's tail holds no record");
    for n in 100..1200 {
        authenticated(n).await;
    }
    for name in ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"] {
        let size = std::fs::metadata(state.join(name)).unwrap().len();
        assert!(size <= MAX_BYTES, "{name} is {size} bytes");
    }
    assert!(!state.join("audit.jsonl.3").exists());
}

/// Connects as `user` with exactly `client_id` and waits for the broker's answer;
/// true when it accepted the connection.
async fn connect_with_id(port: u16, user: &str, password: &str, client_id: &str) -> bool {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_credentials(user, password);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(o, 10);
    let accepted = tokio::time::timeout(WAIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .expect("no answer from the broker");
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), events.poll()).await;
    accepted
}

/// Asserts the worker still answers and never said `offline`.
async fn still_online(watcher: &Client, base: &str) {
    watcher
        .request_ok(base, "job/list", json!({"token": READ_TOKEN}))
        .await;
    let status = format!("{base}/status");
    let said: Vec<String> = watcher
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.topic == status)
        .map(|m| m.text())
        .collect();
    assert!(
        said.iter().all(|s| s == "online"),
        "the worker's status went {said:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_ids_derived_from_the_node_cannot_take_the_workers_session() {
    let broker = Broker::start();
    let repos = Repos::new();
    let worker = Worker::start(&broker, &repos, &[("BMQTT_MQTT__NODE_ID", "edgenode")]).await;
    let id = std::fs::read_to_string(worker.state_dir.path().join("mqtt_client_id")).unwrap();
    assert!(!id.contains("edgenode"), "{id}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(worker.state_dir.path().join("mqtt_client_id"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let watcher = Client::connect(&broker).await;
    watcher.subscribe(&worker.topic("status")).await;
    watcher.subscribe(&worker.topic("response/#")).await;
    for round in 0..10 {
        for guess in [
            "borgmatic-mqtt-edgenode",
            "edgenode",
            "borgmatic-mqtt",
            "borgmatic-mqtt-borgmatic",
        ] {
            assert!(
                connect_with_id(broker.port, "homeassistant", HA_PASSWORD, guess).await,
                "round {round}: {guess} refused"
            );
        }
    }
    still_online(&watcher, &worker.base).await;

    // The id survives a restart (a persistent session stays the worker's).
    let mut worker = worker;
    worker.restart(&broker).await;
    let again = std::fs::read_to_string(worker.state_dir.path().join("mqtt_client_id")).unwrap();
    assert_eq!(again, id);
}

/// A broker with the deployment's `acl` and `make-passwd` output, the general
/// lines of the shipped `mosquitto.conf`, and one loopback listener carrying the
/// options that the shipped listeners need against session takeover.
fn deployment_broker(dir: &Path) -> (u16, Child, [(&'static str, String); 3]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto");
    let copy = dir.join("mosquitto");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["acl", "make-passwd", "mosquitto.conf"] {
        std::fs::copy(root.join(f), copy.join(f)).unwrap();
    }
    let users = [
        ("borgmatic", "edge-borgmatic-password-1".to_string()),
        ("nodered", "edge-nodered-password-2".to_string()),
        ("homeassistant", "edge-homeassistant-password-3".to_string()),
    ];
    let mut script = Command::new(copy.join("make-passwd"));
    script.arg(dir.join("secrets"));
    for (user, pw) in &users {
        script.env(format!("{}_PASSWORD", user.to_uppercase()), pw);
    }
    assert!(
        script.output().unwrap().status.success(),
        "make-passwd failed"
    );
    let per_listener = [
        "listener",
        "use_username_as_clientid",
        "cafile",
        "certfile",
        "keyfile",
        "require_certificate",
        "tls_version",
        "socket_domain",
    ];
    let shipped = std::fs::read_to_string(copy.join("mosquitto.conf")).unwrap();
    // Every shipped listener takes the user name as the client id (the option is per
    // listener); this test's own listener below does the same.
    let blocks: Vec<&str> = shipped.split("\nlistener ").skip(1).collect();
    assert!(!blocks.is_empty(), "no listener in mosquitto.conf");
    for block in blocks {
        let own: Vec<&str> = block.lines().take_while(|l| !l.trim().is_empty()).collect();
        assert!(
            own.iter()
                .any(|l| l.trim() == "use_username_as_clientid true"),
            "listener {} lacks use_username_as_clientid true",
            own.first().unwrap_or(&"")
        );
    }
    let general: Vec<String> = shipped
        .lines()
        .filter(|l| {
            let key = l.split_whitespace().next().unwrap_or("");
            !per_listener.contains(&key)
        })
        .map(|l| {
            l.replace("/mosquitto/config/", &format!("{}/", copy.display()))
                .replace("persistence true", "persistence false")
                .replace("log_dest stdout", "log_dest stderr")
        })
        .collect();
    let port = free_port();
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let conf = format!(
        "{}{}\nlistener {port} 127.0.0.1\nuse_username_as_clientid true\n",
        if root_user { "user root\n" } else { "" },
        general.join("\n")
    );
    std::fs::write(dir.join("test.conf"), conf).unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.join("test.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(25));
    }
    (port, child, users)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deployment_broker_lets_no_other_user_take_the_workers_session() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mut mosquitto, users) = deployment_broker(dir.path());
    let pw = |u: &str| users.iter().find(|(n, _)| *n == u).unwrap().1.clone();
    let repos = Repos::new();
    let broker = Broker::at_port(port);
    let nodered = Client::connect_as(&broker, "nodered", &pw("nodered")).await;
    let mut env = Worker::env(&broker, &repos);
    set(&mut env, "BMQTT_MQTT__USERNAME", "borgmatic");
    set(&mut env, "BMQTT_MQTT__PASSWORD", &pw("borgmatic"));
    set(&mut env, "BMQTT_MQTT__NODE_ID", "nas");
    let base = format!("borgmatic/{}", uuid_like());
    let worker = start_proc(&nodered, env, &base, None).await;
    nodered.subscribe(&format!("{base}/response/#")).await;
    // Even the worker's own (random) id, were it to leak, and its user name.
    let own = std::fs::read_to_string(worker.state_dir.path().join("mqtt_client_id")).unwrap();
    for round in 0..5 {
        for guess in [own.as_str(), "borgmatic", "borgmatic-mqtt-nas", "nas"] {
            assert!(
                connect_with_id(port, "homeassistant", &pw("homeassistant"), guess).await,
                "round {round}: {guess} refused"
            );
        }
    }
    still_online(&nodered, &worker.base).await;
    let _ = mosquitto.kill();
    let _ = mosquitto.wait();
}
