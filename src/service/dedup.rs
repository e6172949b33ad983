//! Request-id deduplication, one key at a time.
//!
//! A key is (principal, command, request id): an id never reaches another
//! principal's answer. The first copy of a request claims its key and runs; a second
//! copy (QoS 1 redelivery, an HTTP retry) waits for that answer and gets it again;
//! nothing else waits, so one slow request never holds up unrelated ones. The same id
//! with a different body is refused. Remembered answers are bounded in bytes (the
//! oldest are forgotten first) and in time ([`super::DEDUP_WINDOW`]).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::command::{CommandName, RequestId, Response};

/// Keys remembered at most, whatever their size (bounds the map's own overhead).
const MAX_KEYS: usize = 10_000;
/// What one remembered entry costs besides its answer (map slot, key, order entry).
const ENTRY_OVERHEAD: usize = 256;

/// Who sent a request with which id for which command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub principal: String,
    pub command: CommandName,
    pub id: RequestId,
}

enum Slot {
    /// The first copy runs; later copies wait on this.
    Pending {
        body: u64,
        done: watch::Receiver<Option<Response>>,
    },
    Done {
        body: u64,
        at: Instant,
        /// `None`: the answer was too large to keep.
        answer: Option<Response>,
        bytes: usize,
    },
}

impl Slot {
    fn body(&self) -> u64 {
        match self {
            Slot::Pending { body, .. } | Slot::Done { body, .. } => *body,
        }
    }
}

#[derive(Default)]
struct Inner {
    slots: HashMap<Key, Slot>,
    /// Finished keys, oldest first.
    order: VecDeque<(Instant, Key)>,
    bytes: usize,
}

/// What a request learns from the cache.
pub(super) enum Claim<'a> {
    /// A copy of a request already answered: this is the answer.
    Replay(Response),
    /// The id was used with another body.
    Reused,
    /// The id was answered, but the answer was too large to keep.
    Forgotten,
    /// The first copy: run it and [`Ticket::finish`] with the answer.
    Run(Ticket<'a>),
}

pub(super) struct Dedup {
    inner: Mutex<Inner>,
    hasher: RandomState,
    window: Duration,
    max_bytes: usize,
}

impl Dedup {
    pub fn new(window: Duration, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            hasher: RandomState::new(),
            window,
            max_bytes,
        }
    }

    /// A keyed hash of a request body: equal bodies compare equal, and a client
    /// cannot craft a collision (the key is random per process).
    pub fn hash(&self, body: &[u8]) -> u64 {
        self.hasher.hash_one(body)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks the key up; waits only for an earlier copy of the same request.
    pub async fn claim(&self, key: Key, body: u64) -> Claim<'_> {
        loop {
            let mut done = {
                let mut g = self.lock();
                self.prune(&mut g, Instant::now());
                match g.slots.get(&key) {
                    None => {
                        let (tx, rx) = watch::channel(None);
                        g.slots
                            .insert(key.clone(), Slot::Pending { body, done: rx });
                        return Claim::Run(Ticket {
                            dedup: self,
                            key,
                            body,
                            tx: Some(tx),
                        });
                    }
                    Some(slot) if slot.body() != body => return Claim::Reused,
                    Some(Slot::Done {
                        answer: Some(a), ..
                    }) => return Claim::Replay(a.clone()),
                    Some(Slot::Done { answer: None, .. }) => return Claim::Forgotten,
                    Some(Slot::Pending { done, .. }) => done.clone(),
                }
            };
            let answer = done
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|a| a.clone());
            if let Some(a) = answer {
                return Claim::Replay(a);
            }
            // The first copy gave up without an answer (rate-limited, or its HTTP
            // client went away): claim again.
        }
    }

    fn prune(&self, g: &mut Inner, now: Instant) {
        while let Some((at, _)) = g.order.front() {
            let expired = now.duration_since(*at) >= self.window;
            if !expired && g.bytes <= self.max_bytes && g.order.len() <= MAX_KEYS {
                break;
            }
            let Some((at, key)) = g.order.pop_front() else {
                break;
            };
            if let Some(Slot::Done { at: at2, bytes, .. }) = g.slots.get(&key) {
                if *at2 == at {
                    g.bytes -= *bytes;
                    g.slots.remove(&key);
                }
            }
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// The right (and duty) to answer one key first.
pub(super) struct Ticket<'a> {
    dedup: &'a Dedup,
    key: Key,
    body: u64,
    tx: Option<watch::Sender<Option<Response>>>,
}

impl Ticket<'_> {
    /// Remembers `answer` for the key and hands it to copies waiting for it.
    pub fn finish(mut self, answer: &Response) {
        let json_len = answer.to_json().len();
        let keep = json_len + ENTRY_OVERHEAD <= self.dedup.max_bytes / 8;
        let bytes = ENTRY_OVERHEAD + if keep { json_len } else { 0 };
        let now = Instant::now();
        {
            let mut g = self.dedup.lock();
            g.slots.insert(
                self.key.clone(),
                Slot::Done {
                    body: self.body,
                    at: now,
                    answer: keep.then(|| answer.clone()),
                    bytes,
                },
            );
            g.bytes += bytes;
            g.order.push_back((now, self.key.clone()));
            self.dedup.prune(&mut g, now);
        }
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Some(answer.clone()));
        }
    }
}

impl Drop for Ticket<'_> {
    /// Not finished: forget the claim, so a waiting copy runs instead.
    fn drop(&mut self) {
        if self.tx.is_some() {
            let mut g = self.dedup.lock();
            if matches!(g.slots.get(&self.key), Some(Slot::Pending { .. })) {
                g.slots.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key(p: &str, id: &str) -> Key {
        Key {
            principal: p.into(),
            command: CommandName::JobList,
            id: RequestId::parse(id).unwrap(),
        }
    }

    fn answer(n: usize) -> Response {
        Response::ok(None, None, serde_json::json!({ "pad": "x".repeat(n) }))
    }

    #[tokio::test]
    async fn a_copy_waits_for_the_first_and_nothing_else_waits() {
        let d = Arc::new(Dedup::new(Duration::from_secs(600), 1 << 20));
        let Claim::Run(first) = d.claim(key("p", "a"), 1).await else {
            panic!("first copy must run")
        };
        // Another key is not held up by the pending one.
        assert!(matches!(d.claim(key("p", "b"), 1).await, Claim::Run(_)));
        // Another principal with the same id runs on its own.
        assert!(matches!(d.claim(key("q", "a"), 1).await, Claim::Run(_)));
        // The same id with another body is refused at once.
        assert!(matches!(d.claim(key("p", "a"), 2).await, Claim::Reused));
        let d2 = d.clone();
        let copy = tokio::spawn(async move {
            match d2.claim(key("p", "a"), 1).await {
                Claim::Replay(r) => r.to_json(),
                _ => panic!("the copy must get the first answer"),
            }
        });
        tokio::task::yield_now().await;
        assert!(!copy.is_finished());
        first.finish(&answer(3));
        assert_eq!(copy.await.unwrap(), answer(3).to_json());
    }

    #[tokio::test]
    async fn an_abandoned_claim_lets_the_copy_run() {
        let d = Dedup::new(Duration::from_secs(600), 1 << 20);
        let Claim::Run(first) = d.claim(key("p", "a"), 1).await else {
            panic!()
        };
        drop(first);
        assert!(matches!(d.claim(key("p", "a"), 1).await, Claim::Run(_)));
    }

    #[tokio::test]
    async fn memory_is_bounded_oldest_first() {
        let max = 64 * 1024;
        let d = Dedup::new(Duration::from_secs(600), max);
        for i in 0..2_000 {
            let Claim::Run(t) = d.claim(key("p", &format!("r{i}")), 1).await else {
                panic!()
            };
            t.finish(&answer(1_000));
            assert!(d.bytes() <= max, "{} bytes after {i}", d.bytes());
        }
        assert!(matches!(d.claim(key("p", "r0"), 1).await, Claim::Run(_)));
        assert!(matches!(
            d.claim(key("p", "r1999"), 1).await,
            Claim::Replay(_)
        ));
        // An answer too large to keep is remembered as answered, without the answer.
        let Claim::Run(t) = d.claim(key("p", "big"), 1).await else {
            panic!()
        };
        t.finish(&answer(max));
        assert!(matches!(
            d.claim(key("p", "big"), 1).await,
            Claim::Forgotten
        ));
    }
}
