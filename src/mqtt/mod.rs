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

mod options;
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
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::command::JobId;
use crate::config::Settings;
use crate::jobs::{JobEvent, JobState};
use crate::service::{Request, Service};
pub use topics::Topics;

/// Connection facts shared with readiness checks and metrics.
#[derive(Debug, Default)]
pub struct MqttStatus {
    connected: AtomicBool,
    reconnects: AtomicU64,
}

impl MqttStatus {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
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
        let events = service.engine().subscribe();
        service.engine().announce_all();

        let connection = tokio::spawn(connection_task(
            eventloop,
            client.clone(),
            topics.clone(),
            service.clone(),
            status.clone(),
            req_tx,
            Duration::from_secs(settings.mqtt.reconnect_max_secs.max(1)),
            stop_connection.clone(),
        ));
        let dispatcher = tokio::spawn(dispatch_task(
            req_rx,
            client.clone(),
            topics.clone(),
            service,
            stop_dispatch.clone(),
        ));
        let log_qos = if settings.jobs.log_qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let publisher = tokio::spawn(publish_task(
            events,
            client.clone(),
            topics.clone(),
            log_qos,
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

#[allow(clippy::too_many_arguments)]
async fn connection_task(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    service: Arc<Service>,
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
                status.connected.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(250);
                tracing::info!("connected to the MQTT broker");
                // Never await the client inside the loop that drives it.
                let (client, topics, service) = (client.clone(), topics.clone(), service.clone());
                tokio::spawn(async move {
                    let info = service.info().await;
                    if let Err(e) = on_connected(&client, &topics, info).await {
                        tracing::warn!(error = %e, "could not announce the worker");
                    }
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let _ = requests.send(p);
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                tracing::warn!(reason = ?d.reason_code, "the broker disconnected us");
                status.connected.store(false, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Keep reading until the broker closes the connection: closing with
                // unread acks in the socket sends a RST, and the broker may then drop
                // our last messages (the final job states and `offline`).
                status.connected.store(false, Ordering::Relaxed);
                disconnecting = true;
            }
            Ok(_) => {}
            Err(_) if disconnecting => return,
            Err(e) => {
                if status.connected.swap(false, Ordering::Relaxed) {
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

async fn publish_task(
    mut events: broadcast::Receiver<JobEvent>,
    client: AsyncClient,
    topics: Topics,
    log_qos: QoS,
    stop: CancellationToken,
) {
    let mut last_state: HashMap<JobId, JobState> = HashMap::new();
    loop {
        let event = tokio::select! {
            biased;
            e = events.recv() => e,
            _ = stop.cancelled() => {
                // Drain what is already queued, then end.
                loop {
                    match events.try_recv() {
                        Ok(e) => publish_event(&client, &topics, log_qos, &mut last_state, e).await,
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "job events were dropped: the publisher fell behind");
                        }
                        Err(_) => return,
                    }
                }
            }
        };
        match event {
            Ok(e) => publish_event(&client, &topics, log_qos, &mut last_state, e).await,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "job events were dropped: the publisher fell behind"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The retained `last/<repository>/backup|verify` summary a result gives, if any
/// (dry runs leave the last real backup in place).
fn last_summary(r: &crate::jobs::JobResult) -> Option<(String, &'static str, serde_json::Value)> {
    let rec = &r.record;
    let repo = rec.repository.clone()?;
    let data = r.data.clone().unwrap_or(serde_json::Value::Null);
    let duration = match (rec.started_at, rec.finished_at) {
        (Some(s), Some(f)) => Some((f - s).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    let base = serde_json::json!({
        "job_id": rec.job_id,
        "state": rec.state,
        "finished_at": rec.finished_at,
        "duration_secs": duration,
        "error": rec.error,
    });
    let mut summary = base;
    match rec.command.as_str() {
        "backup/run" if data["dry_run"] != true => {
            summary["archive"] = data["archive"].clone();
            summary["stats"] = data["stats"].clone();
            Some((repo, "backup", summary))
        }
        "backup/verify" => {
            for k in [
                "verified",
                "archive",
                "sampled",
                "matched",
                "mismatched",
                "changed",
                "missing",
            ] {
                summary[k] = data[k].clone();
            }
            Some((repo, "verify", summary))
        }
        _ => None,
    }
}

async fn publish_event(
    client: &AsyncClient,
    topics: &Topics,
    log_qos: QoS,
    last_state: &mut HashMap<JobId, JobState>,
    event: JobEvent,
) {
    let result = match event {
        JobEvent::State(rec) => {
            let payload = Bytes::from(serde_json::to_vec(&rec).unwrap_or_default());
            let changed = last_state.insert(rec.job_id, rec.state) != Some(rec.state);
            let r = client
                .publish_bytes(
                    topics.job_state(rec.job_id),
                    QoS::AtLeastOnce,
                    true,
                    payload.clone(),
                )
                .await;
            if changed && r.is_ok() {
                client
                    .publish_bytes(topics.events(), QoS::AtLeastOnce, false, payload)
                    .await
            } else {
                r
            }
        }
        JobEvent::Log { job_id, line } => {
            let payload = serde_json::to_vec(&line).unwrap_or_default();
            client
                .publish(topics.job_log(job_id), log_qos, false, payload)
                .await
        }
        JobEvent::Result(result) => {
            last_state.remove(&result.record.job_id);
            if let Some((repo, kind, summary)) = last_summary(&result) {
                let _ = client
                    .publish(
                        topics.last(&repo, kind),
                        QoS::AtLeastOnce,
                        true,
                        summary.to_string(),
                    )
                    .await;
            }
            let payload = serde_json::to_vec(&result).unwrap_or_default();
            client
                .publish(
                    topics.job_result(result.record.job_id),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
        }
        JobEvent::Forgotten(id) => {
            last_state.remove(&id);
            // An empty retained message clears the retained state.
            client
                .publish(topics.job_state(id), QoS::AtLeastOnce, true, Vec::new())
                .await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "could not publish a job event");
    }
}
