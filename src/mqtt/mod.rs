//! The MQTT adapter (rumqttc, protocol v5; v3.1.1 clients interoperate through the
//! broker): [`connection`] drives the event loop and re-establishes what the worker
//! owns on every (re)connect, [`dispatch`] answers commands, [`publisher`] turns job
//! events into messages, [`outbox`] keeps what must not be lost until the broker
//! acknowledged it. Every publish is checked first ([`outgoing`]): nothing a client
//! sends can make the worker send a packet the broker would reject.
//!
//! The adapter runs on threads of its own (a Tokio runtime of two workers,
//! [`Lane`]): answers and job states never wait for a worker thread behind the
//! tasks of the main runtime (hundreds of Server-Sent Event streams, job output),
//! only for the operating system's fair share of a CPU; a handler that blocks its
//! thread briefly (a store write) leaves the other one to the connection. Jobs
//! still run on the main runtime (the engine spawns them there).
//!
//! This module owns the adapter's lifetime (start, stop accepting, shutdown).
//! May import: its submodules, `service`, `command`, `jobs`, `config`, `auth` and
//! `metrics`.

mod connection;
pub mod discovery;
mod dispatch;
mod ha;
mod options;
mod outbox;
mod outgoing;
mod publisher;
pub mod summary;
pub mod topics;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::AsyncClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::command::RequestLimits;
use crate::config::Settings;
use crate::service::Service;
pub use connection::MqttStatus;
use dispatch::Dispatch;
use ha::HaConfig;
use outbox::{Keeper, Tag, Tracker};
use outgoing::{Out, PacketLimit};
pub use topics::Topics;

/// Command publishes waiting for a free in-flight place; beyond this they are
/// answered `busy` at once. Each is at most [`options::incoming_max`] bytes.
const REQUEST_QUEUE: usize = 64;
/// Longest v5 Correlation Data copied to a response; longer is refused (`invalid`).
pub const MAX_CORRELATION_BYTES: usize = 256;

/// The adapter's own runtime (two workers, named `mqtt`), held by one more thread;
/// the runtime (and whatever still runs on it) ends when `done` fires or the lane
/// is dropped.
struct Lane {
    handle: tokio::runtime::Handle,
    done: CancellationToken,
}

impl Lane {
    fn start() -> anyhow::Result<Lane> {
        // Its threads log where the starting thread does (the global subscriber, or
        // an in-process test's own).
        let logs = tracing::dispatcher::get_default(|d| d.clone());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mqtt")
            .enable_all()
            .on_thread_start(move || {
                // Kept for the thread's lifetime.
                std::mem::forget(tracing::dispatcher::set_default(&logs));
            })
            .build()?;
        let handle = rt.handle().clone();
        let done = CancellationToken::new();
        let until = done.clone();
        std::thread::Builder::new()
            .name("mqtt-lane".into())
            .spawn(move || {
                rt.block_on(until.cancelled());
                // Dropping the runtime here (not in an async context) ends its tasks.
                drop(rt);
            })?;
        Ok(Lane { handle, done })
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

/// The QoS of job log lines (`jobs.log_qos`: 0, else 1).
fn log_qos(settings: &Settings) -> QoS {
    if settings.jobs.log_qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// A running MQTT adapter.
pub struct Mqtt {
    /// The tasks below run on it; it ends when the adapter is dropped.
    lane: Lane,
    out: Out,
    keeper: Arc<Keeper>,
    topics: Topics,
    connection: JoinHandle<()>,
    dispatcher: Option<JoinHandle<()>>,
    publisher: JoinHandle<()>,
    stop_dispatch: CancellationToken,
    stop_publisher: CancellationToken,
    stop_connection: CancellationToken,
    /// The link's state, shared with the HTTP sidecar's `/readyz`.
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
        let tracker = Arc::new(Tracker::default());
        let out = Out {
            client,
            limit: Arc::new(PacketLimit::new(settings.mqtt.max_packet_bytes)),
            tracker: tracker.clone(),
        };
        let keeper = Arc::new(Keeper::new(service.engine().store().clone(), tracker));
        let (stop_dispatch, stop_publisher, stop_connection) = Default::default();
        let lane = Lane::start()?;

        // Subscribe to job events before anything can happen, then correct retained
        // states a previous run left behind (a job it ran is now `interrupted`).
        let events = service.engine().subscribe_reliable(true);
        service.engine().announce_all();

        let dispatch = Arc::new(Dispatch {
            out: out.clone(),
            topics: topics.clone(),
            service: service.clone(),
            ha: Arc::new(HaConfig::new(settings)),
            limits: RequestLimits {
                max_bytes: settings.limits.max_request_bytes,
                max_depth: settings.limits.max_request_depth,
            },
        });
        let link = connection::Link {
            dispatch: dispatch.clone(),
            keeper: keeper.clone(),
            status: status.clone(),
            requests: req_tx,
            max_backoff: Duration::from_secs(settings.mqtt.reconnect_max_secs.max(1)),
        };
        let connection = lane.handle.spawn(connection::connection_task(
            eventloop,
            link,
            CancellationToken::clone(&stop_connection),
        ));
        let dispatcher = lane.handle.spawn(dispatch::dispatch_task(
            req_rx,
            dispatch,
            settings.limits.max_in_flight.max(1),
            CancellationToken::clone(&stop_dispatch),
        ));
        let publisher = lane.handle.spawn(publisher::publish_task(
            publisher::Publisher {
                out: out.clone(),
                keeper: keeper.clone(),
                topics: topics.clone(),
                log_qos: log_qos(settings),
                status: status.clone(),
                last_state: HashMap::new(),
                dropped_lines: 0,
            },
            service.borgmatic().labels(),
            events,
            CancellationToken::clone(&stop_publisher),
        ));
        Ok(Mqtt {
            lane,
            out,
            keeper,
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
    /// prober): kept until the broker has it, queued while the broker is away.
    pub fn retained_sink(&self) -> impl Fn(String, String) + Send + Sync + 'static {
        let (out, keeper) = (self.out.clone(), self.keeper.clone());
        move |topic, payload| {
            let tag = keeper.keep(&topic, payload.as_bytes(), true);
            let payload = Bytes::from(payload);
            if let Err(e) = out.try_send(tag, topic, QoS::AtLeastOnce, true, payload, None) {
                tracing::warn!(error = %e, "a retained message waits for the reconnect");
            }
        }
    }

    /// The topics of this worker.
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
        let offline = Bytes::from_static(b"offline");
        let status = self.topics.status();
        let sent = self
            .out
            .try_send(Tag::Plain, status, QoS::AtLeastOnce, true, offline, None);
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not queue `offline`");
        }
        let _ = self.out.client.disconnect().await;
        if tokio::time::timeout(Duration::from_secs(5), &mut self.connection)
            .await
            .is_err()
        {
            self.stop_connection.cancel();
            let _ = self.connection.await;
        }
        self.lane.done.cancel();
    }
}
