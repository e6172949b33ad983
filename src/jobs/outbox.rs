//! The durable half of the MQTT outbox: messages that must reach the broker (every
//! retained message the worker owns, and job results) wait here, with a version,
//! until the broker acknowledged that version. Owns the `outbox` table; imports only
//! the store.
//!
//! Retained rows stay after their acknowledgement (marked `acked`): they are what the
//! worker re-establishes after every reconnect, so a broker that restarted without
//! persistence is whole again. A retained row with an empty payload (a cleared
//! topic) and a result row are deleted once acknowledged.

use rusqlite::params;

use super::store::{Store, StoreError};

/// One kept message.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Where the message goes.
    pub topic: String,
    /// The message body; empty for a cleared retained topic.
    pub payload: Vec<u8>,
    /// Published retained (kept after its acknowledgement, re-sent after a reconnect).
    pub retain: bool,
    /// Orders the puts of one topic; an acknowledgement names the version it is for.
    pub version: i64,
    /// The broker acknowledged this version.
    pub acked: bool,
}

impl Store {
    /// Keeps (replacing any older version on the same topic) a message to deliver.
    pub fn outbox_put(
        &self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        version: i64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO outbox (topic, payload, retain, version, acked)
                 VALUES (?1, ?2, ?3, ?4, 0)
                 ON CONFLICT(topic) DO UPDATE SET payload = excluded.payload,
                     retain = excluded.retain, version = excluded.version, acked = 0",
                params![topic, payload, retain, version],
            )?;
            Ok(())
        })
    }

    /// The broker acknowledged `version` of `topic` (an older version changes
    /// nothing); returns whether the row is gone (a result, a cleared topic).
    pub fn outbox_acked(&self, topic: &str, version: i64) -> Result<bool, StoreError> {
        self.with(|c| {
            let deleted = c.execute(
                "DELETE FROM outbox WHERE topic = ?1 AND version = ?2
                     AND (retain = 0 OR length(payload) = 0)",
                params![topic, version],
            )?;
            c.execute(
                "UPDATE outbox SET acked = 1 WHERE topic = ?1 AND version = ?2",
                params![topic, version],
            )?;
            Ok(deleted > 0)
        })
    }

    /// Every kept message, oldest version first.
    pub fn outbox_all(&self) -> Result<Vec<OutboxRow>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT topic, payload, retain, version, acked FROM outbox ORDER BY version",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(OutboxRow {
                    topic: r.get(0)?,
                    payload: r.get(1)?,
                    retain: r.get(2)?,
                    version: r.get(3)?,
                    acked: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_leave_and_retained_stay_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.outbox_put("w/jobs/1/result", b"r", false, 1).unwrap();
        s.outbox_put("w/last/a/backup", b"old", true, 2).unwrap();
        s.outbox_put("w/last/a/backup", b"new", true, 3).unwrap();
        s.outbox_put("w/jobs/2/state", b"", true, 4).unwrap();
        // An acknowledgement of a replaced version changes nothing.
        s.outbox_acked("w/last/a/backup", 2).unwrap();
        assert!(!s.outbox_all().unwrap()[0].acked);
        for (t, v) in [
            ("w/jobs/1/result", 1),
            ("w/last/a/backup", 3),
            ("w/jobs/2/state", 4),
        ] {
            s.outbox_acked(t, v).unwrap();
        }
        let rows = Store::open(dir.path()).unwrap().outbox_all().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].payload, b"new");
        assert!(rows[0].acked && rows[0].retain);
    }
}
