//! A real Home Assistant Core (the version `scripts/setup` installs into `.ha/`),
//! started headless on a free loopback port with a throwaway configuration,
//! onboarded and given the MQTT integration through its own REST API — the same
//! steps a user takes in the UI, so what the tests see is what a user sees.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_port, WAIT};

/// Where `scripts/setup` installs Home Assistant.
pub fn hass_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ha/bin/hass");
    assert!(
        bin.exists(),
        "Home Assistant is not installed at {}: run scripts/setup",
        bin.display()
    );
    bin
}

/// A running Home Assistant with an owner account and an access token.
pub struct HomeAssistant {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    token: String,
    http: reqwest::Client,
    /// Home Assistant starts beside no other heavy test.
    _turn: super::heavy::HeavyTurn,
}

impl HomeAssistant {
    /// Starts Home Assistant, onboards an owner and sets up the MQTT integration
    /// against the broker on `broker_port` as `user` (the discovery prefix stays
    /// Home Assistant's default, `homeassistant`). `automations` is the content of
    /// `automations.yaml`.
    pub async fn start(broker_port: u16, user: &str, password: &str, automations: &str) -> Self {
        let bin = hass_bin();
        let turn = super::heavy::turn();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("configuration.yaml"),
            format!(
                "homeassistant:\n  name: borgmatic-mqtt test\n  unit_system: metric\n  \
                 time_zone: UTC\n  latitude: 0\n  longitude: 0\n  elevation: 0\n  \
                 currency: EUR\n  country: DE\n\
                 http:\n  server_host: 127.0.0.1\n  server_port: {port}\n\
                 logger:\n  default: warning\n\
                 api:\nconfig:\nautomation: !include automations.yaml\n\
                 input_boolean:\n\
                 counter:\n  notified_1:\n  notified_2:\n  notified_3:\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("automations.yaml"), automations).unwrap();
        let log = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        // --skip-pip: everything is installed by scripts/setup; Home Assistant must not
        // reach for a package index at run time.
        let child = Command::new(bin)
            .arg("-c")
            .arg(dir.path())
            .arg("--skip-pip")
            .arg("--log-file")
            .arg(dir.path().join("ha.log"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("cannot start Home Assistant");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut ha = HomeAssistant {
            port,
            dir,
            child: Some(child),
            token: String::new(),
            http,
            _turn: turn,
        };
        ha.wait_until_up().await;
        ha.onboard().await;
        ha.add_mqtt(broker_port, user, password).await;
        ha
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_until_up(&mut self) {
        // Home Assistant takes a while to start (tens of seconds on a busy machine):
        // wait for its HTTP server, failing at once if the process died.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("Home Assistant exited ({status}):\n{}", self.log_tail());
                }
            }
            if let Ok(r) = self.http.get(self.url("/api/onboarding")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Home Assistant did not start:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn onboard(&mut self) {
        let client_id = self.url("/");
        let r: Value = self
            .http
            .post(self.url("/api/onboarding/users"))
            .json(&json!({
                "client_id": client_id, "name": "Owner", "username": "owner",
                "password": "owner-password-for-tests", "language": "en",
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let code = r["auth_code"].as_str().expect("no auth_code").to_string();
        let body = format!(
            "grant_type=authorization_code&code={code}&client_id={}",
            urlencode(&client_id)
        );
        let t: Value = self
            .http
            .post(self.url("/auth/token"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        self.token = t["access_token"]
            .as_str()
            .expect("no access token")
            .to_string();
    }

    async fn add_mqtt(&self, broker_port: u16, user: &str, password: &str) {
        let flow = self
            .post(
                "/api/config/config_entries/flow",
                json!({"handler": "mqtt"}),
            )
            .await;
        assert_eq!(flow["step_id"], "broker", "{flow}");
        let flow_id = flow["flow_id"].as_str().unwrap();
        let done = self
            .post(
                &format!("/api/config/config_entries/flow/{flow_id}"),
                json!({"broker": "127.0.0.1", "port": broker_port,
                       "username": user, "password": password}),
            )
            .await;
        assert_eq!(done["type"], "create_entry", "{done}");
        assert_eq!(done["result"]["state"], "loaded", "{done}");
    }

    /// An authenticated POST; the JSON answer.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    /// Every entity's state object.
    pub async fn states(&self) -> Vec<Value> {
        self.http
            .get(self.url("/api/states"))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// One entity's state object, if it exists.
    pub async fn state(&self, entity_id: &str) -> Option<Value> {
        let r = self
            .http
            .get(self.url(&format!("/api/states/{entity_id}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        Some(r.json().await.unwrap())
    }

    /// Waits until `entity_id` exists and its state object satisfies `pred`.
    /// (The REST API has no push; its state is polled.)
    pub async fn wait_state(&self, entity_id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.state(entity_id).await;
            if let Some(s) = s.as_ref().filter(|s| pred(s)) {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{entity_id} never reached the expected state; last: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Renders a template in Home Assistant (device and area helpers that the REST
    /// API does not expose otherwise).
    pub async fn template(&self, template: &str) -> String {
        match self
            .post("/api/template", json!({ "template": template }))
            .await
        {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    /// The entity and device registries (`config/entity_registry/list`,
    /// `config/device_registry/list`), which only Home Assistant's websocket API
    /// gives: entity categories, device links, unique ids.
    pub async fn registries(&self) -> (Vec<Value>, Vec<Value>) {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let url = format!("ws://127.0.0.1:{}/api/websocket", self.port);
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("cannot open Home Assistant's websocket");
        let hello = next_text(&mut ws).await;
        assert_eq!(hello["type"], "auth_required", "{hello}");
        let mut answers = Vec::new();
        for request in [
            json!({"type": "auth", "access_token": self.token}),
            json!({"id": 1, "type": "config/entity_registry/list"}),
            json!({"id": 2, "type": "config/device_registry/list"}),
        ] {
            ws.send(Message::Text(request.to_string().into()))
                .await
                .unwrap();
            answers.push(next_text(&mut ws).await);
        }
        assert_eq!(answers[0]["type"], "auth_ok", "{}", answers[0]);
        let list = |a: &Value| -> Vec<Value> {
            assert_eq!(a["success"], true, "{a}");
            a["result"].as_array().cloned().unwrap_or_default()
        };
        (list(&answers[1]), list(&answers[2]))
    }

    /// Calls a service, e.g. `("button", "press", {"entity_id": …})`.
    pub async fn call(&self, domain: &str, service: &str, data: Value) {
        self.post(&format!("/api/services/{domain}/{service}"), data)
            .await;
    }

    /// Home Assistant's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ha.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let mut all = self.log();
        all.push_str(
            &std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default(),
        );
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The next text message of a websocket, as JSON.
async fn next_text<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no websocket message")
            .expect("websocket closed")
            .expect("websocket error");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs Home Assistant's own `check_config` on a configuration with these
/// automations; returns whether it passed and its output.
pub fn check_config(automations: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("configuration.yaml"),
        "homeassistant:\n  name: check\n  time_zone: UTC\nmqtt:\nnotify:\nautomation: !include automations.yaml\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("automations.yaml"), automations).unwrap();
    let out = Command::new(hass_bin())
        .args(["--script", "check_config", "-c"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && !text.contains("Invalid config"),
        text,
    )
}
