//! The MQTT adapter (rumqttc, protocol v5; v3.1.1 clients interoperate through the
//! broker). Three tasks:
//!
//! - the **connection** task polls the event loop and only forwards: it never waits
//!   on job work. On every ConnAck it resubscribes and publishes `online` and
//!   `info`; on errors it backs off exponentially up to `mqtt.reconnect_max_secs`
//!   (rumqttc itself would retry at once, forever).
//! - the **dispatcher** turns each command publish into a [`Request`], lets the
//!   [`Service`] answer, and publishes exactly one response. Requests are handled
//!   concurrently, at most `limits.max_in_flight` at once, so one slow command never
//!   delays another; a few more wait in a short queue, beyond it they are `busy`.
//! - the **publisher** turns job events into `jobs/<id>/…` and `events` messages.
//!
//! Every publish is checked first ([`outgoing`]): nothing a client sends can make
//! the worker send a packet the broker would reject and drop the connection for.

pub mod discovery;
mod options;
mod outgoing;
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
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::command::{ApiError, Envelope, ErrorCode, JobId, RequestLimits, Response};
use crate::config::Settings;
use crate::jobs::{JobEvent, JobState, ReliableEvents};
use crate::service::{Request, Service};
use outgoing::{Out, PacketLimit, Unsendable};
pub use topics::Topics;

/// Command publishes waiting for a free in-flight place; beyond this they are
/// answered `busy` at once. Each is at most [`options::incoming_max`] bytes.
const REQUEST_QUEUE: usize = 64;
/// Longest v5 Correlation Data copied to a response; longer is refused (`invalid`).
pub const MAX_CORRELATION_BYTES: usize = 256;

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
        let (req_tx, req_rx) = mpsc::channel(REQUEST_QUEUE);
        let out = Out {
            client: client.clone(),
            limit: Arc::new(PacketLimit::new(settings.mqtt.max_packet_bytes)),
        };
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
        let dispatch = Arc::new(Dispatch {
            out: out.clone(),
            topics: topics.clone(),
            service: service.clone(),
            ha: ha.clone(),
            limits: RequestLimits {
                max_bytes: settings.limits.max_request_bytes,
                max_depth: settings.limits.max_request_depth,
            },
        });
        let connection = tokio::spawn(connection_task(
            eventloop,
            dispatch.clone(),
            status.clone(),
            req_tx,
            Duration::from_secs(settings.mqtt.reconnect_max_secs.max(1)),
            stop_connection.clone(),
        ));
        let labels = service.borgmatic().labels();
        let dispatcher = tokio::spawn(dispatch_task(
            req_rx,
            dispatch,
            settings.limits.max_in_flight.max(1),
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
            out,
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
async fn publish_discovery(out: &Out, topics: &Topics, ha: &HaConfig, labels: &[String]) {
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
        if let Err(e) = out
            .publish(m.topic, QoS::AtLeastOnce, true, payload.into(), None)
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

async fn connection_task(
    mut eventloop: EventLoop,
    dispatch: Arc<Dispatch>,
    status: Arc<MqttStatus>,
    requests: mpsc::Sender<Publish>,
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
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let broker_max = ack.properties.as_ref().and_then(|p| p.max_packet_size);
                dispatch.out.limit.set_broker(broker_max);
                status.set_connected(true);
                backoff = Duration::from_millis(250);
                tracing::info!(
                    max_packet_bytes = dispatch.out.limit.get(),
                    "connected to the MQTT broker"
                );
                // Never await the client inside the loop that drives it.
                let d = dispatch.clone();
                tokio::spawn(async move {
                    let (out, client, topics, service, ha) =
                        (&d.out, &d.out.client, &d.topics, &d.service, &d.ha);
                    let info = service.info().await;
                    let labels: Vec<String> = info["repositories"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect();
                    if let Err(e) = on_connected(out, topics, info).await {
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
                        publish_discovery(out, topics, ha, &labels).await;
                    }
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                // Never wait here: this loop also drives every publish.
                if let Err(mpsc::error::TrySendError::Full(p)) = requests.try_send(p) {
                    dispatch.overflow(&p);
                }
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
async fn ha_button(out: &Out, topics: &Topics, service: &Service, repository: &str, action: &str) {
    let (command, body) = match discovery::button_request(service.engine(), repository, action) {
        None => return,
        Some(Ok(request)) => request,
        Some(Err(why)) => {
            refused(out, topics, repository, action, "not_found", &why).await;
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
        refused(out, topics, repository, action, e.code.as_str(), &e.message).await;
    }
}

/// The user pressed and nothing ran: tell them where they look (the event entity).
async fn refused(
    out: &Out,
    topics: &Topics,
    repository: &str,
    action: &str,
    code: &str,
    message: &str,
) {
    let event = summary::press_refused(action, code, message);
    if let Err(e) = out
        .publish(
            topics.repo_event(repository),
            QoS::AtLeastOnce,
            false,
            Bytes::from(event.to_string()),
            None,
        )
        .await
    {
        tracing::warn!(error = %e, "could not publish a refused press");
    }
}

async fn on_connected(out: &Out, topics: &Topics, info: serde_json::Value) -> anyhow::Result<()> {
    // Retain As Published: without it a v5 broker clears the retain flag of live
    // messages, and a retained command would be indistinguishable from a fresh one.
    let mut filter = Filter::new(topics.commands_filter(), QoS::AtLeastOnce);
    filter.preserve_retain = true;
    filter.nolocal = true;
    out.client.subscribe_many([filter]).await?;
    out.publish(
        topics.status(),
        QoS::AtLeastOnce,
        true,
        Bytes::from_static(b"online"),
        None,
    )
    .await?;
    out.publish(
        topics.info(),
        QoS::AtLeastOnce,
        true,
        info.to_string().into(),
        None,
    )
    .await?;
    Ok(())
}

/// What handling one incoming publish needs; shared by the concurrent handlers.
struct Dispatch {
    out: Out,
    topics: Topics,
    service: Arc<Service>,
    ha: Arc<HaConfig>,
    limits: RequestLimits,
}

impl Dispatch {
    /// Handles one publish: a Home Assistant message, or a command that gets exactly
    /// one response (none when its topic cannot name a command).
    async fn handle(&self, p: Publish) {
        let Ok(topic) = std::str::from_utf8(&p.topic) else {
            return;
        };
        let ha = &self.ha;
        if ha.enabled && topic == ha.birth_topic() {
            // Home Assistant (re)started: it forgot non-retained state, so announce again.
            if p.payload.as_ref() == b"online" {
                let labels: Vec<String> = self.service.info().await["repositories"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                publish_discovery(&self.out, &self.topics, ha, &labels).await;
            }
            return;
        }
        if let Some((repository, action)) = self.topics.parse_ha_button(topic) {
            if ha.enabled && !p.retain {
                ha_button(&self.out, &self.topics, &self.service, repository, action).await;
            }
            return;
        }
        let Some(command) = self.topics.parse_command(topic) else {
            if self.topics.command_suffix(topic).is_some() {
                crate::metrics::request("mqtt", ErrorCode::Invalid.as_str());
                tracing::debug!(
                    topic = %crate::command::shorten(topic),
                    "a command topic that cannot name a command: not answered"
                );
            }
            return;
        };
        let props = p.properties.as_ref();
        let correlation = props.and_then(|props| props.correlation_data.clone());
        if correlation
            .as_ref()
            .is_some_and(|c| c.len() > MAX_CORRELATION_BYTES)
        {
            crate::metrics::request("mqtt", ErrorCode::Invalid.as_str());
            self.service.audit_refusal(
                crate::service::Transport::Mqtt,
                command,
                ErrorCode::Invalid,
            );
            let rid = Envelope::parse(&p.payload, &self.limits)
                .ok()
                .and_then(|e| e.request_id);
            let err = ApiError::invalid(format!(
                "correlation data is longer than {MAX_CORRELATION_BYTES} bytes; the request was not run"
            ));
            self.reply(command, props, None, Response::error(rid, err))
                .await;
            return;
        }
        let bearer = props.and_then(|props| {
            props
                .user_properties
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .and_then(|(_, v)| crate::auth::bearer(v))
        });
        let response = self
            .service
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
        self.reply(command, props, correlation, response).await;
    }

    /// Where the answer to `command` goes: the client's Response Topic when allowed,
    /// else `<base>/response/<command>` for a known command and
    /// `<base>/response/unknown` for anything else — a client string is never echoed
    /// into a topic others read (a token published as `cmd/x/<token>` would be).
    fn reply_topic(&self, command: &str, props: Option<&PublishProperties>) -> String {
        props
            .and_then(|props| props.response_topic.as_deref())
            .filter(|t| self.topics.response_topic_allowed(t))
            .map(str::to_string)
            .unwrap_or_else(|| match crate::command::CommandName::parse(command) {
                Some(name) => self.topics.response(name.as_str()),
                None => self.topics.response(topics::UNKNOWN_COMMAND),
            })
    }

    /// Publishes the one response; an answer too large for the connection becomes a
    /// small `unavailable` answer instead.
    async fn reply(
        &self,
        command: &str,
        props: Option<&PublishProperties>,
        correlation: Option<Bytes>,
        response: Response,
    ) {
        let topic = self.reply_topic(command, props);
        let reply_props = PublishProperties {
            correlation_data: correlation,
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        let sent = self
            .out
            .publish(
                topic.clone(),
                QoS::AtLeastOnce,
                false,
                response.to_json().into(),
                Some(reply_props.clone()),
            )
            .await;
        let Err(Unsendable::TooLarge { size, max }) = sent else {
            if let Err(e) = sent {
                tracing::error!(error = %e, "could not publish a response");
            }
            return;
        };
        let small = Response::error(
            response.request_id.clone(),
            ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the answer is {size} bytes, more than the {max} bytes this MQTT connection carries in one message; ask for less (e.g. a smaller limit) or use the HTTP API"
                ),
            ),
        );
        if let Err(e) = self
            .out
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                small.to_json().into(),
                Some(reply_props),
            )
            .await
        {
            tracing::error!(error = %e, "could not publish a response");
        }
    }

    /// A command that found the request queue full: answered `busy` without waiting
    /// (called from the connection loop, which must not wait).
    fn overflow(&self, p: &Publish) {
        let Some(command) = std::str::from_utf8(&p.topic)
            .ok()
            .and_then(|t| self.topics.parse_command(t))
        else {
            return;
        };
        crate::metrics::request("mqtt", ErrorCode::Busy.as_str());
        self.service
            .audit_refusal(crate::service::Transport::Mqtt, command, ErrorCode::Busy);
        let props = p.properties.as_ref();
        let rid = Envelope::parse(&p.payload, &self.limits)
            .ok()
            .and_then(|e| e.request_id);
        let resp = Response::error(
            rid,
            ApiError::new(
                ErrorCode::Busy,
                "the worker has too many requests in progress; retry shortly",
            ),
        );
        let correlation = props
            .and_then(|props| props.correlation_data.clone())
            .filter(|c| c.len() <= MAX_CORRELATION_BYTES);
        let reply_props = PublishProperties {
            correlation_data: correlation,
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        if let Err(e) = self.out.try_publish(
            self.reply_topic(command, props),
            QoS::AtLeastOnce,
            false,
            resp.to_json().into(),
            Some(reply_props),
        ) {
            tracing::warn!(error = %e, "could not answer a request the worker had no room for");
        }
    }
}

/// Takes command publishes off the queue and handles each in its own task, at most
/// `max_in_flight` at once. On stop, waits until those in flight have answered.
async fn dispatch_task(
    mut requests: mpsc::Receiver<Publish>,
    dispatch: Arc<Dispatch>,
    max_in_flight: usize,
    stop: CancellationToken,
) {
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let tracker = TaskTracker::new();
    loop {
        let p = tokio::select! {
            p = requests.recv() => match p { Some(p) => p, None => break },
            _ = stop.cancelled() => break,
        };
        let permit = tokio::select! {
            p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.cancelled() => break,
        };
        let d = dispatch.clone();
        tracker.spawn(async move {
            d.handle(p).await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Publishes job events in order. Nothing is skipped while the broker is connected:
/// a slow broker slows the jobs' output (see `jobs::events`). While it is not, log
/// lines are dropped (they stay readable over HTTP and `job/log`) so a broker outage
/// never stalls a backup; states and results queue in the client for the reconnect.
async fn publish_task(
    repositories: Vec<String>,
    mut events: ReliableEvents,
    out: Out,
    topics: Topics,
    log_qos: QoS,
    status: Arc<MqttStatus>,
    stop: CancellationToken,
) {
    let mut p = Publisher {
        out,
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
            if let Err(e) =
                p.out
                    .try_publish(topic, QoS::AtLeastOnce, true, Bytes::from(payload), None)
            {
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
    out: Out,
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
                r = self.out.publish(topic, self.log_qos, false, l.json.clone(), None) => r.is_ok(),
                _ = self.status.disconnected() => false,
            };
            if !sent {
                self.dropped_lines += 1;
            }
            return;
        }
        if self.status.connected() {
            publish_event(&self.out, &self.topics, &mut self.last_state, event).await;
        } else {
            // Queue in the client without waiting: it sends them after the reconnect.
            try_publish_event(&self.out, &self.topics, &mut self.last_state, event);
        }
    }
}

/// One message to publish.
struct Message {
    topic: String,
    retain: bool,
    payload: Bytes,
    /// Sent instead when `payload` is too large for the connection (a job result
    /// without its data, saying why), so no client takes a missing result for none.
    smaller: Option<Bytes>,
}

impl Message {
    fn new(topic: String, retain: bool, payload: impl Into<Bytes>) -> Self {
        Self {
            topic,
            retain,
            payload: payload.into(),
            smaller: None,
        }
    }
}

/// A job result with its data left out, for when the whole does not fit.
fn result_without_data(result: &crate::jobs::JobResult, size: usize) -> Bytes {
    let mut v = serde_json::to_value(&result.record).unwrap_or_default();
    v["data"] = serde_json::Value::Null;
    v["data_omitted"] = serde_json::Value::String(format!(
        "the result is {size} bytes, more than this MQTT connection carries in one message; read it over the HTTP API (GET /api/v1/jobs/{})",
        result.record.job_id
    ));
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
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
            let smaller = result_without_data(&result, payload.len());
            let mut m = Message::new(topics.job_result(result.record.job_id), false, payload);
            m.smaller = Some(smaller);
            out.push(m);
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
    out: &Out,
    topics: &Topics,
    last_state: &mut HashMap<JobId, JobState>,
    event: JobEvent,
) {
    for m in messages(topics, last_state, event) {
        let r = out
            .publish(m.topic.clone(), QoS::AtLeastOnce, m.retain, m.payload, None)
            .await;
        let r = match (r, m.smaller) {
            (Err(Unsendable::TooLarge { .. }), Some(smaller)) => {
                out.publish(m.topic, QoS::AtLeastOnce, m.retain, smaller, None)
                    .await
            }
            (r, _) => r,
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "could not publish a job event");
        }
    }
}

fn try_publish_event(
    out: &Out,
    topics: &Topics,
    last_state: &mut HashMap<JobId, JobState>,
    event: JobEvent,
) {
    for m in messages(topics, last_state, event) {
        let r = out.try_publish(m.topic.clone(), QoS::AtLeastOnce, m.retain, m.payload, None);
        let r = match (r, m.smaller) {
            (Err(Unsendable::TooLarge { .. }), Some(smaller)) => {
                out.try_publish(m.topic, QoS::AtLeastOnce, m.retain, smaller, None)
            }
            (r, _) => r,
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "could not queue a job event for the reconnect");
        }
    }
}
