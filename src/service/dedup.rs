//! Request-id deduplication, one key at a time.
//!
//! A key is (principal, command, request id): an id never reaches another
//! principal's answer. The first copy of a request claims its key and runs; a second
//! copy (QoS 1 redelivery, an HTTP retry) waits for that answer and gets it again;
//! nothing else waits, so one slow request never holds up unrelated ones. The same id
//! with a different body is refused. Remembered answers are bounded in bytes (the
//! oldest are forgotten first) and in time ([`super::DEDUP_WINDOW`]).
//!
//! Answers are also kept in the job store for the window, so a copy delivered after
//! a restart (QoS 1 redelivery after a crash) gets the stored answer and starts
//! nothing. Body hashes are keyed SHA-256 with a random key kept in the store.
//!
//! May import: `command`, `jobs` (the store's `requests` table).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use tokio::sync::watch;

use crate::command::{CommandName, RequestId, Response};
use crate::jobs::requests::StoredRequest;
use crate::jobs::{store_error, Store};

/// Largest answer kept in the store (answers that start jobs are far smaller).
const MAX_STORED_ANSWER: usize = 64 * 1024;

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
    hash_key: [u8; 32],
    store: Option<Store>,
    window: Duration,
    max_bytes: usize,
}

impl Dedup {
    /// Remembers answers in memory only (tests).
    #[cfg(test)]
    pub fn new(window: Duration, max_bytes: usize) -> Self {
        let mut hash_key = [0u8; 32];
        hash_key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self {
            inner: Mutex::new(Inner::default()),
            hash_key,
            store: None,
            window,
            max_bytes,
        }
    }

    /// Remembers answers in memory and in `store`, so they survive a restart.
    pub fn with_store(window: Duration, max_bytes: usize, store: Store) -> Self {
        let hash_key = store.hash_key().unwrap_or_else(|e| {
            store_error("reading the request hashing key", &e);
            let mut k = [0u8; 32];
            k[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            k
        });
        Self {
            inner: Mutex::new(Inner::default()),
            hash_key,
            store: Some(store),
            window,
            max_bytes,
        }
    }

    /// A keyed hash of a request body: equal bodies compare equal, and a client
    /// cannot craft a collision nor learn a body from a stored hash.
    pub fn hash(&self, body: &[u8]) -> u64 {
        let digest = Sha256::new()
            .chain_update(self.hash_key)
            .chain_update(body)
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }

    /// What an earlier run answered for this key within the window.
    fn stored(&self, key: &Key, body: u64) -> Option<Claim<'static>> {
        let store = self.store.as_ref()?;
        let found = store.request_get(&key.stored()).unwrap_or_else(|e| {
            store_error("looking up a request id", &e);
            None
        })?;
        let age = chrono::Utc::now().timestamp() - found.at;
        if age < 0 || age as u64 >= self.window.as_secs() {
            return None;
        }
        if found.body != body {
            return Some(Claim::Reused);
        }
        Some(
            match found.answer.and_then(|a| serde_json::from_str(&a).ok()) {
                Some(answer) => Claim::Replay(answer),
                None => Claim::Forgotten,
            },
        )
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
                        if let Some(claim) = self.stored(&key, body) {
                            return claim;
                        }
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
        if let Some(store) = &self.dedup.store {
            let json = String::from_utf8_lossy(&answer.to_json()).into_owned();
            let now = chrono::Utc::now().timestamp();
            let stored = StoredRequest {
                body: self.body,
                answer: (json.len() <= MAX_STORED_ANSWER).then_some(json),
                at: now,
            };
            let oldest = now - self.dedup.window.as_secs() as i64;
            if let Err(e) = store.request_put(&self.key.stored(), &stored, oldest) {
                store_error("remembering a request id", &e);
            }
        }
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Some(answer.clone()));
        }
    }
}

impl Key {
    /// The key's text in the store.
    fn stored(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.principal,
            self.command.as_str(),
            self.id.as_str()
        )
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
mod tests;
