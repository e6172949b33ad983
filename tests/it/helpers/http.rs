//! The HTTP side: a worker with its sidecar on, and a Server-Sent Events reader.

use reqwest::StatusCode;
use serde_json::Value;

use super::{Broker, Repos, TestApp, Worker, WAIT};

/// An HTTP client whose every request gives up after [`WAIT`].
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

/// POSTs `body` to `/api/v1/cmd/<command>`, with `token` as bearer if any; the
/// status and the JSON answer (`Null` if none).
pub async fn post_cmd(
    url: &str,
    command: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut req = http_client()
        .post(format!("{url}/api/v1/cmd/{command}"))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A worker in-process ([`TestApp`]) with its HTTP sidecar on a port it bound
/// itself (port 0); returns it and its base URL.
pub async fn start_with_http(
    broker: &Broker,
    repos: &Repos,
    extra: &[(&str, &str)],
) -> (TestApp, String) {
    let app = TestApp::spawn(broker, repos, &http_settings(extra)).await;
    let url = app.url();
    (app, url)
}

/// Like [`start_with_http`], but the worker binary as a subprocess (for tests about
/// the process, or that assert metric values, which are process-wide); it binds
/// port 0 and the URL is read from its "HTTP sidecar listening" log line.
pub async fn start_with_http_process(
    broker: &Broker,
    repos: &Repos,
    extra: &[(&str, &str)],
) -> (Worker, String) {
    let w = Worker::start(broker, repos, &http_settings(extra)).await;
    let url = w.url();
    (w, url)
}

fn http_settings<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = vec![
        ("BMQTT_HTTP__LISTEN", "127.0.0.1:0"),
        ("BMQTT_DOCKER__ENABLED", "false"),
    ];
    for (k, v) in extra {
        all.retain(|(k2, _)| k2 != k);
        all.push((k, v));
    }
    all
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// Reads an SSE response until it ends (or `stop` says so), within [`WAIT`].
pub async fn read_sse(resp: reqwest::Response, stop: impl Fn(&SseEvent) -> bool) -> Vec<SseEvent> {
    use futures_util::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut ev = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut comment_only = true;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().into();
                        comment_only = false;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().into());
                        comment_only = false;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !ev.data.is_empty() {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        comment_only = false;
                    }
                }
                if comment_only {
                    continue;
                }
                let done = stop(&ev);
                out.push(ev);
                if done {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the event stream did not end in time");
    out
}
