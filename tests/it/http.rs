//! The HTTP sidecar: the same answers as MQTT, the spec's status codes, SSE with
//! resume, readiness, metrics, JSON logs, the audit trail and the OpenAPI document.

use std::time::Duration;

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A GET of `path`, with `token` if any: the response itself.
async fn get_raw(url: &str, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = http_client().get(format!("{url}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn get(url: &str, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let resp = get_raw(url, path, token).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The Prometheus scrape.
async fn metrics(url: &str) -> String {
    get_raw(url, "/metrics", None).await.text().await.unwrap()
}

/// The sequence numbers (event ids) of the `log` events, in order.
fn log_seqs(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.event == "log")
        .map(|e| e.id.as_ref().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_mirrors_mqtt_with_the_spec_status_codes() {
    let Scenario {
        broker: _broker,
        repos,
        worker,
        client: c,
    } = Scenario::new().repo("nc").http().app().await;
    let url = worker.url();

    // A job over HTTP: 202 with the same record MQTT would give.
    let (status, started) = post_cmd(
        &url,
        "backup/run",
        Some(WRITE_TOKEN),
        json!({"repository": "nc", "request_id": "h1"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["request_id"], "h1");
    let job = started["job_id"].as_str().unwrap().to_string();
    let result = c.job_result(&worker.base, &job).await;
    assert_eq!(result["state"], "succeeded");

    // Immediate commands: 200, and the same data over both transports.
    let (status, over_http) = get(&url, &format!("/api/v1/jobs/{job}"), Some(READ_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let over_mqtt = c
        .request(
            &worker.base,
            "job/get",
            json!({"token": READ_TOKEN, "job_id": job}),
        )
        .await;
    assert_eq!(over_http["data"], over_mqtt["data"]);
    let (_, list_http) = get(&url, "/api/v1/jobs?limit=10", Some(READ_TOKEN)).await;
    let list_mqtt = c
        .request(
            &worker.base,
            "job/list",
            json!({"token": READ_TOKEN, "limit": 10}),
        )
        .await;
    assert_eq!(list_http["data"], list_mqtt["data"]);
    let (status, _) = post_cmd(&url, "config/list", Some(READ_TOKEN), json!({})).await;
    assert_eq!(status, StatusCode::OK);

    // Log polling.
    let (status, log) = get(
        &url,
        &format!("/api/v1/jobs/{job}/log?after=1&limit=2"),
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<u64> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3]);
    assert_eq!(log["next_after"], 3);

    // Every error code's status.
    let raw = http_client()
        .post(format!("{url}/api/v1/cmd/backup/run"))
        .bearer_auth(WRITE_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let status_of = |code: &str| match code {
        "unauthorized" => StatusCode::UNAUTHORIZED,
        "forbidden" => StatusCode::FORBIDDEN,
        "invalid" => StatusCode::BAD_REQUEST,
        "not_found" => StatusCode::NOT_FOUND,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => unreachable!("{code}"),
    };
    let wrong = "wrong-token-wrong-token-wrong";
    for (cmd, token, body, code) in [
        (
            "backup/run",
            None,
            json!({"repository": "nc"}),
            "unauthorized",
        ),
        (
            "backup/run",
            Some(wrong),
            json!({"repository": "nc"}),
            "unauthorized",
        ),
        (
            "backup/run",
            Some(READ_TOKEN),
            json!({"repository": "nc"}),
            "forbidden",
        ),
        (
            "backup/run",
            Some(WRITE_TOKEN),
            json!({"repository": "../etc"}),
            "invalid",
        ),
        (
            "backup/run",
            Some(WRITE_TOKEN),
            json!({"repository": "nc", "x": 1}),
            "invalid",
        ),
        (
            "backup/run",
            Some(WRITE_TOKEN),
            json!({"repository": "nc", "dry_run": "no"}),
            "invalid",
        ),
        (
            "backup/run",
            Some(WRITE_TOKEN),
            json!({"repository": "nope"}),
            "not_found",
        ),
        ("backup/nope", Some(WRITE_TOKEN), json!({}), "invalid"),
        ("container/list", Some(READ_TOKEN), json!({}), "unavailable"),
    ] {
        let (got, resp) = post_cmd(&url, cmd, token, body.clone()).await;
        assert_eq!(got, status_of(code), "{cmd} {body}: {resp}");
        assert_eq!(resp["error"]["code"], code, "{cmd} {body}: {resp}");
    }
    for (path, token, status) in [
        (
            "/api/v1/jobs/not-a-uuid".to_string(),
            Some(READ_TOKEN),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/jobs/01a20d1c-b2e3-77de-8821-e6b253038ff0".to_string(),
            Some(READ_TOKEN),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/api/v1/jobs/{job}/log?after=x"),
            Some(READ_TOKEN),
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/jobs".to_string(), None, StatusCode::UNAUTHORIZED),
    ] {
        let (got, resp) = get(&url, &path, token).await;
        assert_eq!(got, status, "GET {path}: {resp}");
    }

    // A body over the limit.
    let big = json!({"repository": "x".repeat(2 * 1024 * 1024)});
    let (status, _) = post_cmd(&url, "backup/run", Some(WRITE_TOKEN), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Busy: 409 naming the running job.
    repos.block_backups("nc");
    let (_, running) = post_cmd(
        &url,
        "backup/run",
        Some(WRITE_TOKEN),
        json!({"repository": "nc"}),
    )
    .await;
    let (status, busy) = post_cmd(
        &url,
        "archive/list",
        Some(READ_TOKEN),
        json!({"repository": "nc"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{busy}");
    assert_eq!(busy["data"]["job_id"], running["job_id"]);
    let (status, _) = post_cmd(
        &url,
        "job/cancel",
        Some(WRITE_TOKEN),
        json!({"job_id": running["job_id"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    c.job_result(&worker.base, running["job_id"].as_str().unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_and_the_from_header() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let (_worker, url) = start_with_http(
        &broker,
        &repos,
        &[
            ("BMQTT_LIMITS__READ_PER_MINUTE", "3"),
            ("BMQTT_HTTP__FROM_HEADER", "node-red-says-hello"),
        ],
    )
    .await;
    // Without or with a wrong X-From-NodeRed: refused before anything else.
    let (status, resp) = get(&url, "/api/v1/jobs", Some(READ_TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{resp}");
    assert!(resp["error"]["message"]
        .as_str()
        .unwrap()
        .contains("X-From-NodeRed"));
    let wrong = http_client()
        .get(format!("{url}/api/v1/jobs"))
        .bearer_auth(READ_TOKEN)
        .header("X-From-NodeRed", "guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);

    let call = || {
        http_client()
            .get(format!("{url}/api/v1/jobs"))
            .bearer_auth(READ_TOKEN)
            .header("X-From-NodeRed", "node-red-says-hello")
            .send()
    };
    for _ in 0..3 {
        assert_eq!(call().await.unwrap().status(), StatusCode::OK);
    }
    let limited = call().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&retry), "{retry}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another class still has its quota.
    let other = http_client()
        .post(format!("{url}/api/v1/cmd/job/cancel"))
        .bearer_auth(WRITE_TOKEN)
        .header("X-From-NodeRed", "node-red-says-hello")
        .json(&json!({"job_id": "01a20d1c-b2e3-77de-8821-e6b253038ff0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    // Health stays outside both.
    assert_eq!(
        get_raw(&url, "/healthz", None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_delivers_every_line_in_order_and_resumes_without_gaps_or_repeats() {
    let broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let (worker, url) = start_with_http(&broker, &repos, &[]).await;
    let (_, started) = post_cmd(
        &url,
        "backup/run",
        Some(WRITE_TOKEN),
        json!({"repository": "nc"}),
    )
    .await;
    let job = started["job_id"].as_str().unwrap().to_string();

    // Connected right after the start: backlog plus live lines, then the result.
    let resp = get_raw(
        &url,
        &format!("/api/v1/jobs/{job}/events"),
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = read_sse(resp, |_| false).await;
    assert_eq!(events.first().unwrap().event, "state");
    assert_eq!(events.last().unwrap().event, "result", "{events:?}");
    assert_eq!(events.last().unwrap().json()["state"], "succeeded");
    let seqs = log_seqs(&events);
    let n = events.last().unwrap().json()["lines"].as_u64().unwrap();
    assert!(n >= 4);
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "gaps or repeats");

    // Resume after seq 2.
    let resp = http_client()
        .get(format!("{url}/api/v1/jobs/{job}/events"))
        .bearer_auth(READ_TOKEN)
        .header("Last-Event-ID", "2")
        .send()
        .await
        .unwrap();
    let events = read_sse(resp, |_| false).await;
    let seqs = log_seqs(&events);
    assert_eq!(seqs, (3..=n).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap().event, "result");

    // `kinds` filters a job's stream; it still ends after the result.
    let kinds = |k: &str| {
        let (url, job) = (url.clone(), job.clone());
        let k = k.to_string();
        async move {
            let resp = get_raw(
                &url,
                &format!("/api/v1/jobs/{job}/events?kinds={k}"),
                Some(READ_TOKEN),
            )
            .await;
            (resp.status(), resp)
        }
    };
    let (status, resp) = kinds("log").await;
    assert_eq!(status, StatusCode::OK);
    let events = read_sse(resp, |_| false).await;
    assert!(events.iter().all(|e| e.event == "log"), "{events:?}");
    assert_eq!(events.len() as u64, n);
    let (_, resp) = kinds("state,result").await;
    let events = read_sse(resp, |_| false).await;
    assert_eq!(
        events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["state", "result"]
    );
    for bad in ["logs", "log,,state", "", "-x"] {
        let (status, _) = kinds(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
    }
    let resp = get_raw(
        &url,
        &format!("/api/v1/jobs/{job}/events?bogus=1"),
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // The global stream sees a later job's state changes.
    let resp = get_raw(&url, "/api/v1/events", Some(READ_TOKEN)).await;
    let (_, second) = post_cmd(
        &url,
        "archive/list",
        Some(READ_TOKEN),
        json!({"repository": "nc"}),
    )
    .await;
    let second = second["job_id"].as_str().unwrap().to_string();
    let second2 = second.clone();
    let events = read_sse(resp, move |e| {
        e.json()["job_id"] == json!(second2) && e.json()["state"] == "succeeded"
    })
    .await;
    let states: Vec<String> = events
        .iter()
        .filter(|e| e.event == "state" && e.json()["job_id"] == json!(second))
        .map(|e| e.json()["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["queued", "running", "succeeded"]);

    // SSE needs a token; an unknown job is a 404.
    let resp = get_raw(&url, &format!("/api/v1/jobs/{job}/events"), None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = get_raw(
        &url,
        "/api/v1/jobs/01a20d1c-b2e3-77de-8821-e6b253038ff0/events",
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    drop(worker);
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_broker_and_metrics_follow_jobs() {
    let mut broker = Broker::start();
    let repos = Repos::new();
    repos.add("nc", "");
    let (worker, url) = start_with_http_process(&broker, &repos, &[]).await;
    let (status, ready) = get(&url, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["parts"]["mqtt"]["ok"], true);
    assert_eq!(ready["parts"]["store"]["ok"], true);
    assert!(ready["parts"]["borgmatic"]["detail"]
        .as_str()
        .unwrap()
        .starts_with("borgmatic 2"));

    let before = metrics(&url).await;
    assert!(!before.contains("bmqtt_last_backup_success_timestamp_seconds{repository=\"nc\"}"));
    let (_, started) = post_cmd(
        &url,
        "backup/run",
        Some(WRITE_TOKEN),
        json!({"repository": "nc"}),
    )
    .await;
    let c = subscribed(&broker, &worker.base).await;
    let job = started["job_id"].as_str().unwrap();
    let res = c.job_result(&worker.base, job).await;
    assert_eq!(res["state"], "succeeded");
    let (_, listed) = post_cmd(
        &url,
        "archive/list",
        Some(READ_TOKEN),
        json!({"repository": "nc"}),
    )
    .await;
    c.job_result(&worker.base, listed["job_id"].as_str().unwrap())
        .await;
    // The metrics task reads the same event stream; poll the scrape briefly.
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics(&url).await;
        if text.contains("bmqtt_archives{repository=\"nc\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for needle in [
        "bmqtt_jobs_total{command=\"backup/run\",outcome=\"succeeded\"} 1",
        "bmqtt_job_duration_seconds_bucket{command=\"backup/run\"",
        "bmqtt_last_backup_success_timestamp_seconds{repository=\"nc\"}",
        "bmqtt_last_backup_duration_seconds{repository=\"nc\"}",
        "bmqtt_last_backup_size_bytes{repository=\"nc\"}",
        "bmqtt_archives{repository=\"nc\"} 1",
        "bmqtt_requests_total{transport=\"http\",code=\"ok\"}",
        "bmqtt_jobs_running 0",
        "bmqtt_jobs_queued 0",
        "bmqtt_mqtt_connected 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }

    broker.stop();
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, body) = get(&url, "/readyz", None).await;
        last = body;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["ready"], false, "{last}");
    assert_eq!(last["parts"]["mqtt"]["ok"], false);
    broker.restart();
    let mut ok = false;
    for _ in 0..200 {
        if get(&url, "/readyz", None).await.0 == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "/readyz did not recover after the broker came back");
    let text = metrics(&url).await;
    assert!(
        !text.contains("bmqtt_mqtt_reconnects 0"),
        "a reconnect was not counted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_audit_trail_and_openapi() {
    let Scenario {
        broker: _broker,
        repos: _repos,
        worker,
        client: c,
    } = Scenario::new()
        .repo("nc")
        .http()
        .setting("BMQTT_LOG__FORMAT", "json")
        .admin()
        .app()
        .await;
    let url = worker.url();
    let res = c.backup(&worker.base, "nc").await;
    let job = res["job_id"].as_str().unwrap().to_string();
    // Refusals too: unauthorized, forbidden.
    post_cmd(
        &url,
        "backup/run",
        Some("bad-token-bad-token-bad-token"),
        json!({"repository": "nc"}),
    )
    .await;
    post_cmd(
        &url,
        "backup/run",
        Some(READ_TOKEN),
        json!({"repository": "nc"}),
    )
    .await;

    // Every log line is one JSON object; those inside the job carry its id.
    let log = worker.log_text();
    let mut in_job = 0;
    for line in log.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["target"].is_string(),
            "{line}"
        );
        if v["span"]["job_id"] == json!(job) {
            in_job += 1;
            assert_eq!(v["span"]["command"], "backup/run");
        }
    }
    assert!(
        in_job >= 2,
        "job start and end are logged inside the job's span:\n{log}"
    );

    // The audit trail: admin only, refusals included, no secret.
    let (status, _) = post_cmd(&url, "audit/list", Some(WRITE_TOKEN), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, audit) =
        post_cmd(&url, "audit/list", Some(ADMIN_TOKEN), json!({"limit": 50})).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let records = audit["data"]["records"].as_array().unwrap();
    let outcomes: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["transport"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(outcomes.contains(&("http", "unauthorized")), "{outcomes:?}");
    assert!(outcomes.contains(&("http", "forbidden")), "{outcomes:?}");
    let backup = records
        .iter()
        .find(|r| r["job_id"] == json!(job))
        .expect("the backup is audited");
    assert_eq!(backup["transport"], "mqtt");
    assert_eq!(backup["role"], "write");
    assert_eq!(backup["repository"], "nc");
    assert_eq!(backup["command"], "backup/run");
    let file = std::fs::read_to_string(worker.state_dir.path().join("audit.jsonl")).unwrap();
    assert_no_secrets("the audit trail", &file);
    assert!(!file.contains("bad-token-bad-token"));

    // The OpenAPI document describes routes that exist.
    let (status, doc) = get(&url, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{group}", "job")
            .replace("{action}", "list")
            .replace("{job_id}", &job);
        for method in ops.as_object().unwrap().keys() {
            let req = match method.as_str() {
                "get" => http_client().get(format!("{url}{concrete}")),
                "post" => http_client()
                    .post(format!("{url}{concrete}"))
                    .json(&json!({})),
                other => panic!("unexpected method {other}"),
            };
            let resp =
                tokio::time::timeout(Duration::from_secs(10), req.bearer_auth(READ_TOKEN).send())
                    .await
                    .expect("no answer")
                    .unwrap();
            assert_ne!(
                resp.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_ne!(
                resp.status(),
                StatusCode::NOT_FOUND,
                "{method} {path} is not routed"
            );
        }
    }
    assert_no_secrets("the worker's log", &log);
}
