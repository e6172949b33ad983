//! How the engine tells listeners what happens, two ways:
//!
//! - a broadcast that anyone may join (SSE clients): lossy by design, a slow
//!   listener is told it lagged and refills from the job's buffer;
//! - reliable subscriptions (the MQTT publisher, metrics) that never miss an event.
//!   A reliable subscriber that takes log lines also paces the jobs: when it is more
//!   than [`HIGH_WATER`] lines behind, tasks stop reading their child's output until
//!   it catches up to [`LOW_WATER`]; the child then blocks on its pipe, as it would
//!   writing to a slow terminal. Memory stays bounded and no line is dropped.
//!
//! May import: `domain`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, Notify};

pub use super::log::PublishedLine;
use super::record::{JobRecord, JobResult};
use crate::domain::JobId;

/// Lines a log-taking reliable subscriber may have queued before jobs pause.
pub const HIGH_WATER: usize = 8192;
/// Where paused jobs resume.
pub const LOW_WATER: usize = HIGH_WATER / 2;
/// How many events a broadcast listener may fall behind before it lags.
const BROADCAST_CAPACITY: usize = 1 << 14;

/// What listeners are told, in order. Cheap to clone: every payload is shared.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// A state change (or a progress update) of a job.
    State(Arc<JobRecord>),
    /// One output line, with its JSON rendering made once for every listener.
    Log(Arc<PublishedLine>),
    /// The job ended; follows its final `State`.
    Result(Arc<JobResult>),
    /// The job passed its TTL and was removed.
    Forgotten(JobId),
}

/// Backlog accounting of one reliable subscriber that takes log lines.
#[derive(Debug, Default)]
struct Flow {
    queued: AtomicUsize,
    closed: AtomicBool,
    drained: Notify,
}

impl Flow {
    /// Returns once the subscriber is at most [`HIGH_WATER`] lines behind (or gone).
    async fn ready(&self) {
        loop {
            // Created before the check, so a notification in between is not lost.
            let drained = self.drained.notified();
            if self.closed.load(Ordering::Acquire)
                || self.queued.load(Ordering::Acquire) <= HIGH_WATER
            {
                return;
            }
            drained.await;
        }
    }

    fn took_line(&self) {
        if self.queued.fetch_sub(1, Ordering::AcqRel) == LOW_WATER + 1 {
            self.drained.notify_waiters();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.drained.notify_waiters();
    }
}

struct ReliableSender {
    tx: mpsc::UnboundedSender<JobEvent>,
    /// `Some` when the subscriber takes log lines (and so paces the jobs).
    flow: Option<Arc<Flow>>,
}

/// A reliable subscription: every event from the moment it was made, in order.
pub struct ReliableEvents {
    rx: mpsc::UnboundedReceiver<JobEvent>,
    flow: Option<Arc<Flow>>,
}

impl ReliableEvents {
    /// The next event; `None` once the engine is gone.
    pub async fn recv(&mut self) -> Option<JobEvent> {
        let e = self.rx.recv().await;
        self.account(&e);
        e
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<JobEvent> {
        let e = self.rx.try_recv().ok();
        self.account(&e);
        e
    }

    fn account(&self, e: &Option<JobEvent>) {
        if let (Some(JobEvent::Log(_)), Some(flow)) = (e, &self.flow) {
            flow.took_line();
        }
    }
}

impl Drop for ReliableEvents {
    fn drop(&mut self) {
        if let Some(flow) = &self.flow {
            flow.close();
        }
    }
}

/// What a task reading a child's output awaits between reads, so that a slow
/// reliable subscriber slows the child instead of losing lines. Cheap to clone.
#[derive(Clone, Default)]
pub struct Pace(Option<Arc<Emitter>>);

impl Pace {
    /// No pacing (output that goes nowhere reliable, tests).
    pub fn none() -> Self {
        Self(None)
    }

    pub(super) fn of(emitter: &Arc<Emitter>) -> Self {
        Self(Some(emitter.clone()))
    }

    /// Returns when more output may be produced.
    pub async fn ready(&self) {
        if let Some(e) = &self.0 {
            e.ready().await;
        }
    }
}

/// The engine's side: fans every event out to both kinds of listener.
pub(super) struct Emitter {
    broadcast: broadcast::Sender<JobEvent>,
    reliable: Mutex<Vec<ReliableSender>>,
}

impl Emitter {
    pub(super) fn new() -> Self {
        Self {
            broadcast: broadcast::channel(BROADCAST_CAPACITY).0,
            reliable: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.broadcast.subscribe()
    }

    pub(super) fn subscribe_reliable(&self, logs: bool) -> ReliableEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        let flow = logs.then(|| Arc::new(Flow::default()));
        self.senders().push(ReliableSender {
            tx,
            flow: flow.clone(),
        });
        ReliableEvents { rx, flow }
    }

    pub(super) fn emit(&self, event: JobEvent) {
        let is_log = matches!(event, JobEvent::Log(_));
        self.senders().retain(|s| {
            if is_log {
                let Some(flow) = &s.flow else { return true };
                flow.queued.fetch_add(1, Ordering::AcqRel);
            }
            s.tx.send(event.clone()).is_ok()
        });
        let _ = self.broadcast.send(event);
    }

    /// Waits while a log-taking reliable subscriber is too far behind.
    pub(super) async fn ready(&self) {
        let flows: Vec<Arc<Flow>> = self
            .senders()
            .iter()
            .filter_map(|s| s.flow.clone())
            .collect();
        for flow in flows {
            flow.ready().await;
        }
    }

    fn senders(&self) -> std::sync::MutexGuard<'_, Vec<ReliableSender>> {
        self.reliable.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::Stream;

    fn line(seq: u64) -> JobEvent {
        let line = crate::jobs::LogLine {
            seq,
            ts: chrono::Utc::now(),
            stream: Stream::Stdout,
            line: "x".into(),
        };
        JobEvent::Log(PublishedLine::new(JobId::new(), line))
    }

    #[tokio::test]
    async fn a_slow_reliable_subscriber_pauses_output_and_loses_nothing() {
        let e = Arc::new(Emitter::new());
        let mut sub = e.subscribe_reliable(true);
        let mut lossy = e.subscribe();
        let n = BROADCAST_CAPACITY as u64 + 1;
        for seq in 1..=n {
            e.emit(line(seq));
        }
        // Over the high-water mark: `ready` must wait.
        let waiting = {
            let e = e.clone();
            tokio::spawn(async move { e.ready().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // The subscriber drains to the low-water mark: output resumes.
        let mut seqs = Vec::new();
        while e.senders()[0]
            .flow
            .as_ref()
            .unwrap()
            .queued
            .load(Ordering::Acquire)
            > LOW_WATER
        {
            match sub.recv().await {
                Some(JobEvent::Log(l)) => seqs.push(l.line.seq),
                other => panic!("unexpected {other:?}"),
            }
        }
        waiting.await.unwrap();
        while let Some(JobEvent::Log(l)) = sub.try_recv() {
            seqs.push(l.line.seq);
        }
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
        // The broadcast listener lagged instead (its capacity is smaller).
        assert!(matches!(
            lossy.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }

    #[tokio::test]
    async fn a_dropped_subscriber_never_blocks_output() {
        let e = Emitter::new();
        let sub = e.subscribe_reliable(true);
        for seq in 1..=(HIGH_WATER as u64 * 2) {
            e.emit(line(seq));
        }
        drop(sub);
        e.ready().await;
        // And it is forgotten at the next event.
        e.emit(line(0));
        assert!(e.senders().is_empty());
    }

    #[tokio::test]
    async fn subscribers_without_logs_never_pace() {
        let e = Emitter::new();
        let mut sub = e.subscribe_reliable(false);
        for seq in 1..=(HIGH_WATER as u64 * 2) {
            e.emit(line(seq));
        }
        e.ready().await;
        e.emit(JobEvent::Forgotten(JobId::new()));
        assert!(matches!(sub.recv().await, Some(JobEvent::Forgotten(_))));
    }
}
