//! The connection task: polls rumqttc's event loop and only forwards, never waiting
//! on job work. It matches acknowledgements to kept messages ([`super::outbox`]),
//! keeps rumqttc's unsent and unacknowledged publishes across reconnects, and on
//! every ConnAck re-establishes what the worker owns on the broker: first its
//! subscriptions (the first packet after the ConnAck, ahead of every publish carried
//! over from the last connection), then `online`, `info`, Home Assistant discovery,
//! every kept retained message and the results not yet acknowledged. On errors it
//! backs off exponentially up to `mqtt.reconnect_max_secs` (rumqttc itself would
//! retry at once, forever).
//! May import: `outbox`, `outgoing`, `dispatch`, `ha`, `topics`, `service`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, SubAck, Subscribe, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Event, EventLoop, Request};
use rumqttc::Outgoing;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::dispatch::Dispatch;
use super::ha::publish_discovery;
use super::outbox::{self, Correlator, Keeper, Tag};
use super::outgoing::Out;
use super::Topics;

/// Connection facts shared with readiness checks and metrics.
#[derive(Debug, Default)]
pub struct MqttStatus {
    connected: AtomicBool,
    reconnects: AtomicU64,
    changed: Notify,
}

impl MqttStatus {
    /// Whether the broker connection is up now.
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
    pub(super) async fn disconnected(&self) {
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

/// What the connection task drives besides the event loop.
pub(super) struct Link {
    pub dispatch: Arc<Dispatch>,
    pub keeper: Arc<Keeper>,
    pub status: Arc<MqttStatus>,
    pub requests: mpsc::Sender<Publish>,
    pub max_backoff: Duration,
}

pub(super) async fn connection_task(mut eventloop: EventLoop, link: Link, stop: CancellationToken) {
    let acks = outbox::spawn_acker(link.keeper.clone());
    let tracker = &link.dispatch.out.tracker;
    let mut correlator = Correlator::default();
    let mut backoff = Duration::from_millis(250);
    let mut disconnecting = false;
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = stop.cancelled() => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                connected(&link, &ack, &mut correlator, &mut eventloop.pending);
                backoff = Duration::from_millis(250);
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => check_suback(&ack),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => correlator.published(tracker, pkid),
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => correlator.collided(tracker, pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(kept) = correlator.acked(tracker, ack.pkid) {
                    let _ = acks.send(kept);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                // Never wait here: this loop also drives every publish.
                if let Err(mpsc::error::TrySendError::Full(p)) = link.requests.try_send(p) {
                    link.dispatch.overflow(&p);
                }
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                tracing::warn!(reason = ?d.reason_code, "the broker disconnected us");
                link.status.set_connected(false);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Keep reading until the broker closes the connection: closing with
                // unread acks in the socket sends a RST, and the broker may then drop
                // our last messages (the final job states and `offline`).
                link.status.set_connected(false);
                disconnecting = true;
            }
            Ok(_) => {}
            Err(_) if disconnecting => break,
            Err(e) => {
                // rumqttc moved what was unsent or unacknowledged to `pending`, and
                // would drop it if the broker has no session for us: keep it.
                correlator.save_pending(&mut eventloop.pending);
                if link.status.set_connected(false) {
                    link.status.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT connection error");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(link.max_backoff);
            }
        }
    }
    tracker.closed.store(true, Ordering::Release);
    tracker.space.notify_waiters();
}

/// A ConnAck: what the last connection left unsent goes out again, behind one
/// SUBSCRIBE, and the rest of what the worker owns is announced by a task.
fn connected(
    link: &Link,
    ack: &rumqttc::v5::mqttbytes::v5::ConnAck,
    correlator: &mut Correlator,
    pending: &mut std::collections::VecDeque<Request>,
) {
    correlator.restore_pending(pending);
    // Subscribe before anything else leaves: rumqttc sends `pending` first, in
    // order, and the publishes carried over from the last connection can hold an
    // earlier `online`. A client that sees it and asks at once must find the worker
    // subscribed, also when the broker kept no session (a restart without
    // persistence forgets subscriptions).
    pending.push_front(Request::Subscribe(subscriptions(&link.dispatch)));
    let broker_max = ack.properties.as_ref().and_then(|p| p.max_packet_size);
    link.dispatch.out.limit.set_broker(broker_max);
    link.status.set_connected(true);
    tracing::info!(
        max_packet_bytes = link.dispatch.out.limit.get(),
        session_present = ack.session_present,
        "connected to the MQTT broker"
    );
    let outstanding = correlator.outstanding(&link.dispatch.out.tracker);
    // Never await the client inside the loop that drives it.
    tokio::spawn(announce(
        link.dispatch.clone(),
        link.keeper.clone(),
        outstanding,
    ));
}

/// Everything the worker subscribes to, in one SUBSCRIBE sent first on every connect.
fn subscriptions(d: &Dispatch) -> Subscribe {
    // Retain As Published: without it a v5 broker clears the retain flag of live
    // messages, and a retained command would be indistinguishable from a fresh one.
    let mut commands = Filter::new(d.topics.commands_filter(), QoS::AtLeastOnce);
    commands.preserve_retain = true;
    commands.nolocal = true;
    let mut filters = vec![commands];
    if d.ha.enabled {
        filters.push(Filter::new(d.ha.birth_topic(), QoS::AtLeastOnce));
        filters.push(Filter::new(d.topics.ha_buttons_filter(), QoS::AtLeastOnce));
    }
    Subscribe::new_many(filters, None)
}

/// A refused subscription is logged loudly: the worker would not hear those topics.
fn check_suback(ack: &SubAck) {
    let refused: Vec<&SubscribeReasonCode> = ack
        .return_codes
        .iter()
        .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
        .collect();
    if !refused.is_empty() {
        tracing::error!(codes = ?refused, "the broker refused a subscription of the worker");
    }
}

/// After a ConnAck (the subscriptions are already on their way): `online`, `info`,
/// Home Assistant discovery, then every kept message the broker may lack.
async fn announce(
    d: Arc<Dispatch>,
    keeper: Arc<Keeper>,
    outstanding: std::collections::HashSet<(String, i64)>,
) {
    let (out, topics, service, ha) = (&d.out, &d.topics, &d.service, &d.ha);
    let info = service.info().await;
    let labels = info.repositories.clone();
    if let Err(e) = on_connected(out, topics, &info).await {
        tracing::warn!(error = %e, "could not announce the worker");
    }
    if ha.enabled {
        publish_discovery(out, topics, ha, &labels).await;
    }
    let k = keeper.clone();
    let rows = tokio::task::spawn_blocking(move || outbox::to_republish(&k, &outstanding))
        .await
        .unwrap_or_default();
    let count = rows.len();
    for row in rows {
        let tag = Tag::Keep {
            topic: row.topic.clone(),
            version: row.version,
        };
        let payload = Bytes::from(row.payload);
        if let Err(e) = out
            .send(tag, row.topic, QoS::AtLeastOnce, row.retain, payload, None)
            .await
        {
            tracing::warn!(error = %e, "could not republish a kept message");
        }
    }
    tracing::debug!(count, "kept messages republished");
}

async fn on_connected(
    out: &Out,
    topics: &Topics,
    info: &crate::service::Info,
) -> anyhow::Result<()> {
    let info = serde_json::to_string(info)?;
    out.publish(
        topics.status(),
        QoS::AtLeastOnce,
        true,
        Bytes::from_static(b"online"),
        None,
    )
    .await?;
    out.publish(topics.info(), QoS::AtLeastOnce, true, info.into(), None)
        .await?;
    Ok(())
}
