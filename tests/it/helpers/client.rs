//! An MQTT v5 client that records everything it receives, with typed helpers for
//! the wire contract (`request`, `run_job`, `job_result`, `wait_for`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{uuid_like, Broker, CLIENT_PASSWORD, READ_TOKEN, WAIT, WRITE_TOKEN};

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub correlation: Option<Bytes>,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {:?}", self.topic, self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).to_string()
    }
}

/// An MQTT v5 client (user `client`) that records every message it receives.
#[derive(Clone)]
pub struct Client {
    pub client: AsyncClient,
    tx: broadcast::Sender<Msg>,
    subacks: broadcast::Sender<()>,
    /// Whether each PubAck said the publish was authorised.
    pubacks: broadcast::Sender<bool>,
    pub seen: Arc<Mutex<Vec<Msg>>>,
}

impl Client {
    pub async fn connect(broker: &Broker) -> Client {
        Self::connect_as(broker, "client", CLIENT_PASSWORD).await
    }

    pub async fn connect_as(broker: &Broker, user: &str, password: &str) -> Client {
        let mut o = MqttOptions::new(uuid_like(), "127.0.0.1", broker.port);
        o.set_credentials(user, password);
        Self::connect_with(o).await
    }

    /// Connects over TLS to `host:port`, trusting only the CA in `ca_file`; the
    /// server's certificate must name `host`.
    pub async fn connect_tls(
        host: &str,
        port: u16,
        ca_file: &Path,
        user: &str,
        password: &str,
    ) -> Client {
        let mut o = MqttOptions::new(uuid_like(), host, port);
        o.set_credentials(user, password);
        let ca = std::fs::read(ca_file).expect("cannot read the CA file");
        o.set_transport(rumqttc::Transport::tls(ca, None, None));
        Self::connect_with(o).await
    }

    async fn connect_with(mut o: MqttOptions) -> Client {
        o.set_keep_alive(Duration::from_secs(10));
        o.set_max_packet_size(Some(64 * 1024 * 1024));
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        o.set_network_options(net);
        let (client, mut eventloop) = AsyncClient::new(o, 1024);
        let (tx, _) = broadcast::channel(1 << 16);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let tx2 = tx.clone();
        let seen2 = seen.clone();
        let (subacks, _) = broadcast::channel(64);
        let subacks2 = subacks.clone();
        let (pubacks, _) = broadcast::channel(64);
        let pubacks2 = pubacks.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subacks2.send(());
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => {
                        use rumqttc::v5::mqttbytes::v5::PubAckReason;
                        let _ = pubacks2.send(!matches!(a.reason, PubAckReason::NotAuthorized));
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let m = Msg {
                            topic: String::from_utf8_lossy(&p.topic).to_string(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            correlation: p.properties.and_then(|pr| pr.correlation_data),
                        };
                        seen2.lock().unwrap().push(m.clone());
                        let _ = tx2.send(m);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("client did not connect")
            .unwrap();
        Client {
            client,
            tx,
            subacks,
            pubacks,
            seen,
        }
    }

    /// Subscribes and waits for the broker's SubAck, so nothing published after
    /// this returns can be missed.
    pub async fn subscribe(&self, filter: &str) {
        let mut acks = self.subacks.subscribe();
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        tokio::time::timeout(WAIT, acks.recv())
            .await
            .expect("no SubAck")
            .unwrap();
    }

    /// Publishes at QoS 1 and returns whether the broker authorised it (the PubAck's
    /// reason code; MQTT v5). One at a time per client.
    pub async fn publish_authorized(&self, topic: &str, payload: &str) -> bool {
        let mut acks = self.pubacks.subscribe();
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await
            .unwrap();
        tokio::time::timeout(WAIT, acks.recv())
            .await
            .expect("no PubAck")
            .unwrap()
    }

    /// Waits for a message matching `pred` among messages arriving from now on or
    /// already seen.
    pub async fn wait_for(&self, pred: impl Fn(&Msg) -> bool) -> Msg {
        let mut rx = self.tx.subscribe();
        if let Some(m) = self.seen.lock().unwrap().iter().find(|m| pred(m)) {
            return m.clone();
        }
        tokio::time::timeout(WAIT, async {
            loop {
                match rx.recv().await {
                    Ok(m) if pred(&m) => return m,
                    Ok(_) => {}
                    // Skipped messages are all in `seen`: look there.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(m) = self.seen.lock().unwrap().iter().find(|m| pred(m)) {
                            return m.clone();
                        }
                    }
                    Err(e) => panic!("client channel closed: {e}"),
                }
            }
        })
        .await
        .expect("timed out waiting for a message")
    }

    /// Publishes a raw payload to `<base>/cmd/<command>`.
    pub async fn publish_raw(&self, base: &str, command: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(
                format!("{base}/cmd/{command}"),
                QoS::AtLeastOnce,
                retain,
                payload,
            )
            .await
            .unwrap();
    }

    /// Sends a request (adding a fresh `request_id` unless one is given) and
    /// returns the response that echoes it.
    pub async fn request(&self, base: &str, command: &str, mut body: Value) -> Value {
        let rid = body
            .get("request_id")
            .and_then(|r| r.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| {
                let r = uuid_like();
                body["request_id"] = json!(r);
                r
            });
        let topic = format!("{base}/response/{command}");
        // A command the worker does not know is answered on `response/unknown`.
        let unknown = format!("{base}/response/unknown");
        self.publish_raw(base, command, serde_json::to_vec(&body).unwrap(), false)
            .await;
        let rid2 = rid.clone();
        self.wait_for(move |m| {
            (m.topic == topic || m.topic == unknown)
                && serde_json::from_slice::<Value>(&m.payload)
                    .ok()
                    .is_some_and(|v| v["request_id"] == json!(rid2))
        })
        .await
        .json()
    }

    /// Sends a request and asserts it was answered `ok`; the response.
    pub async fn request_ok(&self, base: &str, command: &str, body: Value) -> Value {
        let resp = self.request(base, command, body).await;
        assert_eq!(resp["status"], "ok", "{command}: {resp}");
        resp
    }

    /// Publishes with v5 properties.
    pub async fn publish_with(
        &self,
        base: &str,
        command: &str,
        payload: Vec<u8>,
        props: PublishProperties,
    ) {
        self.client
            .publish_with_properties(
                format!("{base}/cmd/{command}"),
                QoS::AtLeastOnce,
                false,
                payload,
                props,
            )
            .await
            .unwrap();
    }

    /// Sends a job command, asserts it was accepted, and returns its job id.
    pub async fn start_job(&self, base: &str, command: &str, body: Value) -> String {
        let resp = self.request(base, command, body).await;
        assert_eq!(resp["status"], "ok", "{command}: {resp}");
        resp["job_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no job id: {resp}"))
            .to_string()
    }

    /// Sends a job command, asserts it was accepted, and waits for its result.
    pub async fn run_job(&self, base: &str, command: &str, body: Value) -> Value {
        let job_id = self.start_job(base, command, body).await;
        self.job_result(base, &job_id).await
    }

    /// The stored record of a job (`job/get`'s data), asserting the request was
    /// answered.
    pub async fn job(&self, base: &str, job_id: &str) -> Value {
        let resp = self
            .request(
                base,
                "job/get",
                json!({"token": READ_TOKEN, "job_id": job_id}),
            )
            .await;
        assert_eq!(resp["status"], "ok", "job/get {job_id}: {resp}");
        resp["data"].clone()
    }

    /// Starts `backup/run` of `repository` with the write token (asserting it was
    /// accepted) and returns the job id.
    pub async fn start_backup(&self, base: &str, repository: &str) -> String {
        self.start_job(
            base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": repository}),
        )
        .await
    }

    /// Every stored job (`job/list`, up to 1000), asserting the request was answered.
    pub async fn jobs(&self, base: &str) -> Vec<Value> {
        let resp = self
            .request(
                base,
                "job/list",
                json!({"token": READ_TOKEN, "limit": 1000}),
            )
            .await;
        assert_eq!(resp["status"], "ok", "job/list: {resp}");
        resp["data"]["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("no jobs: {resp}"))
            .clone()
    }

    /// How many jobs are stored.
    pub async fn job_count(&self, base: &str) -> usize {
        self.jobs(base).await.len()
    }

    /// Cancels a job (asserting the request was accepted) and returns its result.
    pub async fn cancel(&self, base: &str, job_id: &str) -> Value {
        let resp = self
            .request(
                base,
                "job/cancel",
                json!({"token": WRITE_TOKEN, "job_id": job_id}),
            )
            .await;
        assert_eq!(resp["status"], "ok", "job/cancel {job_id}: {resp}");
        self.job_result(base, job_id).await
    }

    /// Waits for a `state` message of the job saying `state` (e.g. `running`).
    pub async fn wait_state(&self, base: &str, job_id: &str, state: &str) -> Value {
        let topic = format!("{base}/jobs/{job_id}/state");
        self.wait_for(|m| m.topic == topic && m.json()["state"] == state)
            .await
            .json()
    }

    /// Sends a job command like [`Client::run_job`] and asserts the job succeeded
    /// (the failure message carries its result and log lines).
    pub async fn run_job_ok(&self, base: &str, command: &str, body: Value) -> Value {
        let res = self.run_job(base, command, body).await;
        let job_id = res["job_id"].as_str().unwrap_or_default();
        assert_eq!(
            res["state"],
            "succeeded",
            "{command}: {res} {:?}",
            self.job_lines(base, job_id)
        );
        res
    }

    /// `backup/run` of `repository` with the write token: its result, whatever it is.
    pub async fn backup(&self, base: &str, repository: &str) -> Value {
        self.run_job(
            base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": repository}),
        )
        .await
    }

    /// `backup/run` of `repository`, asserted to succeed; its result.
    pub async fn backup_ok(&self, base: &str, repository: &str) -> Value {
        self.run_job_ok(
            base,
            "backup/run",
            json!({"token": WRITE_TOKEN, "repository": repository}),
        )
        .await
    }

    /// `backup/run` of `repository`, asserted to succeed; the archive it made.
    pub async fn backup_archive(&self, base: &str, repository: &str) -> String {
        let res = self.backup_ok(base, repository).await;
        res["data"]["archive"]
            .as_str()
            .unwrap_or_else(|| panic!("no archive: {res}"))
            .to_string()
    }

    /// Sends a request, asserts it was refused with error `code`, and returns the
    /// response.
    pub async fn refused(&self, base: &str, command: &str, body: Value, code: &str) -> Value {
        let what = format!("{command} {body}");
        let resp = self.request(base, command, body).await;
        assert_eq!(resp["status"], "error", "{what}: {resp}");
        assert_eq!(resp["error"]["code"], code, "{what}: {resp}");
        resp
    }

    /// Like [`Client::refused`], and asserts the error message contains `needle`.
    pub async fn refused_saying(
        &self,
        base: &str,
        command: &str,
        body: Value,
        code: &str,
        needle: &str,
    ) -> Value {
        let resp = self.refused(base, command, body, code).await;
        let message = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{command}: {message:?} lacks {needle:?}: {resp}"
        );
        resp
    }

    /// Waits for a job's `result` message.
    pub async fn job_result(&self, base: &str, job_id: &str) -> Value {
        let topic = format!("{base}/jobs/{job_id}/result");
        self.wait_for(move |m| m.topic == topic).await.json()
    }

    /// The log lines received for a job, in arrival order.
    pub fn job_lines(&self, base: &str, job_id: &str) -> Vec<Value> {
        let topic = format!("{base}/jobs/{job_id}/log");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic == topic)
            .map(|m| m.json())
            .collect()
    }

    /// Every payload the worker published so far, as text (the client's own
    /// commands, which carry tokens, are left out).
    pub fn all_text(&self) -> String {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| !m.topic.contains("/cmd/"))
            .map(|m| format!("{} {}\n", m.topic, m.text()))
            .collect()
    }

    pub fn messages(&self) -> HashMap<String, Vec<Msg>> {
        let mut out: HashMap<String, Vec<Msg>> = HashMap::new();
        for m in self.seen.lock().unwrap().iter() {
            out.entry(m.topic.clone()).or_default().push(m.clone());
        }
        out
    }
}
