//! The publisher task: turns job events into `jobs/<id>/…`, `events`, `last/*` and
//! `repos/*` messages, in order. Retained messages and results are kept (see
//! [`super::outbox`]) before they are handed to the client.
//!
//! Nothing is skipped while the broker is connected: a slow broker slows the jobs'
//! output (see `jobs::events`). Log lines wait for room in [`outbox::LOG_BUDGET`]
//! (queued in the client, or at QoS 1 unacknowledged by the broker), so a response
//! or a state is never queued behind more than that many lines in the worker (nor,
//! at QoS 1, at the broker).
//! While the broker is away, log lines are dropped (they stay readable over HTTP and
//! `job/log`) so an outage never stalls a backup; kept messages are republished on
//! the reconnect. May import: `outbox`, `outgoing`, `summary`, `topics`, `jobs`,
//! `command`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use tokio_util::sync::CancellationToken;

use super::connection::MqttStatus;
use super::outbox::{Keeper, Tag};
use super::outgoing::{Out, Unsendable};
use super::{summary, Topics};
use crate::command::JobId;
use crate::jobs::{JobEvent, JobState, ReliableEvents};

/// What the publisher task needs.
pub(super) struct Publisher {
    pub out: Out,
    pub keeper: Arc<Keeper>,
    pub topics: Topics,
    pub log_qos: QoS,
    pub status: Arc<MqttStatus>,
    /// The last state published per job, to tell changes from progress updates.
    pub last_state: HashMap<JobId, JobState>,
    /// Log lines not published since the broker went away (reported once back).
    pub dropped_lines: u64,
}

/// Publishes job events in order until stopped (then what is already queued).
pub(super) async fn publish_task(
    mut p: Publisher,
    repositories: Vec<String>,
    mut events: ReliableEvents,
    stop: CancellationToken,
) {
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
            p.send(Message::new(topic, true, payload)).await;
        }
    }
    loop {
        let event = tokio::select! {
            biased;
            e = events.recv() => e,
            _ = stop.cancelled() => {
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
            let sent = tokio::select! {
                biased;
                r = self.send_line(topic, l.json.clone()) => r.is_ok(),
                _ = self.status.disconnected() => false,
            };
            if !sent {
                self.dropped_lines += 1;
            }
            return;
        }
        for m in messages(&self.topics, &mut self.last_state, event) {
            self.send(m).await;
        }
    }

    /// One log line, once fewer than [`outbox::LOG_BUDGET`] are on their way (in the
    /// client's queue, or sent and not yet acknowledged).
    async fn send_line(&self, topic: String, json: Bytes) -> Result<(), Unsendable> {
        let tracker = &self.out.tracker;
        loop {
            let room = tracker.space.notified();
            if tracker.log_room() {
                break;
            }
            tokio::select! {
                _ = room => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
        self.out
            .send(Tag::Log, topic, self.log_qos, false, json, None)
            .await
    }

    /// Keeps (when it must not be lost) and sends one message; while the broker is
    /// away, queues it without waiting (a kept one is republished on the reconnect).
    async fn send(&self, m: Message) {
        let payload = match (m.smaller, &m.payload) {
            (Some(smaller), p)
                if matches!(
                    self.out.check(&m.topic, QoS::AtLeastOnce, p, None),
                    Err(Unsendable::TooLarge { .. })
                ) =>
            {
                smaller
            }
            _ => m.payload,
        };
        let tag = if m.keep {
            self.keeper.keep(&m.topic, &payload, m.retain)
        } else {
            Tag::Plain
        };
        let r = if self.status.connected() {
            self.out
                .send(tag, m.topic, QoS::AtLeastOnce, m.retain, payload, None)
                .await
        } else {
            self.out
                .try_send(tag, m.topic, QoS::AtLeastOnce, m.retain, payload, None)
        };
        match r {
            Ok(()) => {}
            Err(e) if m.keep => {
                tracing::warn!(error = %e, "a kept message waits for the reconnect")
            }
            Err(e) => tracing::error!(error = %e, "could not publish a job event"),
        }
    }
}

/// One message to publish.
struct Message {
    topic: String,
    retain: bool,
    payload: Bytes,
    /// Kept until the broker acknowledges it (see [`super::outbox`]).
    keep: bool,
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
            keep: retain,
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
            m.keep = true;
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
