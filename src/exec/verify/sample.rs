//! Which files the drill restores: the archive's regular files from its listing,
//! and a random sample of them within a count and a byte budget.
//!
//! May import: `domain`.

use serde_json::Value;

use crate::domain::ArchivePath;

/// One regular file of the archive listing.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) path: String,
    pub(super) size: u64,
    /// Microseconds since the epoch, from borg's local-time `mtime`.
    pub(super) mtime_us: Option<i64>,
}

/// The regular files of a `list --json` output. (With `--log-json` each listed
/// file arrives wrapped in a log record whose message is the file's JSON.)
pub(super) fn regular_files(stdout: &[u8]) -> Vec<Entry> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            if v.get("path").is_some() {
                return Some(v);
            }
            let inner = v.get("message")?.as_str()?;
            serde_json::from_str::<Value>(inner)
                .ok()
                .filter(|i| i.get("path").is_some())
        })
        .filter(|v| v.get("type").and_then(Value::as_str) == Some("-"))
        .filter_map(|v| {
            Some(Entry {
                path: v.get("path")?.as_str()?.to_string(),
                size: v.get("size").and_then(Value::as_u64).unwrap_or(0),
                mtime_us: v.get("mtime").and_then(Value::as_str).and_then(parse_mtime),
            })
        })
        .filter(|e| ArchivePath::parse(&e.path).is_ok())
        .collect()
}

pub(super) fn parse_mtime(s: &str) -> Option<i64> {
    use chrono::TimeZone;
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    chrono::Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_micros())
}

/// A small xorshift generator: the sample needs to be unpredictable across runs,
/// not cryptographic.
struct Shuffle(u64);

impl Shuffle {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            ^ (std::process::id() as u64).rotate_left(32);
        Self(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Picks up to `count` files, in random order, whose sizes fit in `budget`.
pub(super) fn pick(mut files: Vec<Entry>, count: usize, budget: u64) -> Vec<Entry> {
    Shuffle::new().shuffle(&mut files);
    let mut used = 0u64;
    let mut out = Vec::new();
    for f in files {
        if out.len() >= count {
            break;
        }
        if used + f.size <= budget {
            used += f.size;
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {

    use super::*;

    fn e(path: &str, size: u64) -> Entry {
        Entry {
            path: path.into(),
            size,
            mtime_us: None,
        }
    }

    #[test]
    fn the_sample_respects_count_and_bytes() {
        let files: Vec<Entry> = (0..100).map(|i| e(&format!("f{i}"), 10)).collect();
        assert_eq!(pick(files.clone(), 5, u64::MAX).len(), 5);
        let capped = pick(files, 50, 35);
        assert_eq!(capped.len(), 3);
        assert!(capped.iter().map(|f| f.size).sum::<u64>() <= 35);
        assert!(pick(vec![e("big", 100)], 5, 99).is_empty());
    }

    #[test]
    fn borg_mtimes_parse_as_local_time() {
        let us = parse_mtime("2026-11-24T10:19:12.475908").unwrap();
        assert_eq!(us.rem_euclid(1_000_000), 475_908);
    }
}
