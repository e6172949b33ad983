//! The MQTT adapter (rumqttc, protocol v5; v3.1.1 clients interoperate through the
//! broker). Three tasks:
//!
//! - the **connection** task polls the event loop and only forwards: it never waits
//!   on job work. On every ConnAck it resubscribes and publishes `online` and
//!   `info`; on errors it backs off exponentially up to `mqtt.reconnect_max_secs`
//!   (rumqttc itself would retry at once, forever).
//! - the **dispatcher** turns each command publish into a [`Request`], lets the
//!   [`Service`] answer, and publishes exactly one response.
//! - the **publisher** turns job events into `jobs/<id>/…` and `events` messages.

pub mod discovery;
mod options;
pub mod summary;
pub mod topics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use rumqttc::Outgoing;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::command::JobId;
use crate::config::Settings;
use crate::jobs::{JobEvent, JobState, ReliableEvents};
use crate::service::{Request, Service};
pub use topics::Topics;

/// Connection facts shared with readiness checks and metrics.
#[derive(Debug, Default)]
pub struct MqttStatus {
    connected: AtomicBool,
    reconnects: AtomicU64,
    changed: Notify,
}

impl MqttStatus {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Records the connection state; returns the previous one.
    fn set_connected(&self, up: bool) -> bool {
        let was = self.connected.swap(up, Ordering::AcqRel);
        self.changed.notify_waiters();
        was
    }

    /// Returns once the connection is down (at once if it is).
    async fn disconnected(&self) {
        loop {
            let changed = self.changed.notified();
            if !self.connected() {
                return;
            }
            changed.await;
        }
    }

    /// Connection losses since start.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
}

/// A running MQTT adapter.
pub struct Mqtt {
    client: AsyncClient,
    topics: Topics,
    connection: JoinHandle<()>,
    dispatcher: Option<JoinHandle<()>>,
    publisher: JoinHandle<()>,
    stop_dispatch: CancellationToken,
    stop_publisher: CancellationToken,
    stop_connection: CancellationToken,
    pub status: Arc<MqttStatus>,
}

impl Mqtt {
    /// Connects (in the background) and starts serving commands.
    pub fn start(settings: &Settings, service: Arc<Service>) -> anyhow::Result<Mqtt> {
        let topics = Topics::new(settings.base_topic());
        let options = options::build(settings, &topics)?;
        let (client, eventloop) = AsyncClient::new(options, 4096);
        let status = Arc::new(MqttStatus::default());
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let stop_dispatch = CancellationToken::new();
        let stop_publisher = CancellationToken::new();
        let stop_connection = CancellationToken::new();

        // Subscribe to job events before anything can happen, then correct retained
        // states a previous run left behind (a job it ran is now `interrupted`).
        let events = service.engine().subscribe_reliable(true);
        service.engine().announce_all();

        let ha = Arc::new(HaConfig {
            enabled: settings.homeassistant.discovery,
            prefix: settings
                .homeassistant
                .prefix
                .trim_end_matches('/')
                .to_string(),
            node: settings.node_id(),
            state_file: settings.state_dir.join("ha-discovery.json"),
            configuration_url: discovery_url(settings),
        });
        let connection = tokio::spawn(connection_task(
            eventloop,
            client.clone(),
            topics.clone(),
            service.clone(),
            ha.clone(),
            status.clone(),
            req_tx,
            Duration::from_secs(settings.mqtt.reconnect_max_secs.max(1)),
            stop_connection.clone(),
        ));
        let labels = service.borgmatic().labels();
        let dispatcher = tokio::spawn(dispatch_task(
            req_rx,
            client.clone(),
            topics.clone(),
            service,
            ha,
            stop_dispatch.clone(),
        ));
        let log_qos = if settings.jobs.log_qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let publisher = tokio::spawn(publish_task(
            labels,
            events,
            client.clone(),
            topics.clone(),
            log_qos,
            status.clone(),
            stop_publisher.clone(),
        ));
        Ok(Mqtt {
            client,
            topics,
            connection,
            dispatcher: Some(dispatcher),
            publisher,
            stop_dispatch,
            stop_publisher,
            stop_connection,
            status,
        })
    }

    /// Publishes a retained message from outside the job events (the health
    /// prober); queued while the broker is away.
    pub fn retained_sink(&self) -> impl Fn(String, String) + Send + Sync + 'static {
        let client = self.client.clone();
        move |topic, payload| {
            if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, true, payload) {
                tracing::warn!(error = %e, "could not queue a retained message");
            }
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Stops taking new commands (call before interrupting jobs).
    pub async fn stop_accepting(&mut self) {
        self.stop_dispatch.cancel();
        if let Some(d) = self.dispatcher.take() {
            let _ = d.await;
        }
    }

    /// Publishes what the engine still reported, then `offline`, then disconnects.
    pub async fn shutdown(mut self) {
        self.stop_accepting().await;
        self.stop_publisher.cancel();
        let _ = self.publisher.await;
        let _ = self
            .client
            .publish(self.topics.status(), QoS::AtLeastOnce, true, "offline")
            .await;
        let _ = self.client.disconnect().await;
        if tokio::time::timeout(Duration::from_secs(5), &mut self.connection)
            .await
            .is_err()
        {
            self.stop_connection.cancel();
            let _ = self.connection.await;
        }
    }
}

/// Home Assistant discovery settings the tasks share.
struct HaConfig {
    enabled: bool,
    prefix: String,
    node: String,
    /// Labels published last time, so vanished repositories can be removed.
    state_file: std::path::PathBuf,
    configuration_url: Option<String>,
}

/// The devices' "Visit" link: the configured one, else the HTTP sidecar when it
/// listens on a specific address (a wildcard bind names no reachable host).
fn discovery_url(settings: &Settings) -> Option<String> {
    if let Some(url) = &settings.homeassistant.configuration_url {
        // Home Assistant refuses a whole config with another scheme.
        return (url.starts_with("http://") || url.starts_with("https://")).then(|| url.clone());
    }
    let addr: std::net::SocketAddr = settings.http.listen.parse().ok()?;
    (!addr.ip().is_unspecified()).then(|| format!("http://{addr}/"))
}

impl HaConfig {
    fn birth_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }
}

/// Publishes every repository's discovery configs and removes those of
/// repositories that are gone since the last time.
async fn publish_discovery(
    client: &AsyncClient,
    topics: &Topics,
    ha: &HaConfig,
    labels: &[String],
) {
    let before: Vec<String> = std::fs::read(&ha.state_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let d = discovery::Discovery {
        prefix: &ha.prefix,
        node: &ha.node,
        topics,
        configuration_url: ha.configuration_url.as_deref(),
    };
    let mut messages = d.worker_entities();
    for gone in before.iter().filter(|l| !labels.contains(l)) {
        messages.extend(d.removals(gone));
    }
    for label in labels {
        messages.extend(d.entities(label));
    }
    for m in messages {
        let payload = m.payload.map(|p| p.to_string()).unwrap_or_default();
        if let Err(e) = client
            .publish(m.topic, QoS::AtLeastOnce, true, payload)
            .await
        {
            tracing::warn!(error = %e, "could not publish a discovery config");
        }
    }
    if let Ok(json) = serde_json::to_vec(labels) {
        if let Err(e) = std::fs::write(&ha.state_file, json) {
            tracing::warn!(error = %e, "could not remember the published discovery configs");
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection_task(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    service: Arc<Service>,
    ha: Arc<HaConfig>,
    status: Arc<MqttStatus>,
    requests: mpsc::UnboundedSender<Publish>,
    max_backoff: Duration,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    let mut disconnecting = false;
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = stop.cancelled() => return,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                status.set_connected(true);
                backoff = Duration::from_millis(250);
                tracing::info!("connected to the MQTT broker");
                // Never await the client inside the loop that drives it.
                let (client, topics, service, ha) =
                    (client.clone(), topics.clone(), service.clone(), ha.clone());
                tokio::spawn(async move {
                    let info = service.info().await;
                    let labels: Vec<String> = info["repositories"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect();
                    if let Err(e) = on_connected(&client, &topics, info).await {
                        tracing::warn!(error = %e, "could not announce the worker");
                    }
                    if ha.enabled {
                        let subs = [
                            Filter::new(ha.birth_topic(), QoS::AtLeastOnce),
                            Filter::new(topics.ha_buttons_filter(), QoS::AtLeastOnce),
                        ];
                        if let Err(e) = client.subscribe_many(subs).await {
                            tracing::warn!(error = %e, "could not subscribe for Home Assistant");
                        }
                        publish_discovery(&client, &topics, &ha, &labels).await;
                    }
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let _ = requests.send(p);
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                tracing::warn!(reason = ?d.reason_code, "the broker disconnected us");
                status.set_connected(false);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Keep reading until the broker closes the connection: closing with
                // unread acks in the socket sends a RST, and the broker may then drop
                // our last messages (the final job states and `offline`).
                status.set_connected(false);
                disconnecting = true;
            }
            Ok(_) => {}
            Err(_) if disconnecting => return,
            Err(e) => {
                if status.set_connected(false) {
                    status.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT connection error");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// A Home Assistant button press: the same request as `backup/run` or
/// `backup/verify` with the write role (the broker ACL guards the topic).
async fn ha_button(
    client: &AsyncClient,
    topics: &Topics,
    service: &Service,
    repository: &str,
    action: &str,
) {
    let (command, body) = match discovery::button_request(service.engine(), repository, action) {
        None => return,
        Some(Ok(request)) => request,
        Some(Err(why)) => {
            refused(client, topics, repository, action, "not_found", &why).await;
            return;
        }
    };
    let body = body.to_string();
    let resp = service
        .handle(Request {
            transport: crate::service::Transport::Mqtt,
            client: Some("homeassistant"),
            command,
            body: body.as_bytes(),
            retained: false,
            bearer: None,
            trusted: Some(crate::auth::Role::Write),
        })
        .await;
    if let Some(e) = &resp.error {
        tracing::warn!(code = e.code.as_str(), message = %e.message, "a Home Assistant button was refused");
        refused(
            client,
            topics,
            repository,
            action,
            e.code.as_str(),
            &e.message,
        )
        .await;
    }
}

/// The user pressed and nothing ran: tell them where they look (the event entity).
async fn refused(
    client: &AsyncClient,
    topics: &Topics,
    repository: &str,
    action: &str,
    code: &str,
    message: &str,
) {
    let event = summary::press_refused(action, code, message);
    if let Err(e) = client
        .publish(
            topics.repo_event(repository),
            QoS::AtLeastOnce,
            false,
            event.to_string(),
        )
        .await
    {
        tracing::warn!(error = %e, "could not publish a refused press");
    }
}

async fn on_connected(
    client: &AsyncClient,
    topics: &Topics,
    info: serde_json::Value,
) -> Result<(), rumqttc::v5::ClientError> {
    // Retain As Published: without it a v5 broker clears the retain flag of live
    // messages, and a retained command would be indistinguishable from a fresh one.
    let mut filter = Filter::new(topics.commands_filter(), QoS::AtLeastOnce);
    filter.preserve_retain = true;
    filter.nolocal = true;
    client.subscribe_many([filter]).await?;
    client
        .publish(topics.status(), QoS::AtLeastOnce, true, "online")
        .await?;
    client
        .publish(topics.info(), QoS::AtLeastOnce, true, info.to_string())
        .await?;
    Ok(())
}

async fn dispatch_task(
    mut requests: mpsc::UnboundedReceiver<Publish>,
    client: AsyncClient,
    topics: Topics,
    service: Arc<Service>,
    ha: Arc<HaConfig>,
    stop: CancellationToken,
) {
    loop {
        let p = tokio::select! {
            p = requests.recv() => match p { Some(p) => p, None => return },
            _ = stop.cancelled() => return,
        };
        let Ok(topic) = std::str::from_utf8(&p.topic) else {
            continue;
        };
        if ha.enabled && topic == ha.birth_topic() {
            // Home Assistant (re)started: it forgot non-retained state, so announce again.
            if p.payload.as_ref() == b"online" {
                let labels: Vec<String> = service.info().await["repositories"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                publish_discovery(&client, &topics, &ha, &labels).await;
            }
            continue;
        }
        if let Some((repository, action)) = topics.parse_ha_button(topic) {
            if ha.enabled && !p.retain {
                ha_button(&client, &topics, &service, repository, action).await;
            }
            continue;
        }
        let Some(command) = topics.parse_command(topic) else {
            continue;
        };
        let props = p.properties.as_ref();
        let bearer = props.and_then(|props| {
            props
                .user_properties
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .and_then(|(_, v)| crate::auth::bearer(v))
        });
        let response = service
            .handle(Request {
                transport: crate::service::Transport::Mqtt,
                client: None,
                command,
                body: &p.payload,
                retained: p.retain,
                bearer,
                trusted: None,
            })
            .await;
        let reply_to = props
            .and_then(|props| props.response_topic.as_deref())
            .filter(|t| topics.response_topic_allowed(t))
            .map(str::to_string)
            .unwrap_or_else(|| topics.response(command));
        let reply_props = PublishProperties {
            correlation_data: props.and_then(|props| props.correlation_data.clone()),
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        if let Err(e) = client
            .publish_with_properties(
                reply_to,
                QoS::AtLeastOnce,
                false,
                response.to_json(),
                reply_props,
            )
            .await
        {
            tracing::error!(error = %e, "could not publish a response");
        }
    }
}

/// Publishes job events in order. Nothing is skipped while the broker is connected:
/// a slow broker slows the jobs' output (see `jobs::events`). While it is not, log
/// lines are dropped (they stay readable over HTTP and `job/log`) so a broker outage
/// never stalls a backup; states and results queue in the client for the reconnect.
async fn publish_task(
    repositories: Vec<String>,
    mut events: ReliableEvents,
    client: AsyncClient,
    topics: Topics,
    log_qos: QoS,
    status: Arc<MqttStatus>,
    stop: CancellationToken,
) {
    let mut p = Publisher {
        client,
        topics,
        log_qos,
        status,
        last_state: HashMap::new(),
        dropped_lines: 0,
    };
    // Nothing writes to any repository yet: `running` has a value before the first
    // job (queued ahead of every job event, so a job's ON comes after it).
    for repo in &repositories {
        for (topic, payload) in [
            (p.topics.running(repo), "OFF".to_string()),
            (
                p.topics.repo_progress(repo),
                summary::idle_progress().to_string(),
            ),
        ] {
            if let Err(e) = p.client.try_publish(topic, QoS::AtLeastOnce, true, payload) {
                tracing::warn!(error = %e, "could not queue a repository's idle state");
            }
        }
    }
    loop {
        let event = tokio::select! {
            biased;
            e = events.recv() => e,
            _ = stop.cancelled() => {
                // Publish what is already queued, then end.
                while let Some(e) = events.try_recv() {
                    p.publish(e).await;
                }
                return;
            }
        };
        match event {
            Some(e) => p.publish(e).await,
            None => return,
        }
    }
}

struct Publisher {
    client: AsyncClient,
    topics: Topics,
    log_qos: QoS,
    status: Arc<MqttStatus>,
    /// The last state published per job, to tell changes from progress updates.
    last_state: HashMap<JobId, JobState>,
    /// Log lines not published since the broker went away (reported once back).
    dropped_lines: u64,
}

impl Publisher {
    async fn publish(&mut self, event: JobEvent) {
        if self.dropped_lines > 0 && self.status.connected() {
            tracing::warn!(
                lines = self.dropped_lines,
                "log lines were not published while the broker was unreachable"
            );
            self.dropped_lines = 0;
        }
        if let JobEvent::Log(l) = &event {
            let topic = self.topics.job_log(l.job_id);
            // Lines fit in the client's queue for a while; then they are skipped.
            let sent = tokio::select! {
                biased;
                r = self.client.publish_bytes(topic, self.log_qos, false, l.json.clone()) => r.is_ok(),
                _ = self.status.disconnected() => false,
            };
            if !sent {
                self.dropped_lines += 1;
            }
            return;
        }
        if self.status.connected() {
            publish_event(&self.client, &self.topics, &mut self.last_state, event).await;
        } else {
            // Queue in the client without waiting: it sends them after the reconnect.
            try_publish_event(&self.client, &self.topics, &mut self.last_state, event);
        }
    }
}

/// One message to publish.
struct Message {
    topic: String,
    retain: bool,
    payload: Bytes,
}

impl Message {
    fn new(topic: String, retain: bool, payload: impl Into<Bytes>) -> Self {
        Self {
            topic,
            retain,
            payload: payload.into(),
        }
    }
}

/// The messages a state, result or forgotten job gives (all QoS 1).
fn messages(
    topics: &Topics,
    last_state: &mut HashMap<JobId, JobState>,
    event: JobEvent,
) -> Vec<Message> {
    let mut out = Vec::new();
    match event {
        JobEvent::State(rec) => {
            let payload = Bytes::from(serde_json::to_vec(&*rec).unwrap_or_default());
            let changed = last_state.insert(rec.job_id, rec.state) != Some(rec.state);
            // `running` goes OFF with the result (see below), never before it.
            out.extend(running_messages(topics, &rec, changed));
            out.push(Message::new(
                topics.job_state(rec.job_id),
                true,
                payload.clone(),
            ));
            if changed {
                out.push(Message::new(topics.events(), false, payload));
            }
        }
        JobEvent::Result(result) => {
            last_state.remove(&result.record.job_id);
            // The summary first, then `running` OFF: whoever waits for OFF then
            // reads the new result, never the previous one.
            out.extend(result_messages(topics, &result));
            let payload = serde_json::to_vec(&*result).unwrap_or_default();
            out.push(Message::new(
                topics.job_result(result.record.job_id),
                false,
                payload,
            ));
        }
        JobEvent::Forgotten(id) => {
            last_state.remove(&id);
            // An empty retained message clears the retained state.
            out.push(Message::new(topics.job_state(id), true, Bytes::new()));
        }
        JobEvent::Log(_) => {}
    }
    out
}

/// `running` ON (and the progress) while a job that writes to the repository runs.
fn running_messages(topics: &Topics, rec: &crate::jobs::JobRecord, changed: bool) -> Vec<Message> {
    let mut out = Vec::new();
    let Some(repo) = rec.repository.as_deref() else {
        return out;
    };
    if rec.state != JobState::Running || !summary::marks_running(&rec.command) {
        return out;
    }
    if changed {
        out.push(Message::new(topics.running(repo), true, "ON"));
    }
    let progress = summary::progress(&rec.job_id.to_string(), &rec.command, rec.progress.as_ref());
    out.push(Message::new(
        topics.repo_progress(repo),
        true,
        progress.to_string(),
    ));
    out
}

/// A result's retained summary and its event, then `running` OFF.
fn result_messages(topics: &Topics, result: &crate::jobs::JobResult) -> Vec<Message> {
    let mut out = Vec::new();
    if let Some((repo, kind, summary)) = summary::last_summary(result) {
        out.push(Message::new(
            topics.last(&repo, kind),
            true,
            summary.to_string(),
        ));
        out.push(Message::new(
            topics.repo_event(&repo),
            false,
            summary::event(kind, &summary).to_string(),
        ));
    }
    if let Some(repo) = result.record.repository.as_deref() {
        if summary::marks_running(&result.record.command) {
            out.push(Message::new(topics.running(repo), true, "OFF"));
            out.push(Message::new(
                topics.repo_progress(repo),
                true,
                summary::idle_progress().to_string(),
            ));
        }
    }
    out
}

async fn publish_event(
    client: &AsyncClient,
    topics: &Topics,
    last_state: &mut HashMap<JobId, JobState>,
    event: JobEvent,
) {
    for m in messages(topics, last_state, event) {
        if let Err(e) = client
            .publish_bytes(m.topic, QoS::AtLeastOnce, m.retain, m.payload)
            .await
        {
            tracing::error!(error = %e, "could not publish a job event");
        }
    }
}

fn try_publish_event(
    client: &AsyncClient,
    topics: &Topics,
    last_state: &mut HashMap<JobId, JobState>,
    event: JobEvent,
) {
    for m in messages(topics, last_state, event) {
        if let Err(e) = client.try_publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload) {
            tracing::error!(error = %e, "could not queue a job event for the reconnect");
        }
    }
}
