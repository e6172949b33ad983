//! What must not be lost, and knowing when the broker has it.
//!
//! Owns: the [`Tracker`] (every publish handed to rumqttc, in order, so that the event
//! loop's `Outgoing::Publish(pkid)` and `PubAck(pkid)` can be matched to it), the
//! [`Keeper`] (kept messages: every retained message the worker owns and each job
//! result, written to the job store's outbox before they are sent, deleted or marked
//! acknowledged on PubAck) and the [`Correlator`] the connection task drives.
//! May import: `jobs` (the store), `outgoing`, rumqttc.
//!
//! Matching works because rumqttc emits `Outgoing::Publish` for requests in the
//! order they left its channel, and MQTT requires PubAcks in the order of the
//! publishes. Sends and tag pushes happen under one lock, so the tag queue is the
//! channel's order. Across reconnects the connection task keeps rumqttc's pending
//! requests itself (rumqttc drops them when the new session is not present) and
//! hands them back after the ConnAck: a retransmission keeps its packet id, which
//! the correlator still maps.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

use crate::jobs::Store;

/// Log lines allowed on their way at once: in the client's queue, and at QoS 1 also
/// sent but not yet acknowledged by the broker. A response or a job state sent now
/// waits behind at most this many lines, however much a job prints: the broker
/// handles one connection's packets in order, so every unacknowledged line ahead of
/// a response in the socket would delay it (rumqttc alone allows 1,000 in flight).
pub(super) const LOG_BUDGET: usize = 16;

/// What a publish is, for matching its acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tag {
    Plain,
    /// A job's log line (counted against [`LOG_BUDGET`]).
    Log,
    /// A kept message: this version of this topic.
    Keep {
        topic: String,
        version: i64,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publishes handed to the client and not yet seen leaving, in channel order.
#[derive(Default)]
pub(super) struct Tracker {
    /// Also the send lock: a send and its tag push happen under it.
    fifo: Mutex<VecDeque<Tag>>,
    /// The newest version per kept topic: an older one is never sent again.
    latest: Mutex<HashMap<String, i64>>,
    /// Log lines queued or unacknowledged (see [`LOG_BUDGET`]).
    logs: AtomicUsize,
    /// Fires whenever the event loop took a publish (room in the queue).
    pub space: Notify,
    /// The connection task ended: nothing will drain the queue any more.
    pub closed: AtomicBool,
}

impl Tracker {
    /// Runs `send` (a non-blocking hand-over to the client) and records the tag if
    /// it succeeded. A kept message whose version was replaced is skipped (`Ok(false)`).
    pub fn send<E>(&self, tag: Tag, send: impl FnOnce() -> Result<(), E>) -> Result<bool, E> {
        let mut fifo = lock(&self.fifo);
        if let Tag::Keep { topic, version } = &tag {
            if lock(&self.latest).get(topic).is_some_and(|v| v != version) {
                return Ok(false);
            }
        }
        send()?;
        if tag == Tag::Log {
            self.logs.fetch_add(1, Ordering::AcqRel);
        }
        fifo.push_back(tag);
        Ok(true)
    }

    /// Whether another log line may be queued now.
    pub fn log_room(&self) -> bool {
        self.logs.load(Ordering::Acquire) < LOG_BUDGET
    }

    /// The event loop took the oldest publish from the queue. A log line still
    /// counts until [`Tracker::log_done`].
    fn pop(&self) -> Option<Tag> {
        let tag = lock(&self.fifo).pop_front();
        self.space.notify_waiters();
        tag
    }

    /// A log line is done: sent at QoS 0, or acknowledged at QoS 1.
    fn log_done(&self) {
        let _ = self
            .logs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.space.notify_waiters();
    }

    fn queued_keeps(&self) -> Vec<(String, i64)> {
        lock(&self.fifo)
            .iter()
            .filter_map(|t| match t {
                Tag::Keep { topic, version } => Some((topic.clone(), *version)),
                _ => None,
            })
            .collect()
    }

    fn is_latest(&self, topic: &str, version: i64) -> bool {
        lock(&self.latest).get(topic) == Some(&version)
    }

    /// A delivered result or cleared topic needs no version any more (keeps the map
    /// as small as the outbox).
    fn forget(&self, topic: &str, version: i64) {
        let mut latest = lock(&self.latest);
        if latest.get(topic) == Some(&version) {
            latest.remove(topic);
        }
    }
}

/// Writes kept messages to the store before they are sent.
pub(super) struct Keeper {
    store: Store,
    tracker: Arc<Tracker>,
    next: AtomicI64,
}

impl Keeper {
    /// Loads what an earlier run kept (its versions are the newest per topic).
    pub fn new(store: Store, tracker: Arc<Tracker>) -> Keeper {
        let rows = store.outbox_all().unwrap_or_else(|e| {
            crate::jobs::store_error("reading the outbox", &e);
            Vec::new()
        });
        let max = rows.iter().map(|r| r.version).max().unwrap_or(0);
        {
            let mut latest = lock(&tracker.latest);
            for r in &rows {
                latest.insert(r.topic.clone(), r.version);
            }
        }
        Keeper {
            store,
            tracker,
            next: AtomicI64::new(max + 1),
        }
    }

    /// Records a new version of `topic` (in memory at once, in the store when it
    /// can be written) and returns the tag to send it with.
    pub fn keep(&self, topic: &str, payload: &[u8], retain: bool) -> Tag {
        let version = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.tracker.latest).insert(topic.to_string(), version);
        if let Err(e) = self.store.outbox_put(topic, payload, retain, version) {
            crate::jobs::store_error("keeping a message until the broker has it", &e);
        }
        Tag::Keep {
            topic: topic.to_string(),
            version,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }
}

/// Writes acknowledgements to the store off the connection loop.
pub(super) fn spawn_acker(keeper: Arc<Keeper>) -> mpsc::UnboundedSender<(String, i64)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, i64)>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let keeper = keeper.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for (topic, version) in batch {
                    match keeper.store.outbox_acked(&topic, version) {
                        Ok(true) => keeper.tracker.forget(&topic, version),
                        Ok(false) => {}
                        Err(e) => crate::jobs::store_error("recording an acknowledgement", &e),
                    }
                }
            })
            .await;
        }
    });
    tx
}

/// The connection task's side: packet ids to tags, and the requests rumqttc would
/// drop on a reconnect without a session.
#[derive(Default)]
pub(super) struct Correlator {
    inflight: HashMap<u16, Tag>,
    /// A publish waiting for its packet id to be free (rumqttc's "collision").
    collided: Option<(u16, Tag)>,
    saved: VecDeque<rumqttc::v5::Request>,
}

impl Correlator {
    /// `Outgoing::Publish(pkid)`: a new publish left (or an old one was resent).
    pub fn published(&mut self, tracker: &Tracker, pkid: u16) {
        if pkid != 0 && self.inflight.contains_key(&pkid) {
            return; // a retransmission after a reconnect
        }
        let tag = tracker.pop().unwrap_or(Tag::Plain);
        if pkid != 0 {
            self.inflight.insert(pkid, tag);
        } else if tag == Tag::Log {
            tracker.log_done();
        }
    }

    /// `Outgoing::AwaitAck(pkid)`: rumqttc holds the publish until `pkid` is acked.
    pub fn collided(&mut self, tracker: &Tracker, pkid: u16) {
        let tag = tracker.pop().unwrap_or(Tag::Plain);
        self.collided = Some((pkid, tag));
    }

    /// `PubAck(pkid)`: returns the kept message now safe at the broker.
    pub fn acked(&mut self, tracker: &Tracker, pkid: u16) -> Option<(String, i64)> {
        let tag = self.inflight.remove(&pkid);
        if self.collided.as_ref().is_some_and(|(p, _)| *p == pkid) {
            if let Some((p, t)) = self.collided.take() {
                self.inflight.insert(p, t);
            }
        }
        match tag {
            Some(Tag::Keep { topic, version }) => Some((topic, version)),
            Some(Tag::Log) => {
                tracker.log_done();
                None
            }
            _ => None,
        }
    }

    /// The connection failed: take what rumqttc would replay (or drop). Subscriptions
    /// are left out: every ConnAck sends them afresh, first.
    pub fn save_pending(&mut self, pending: &mut VecDeque<rumqttc::v5::Request>) {
        self.saved.extend(
            pending
                .drain(..)
                .filter(|r| !matches!(r, rumqttc::v5::Request::Subscribe(_))),
        );
    }

    /// Connected again: hand everything back, oldest first, whatever the session.
    pub fn restore_pending(&mut self, pending: &mut VecDeque<rumqttc::v5::Request>) {
        let mut all = std::mem::take(&mut self.saved);
        all.extend(pending.drain(..));
        *pending = all;
    }

    /// Kept messages on their way (in flight, in rumqttc's queue or in ours): a
    /// republish after a reconnect skips them.
    pub fn outstanding(&self, tracker: &Tracker) -> HashSet<(String, i64)> {
        let mut out: HashSet<(String, i64)> = tracker.queued_keeps().into_iter().collect();
        for tag in self
            .inflight
            .values()
            .chain(self.collided.as_ref().map(|(_, t)| t))
        {
            if let Tag::Keep { topic, version } = tag {
                out.insert((topic.clone(), *version));
            }
        }
        out
    }
}

/// Everything kept that the broker may lack after a (re)connect: every retained
/// message (a broker without persistence lost them) and unacknowledged results,
/// except what is already on its way and what a newer version replaced.
pub(super) fn to_republish(
    keeper: &Keeper,
    outstanding: &HashSet<(String, i64)>,
) -> Vec<crate::jobs::OutboxRow> {
    let rows = keeper.store().outbox_all().unwrap_or_else(|e| {
        crate::jobs::store_error("reading the outbox", &e);
        Vec::new()
    });
    rows.into_iter()
        .filter(|r| !outstanding.contains(&(r.topic.clone(), r.version)))
        .filter(|r| keeper.tracker().is_latest(&r.topic, r.version))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(topic: &str, version: i64) -> Tag {
        Tag::Keep {
            topic: topic.into(),
            version,
        }
    }

    #[test]
    fn acks_match_publishes_in_order_and_retransmissions_keep_their_id() {
        let t = Tracker::default();
        lock(&t.latest).insert("a".into(), 1);
        lock(&t.latest).insert("b".into(), 2);
        for tag in [keep("a", 1), Tag::Log, Tag::Plain, keep("b", 2)] {
            assert!(t.send::<()>(tag, || Ok(())).unwrap());
        }
        assert_eq!(t.logs.load(Ordering::Acquire), 1);
        let mut c = Correlator::default();
        c.published(&t, 1);
        assert_eq!(t.logs.load(Ordering::Acquire), 1);
        c.published(&t, 0); // the log line at QoS 0: done once sent
        assert_eq!(t.logs.load(Ordering::Acquire), 0);
        c.published(&t, 2);
        c.collided(&t, 1); // "b" waits for packet id 1
        assert_eq!(
            c.outstanding(&t),
            [("a".to_string(), 1), ("b".to_string(), 2)].into()
        );
        // A reconnect resends packet id 1: nothing is popped.
        c.published(&t, 1);
        assert_eq!(c.acked(&t, 1), Some(("a".into(), 1)));
        assert_eq!(c.acked(&t, 2), None);
        assert_eq!(c.acked(&t, 1), Some(("b".into(), 2)));
        assert!(c.outstanding(&t).is_empty());
    }

    #[test]
    fn a_replaced_version_is_not_sent() {
        let t = Tracker::default();
        lock(&t.latest).insert("a".into(), 2);
        assert!(!t.send::<()>(keep("a", 1), || panic!("sent")).unwrap());
        assert!(t.send::<()>(keep("a", 2), || Ok(())).unwrap());
        assert!(t.send::<()>(keep("a", 2), || Err(())).is_err());
        assert_eq!(lock(&t.fifo).len(), 1);
    }
}
