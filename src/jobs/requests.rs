//! Request ids that survive a restart: the `requests` table of the job store keeps,
//! per (principal, command, request id), the body's keyed hash and the answer, for
//! the dedup window (see `service::dedup`). Also the store's random hashing key, so
//! stored hashes say nothing about request bodies (or secrets in them) without it.
//! May import: the store.

use rusqlite::{params, OptionalExtension};

use super::store::{Store, StoreError};

/// A remembered request: its body hash, its answer (JSON; `None` when too large to
/// keep) and when it was answered (Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRequest {
    /// The body's keyed hash: a repeated id with another body is refused.
    pub body: u64,
    /// The answer given, as JSON; `None` when it was too large to keep.
    pub answer: Option<String>,
    /// When it was answered (Unix seconds).
    pub at: i64,
}

impl Store {
    /// The store's hashing key (made once, kept).
    pub fn hash_key(&self) -> Result<[u8; 32], StoreError> {
        self.with(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);",
            )?;
            let found: Option<Vec<u8>> = c
                .query_row("SELECT value FROM meta WHERE name = 'hash_key'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(k) = found.and_then(|k| <[u8; 32]>::try_from(k).ok()) {
                return Ok(k);
            }
            let mut key = [0u8; 32];
            key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            c.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('hash_key', ?1)",
                params![key.to_vec()],
            )?;
            Ok(key)
        })
    }

    /// The remembered request under `key`, if any.
    pub fn request_get(&self, key: &str) -> Result<Option<StoredRequest>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT body, answer, at FROM requests WHERE key = ?1",
                params![key],
                |r| {
                    Ok(StoredRequest {
                        body: u64::from_str_radix(&r.get::<_, String>(0)?, 16).unwrap_or(0),
                        answer: r.get(1)?,
                        at: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
    }

    /// Remembers an answer and forgets those older than `oldest` (Unix seconds).
    pub fn request_put(
        &self,
        key: &str,
        req: &StoredRequest,
        oldest: i64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO requests (key, body, answer, at) VALUES (?1, ?2, ?3, ?4)",
                params![key, format!("{:016x}", req.body), req.answer, req.at],
            )?;
            c.execute("DELETE FROM requests WHERE at < ?1", params![oldest])?;
            Ok(())
        })
    }
}
