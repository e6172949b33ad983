//! Job output: splitting a byte stream into lines (carriage-return progress included)
//! and the bounded per-job buffer whose `seq` never resets.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One published log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub stream: Stream,
    pub line: String,
}

/// Longest line kept whole; longer output is cut into pieces of this size so one
/// runaway line cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Splits bytes into lines at `\n`, `\r\n` and lone `\r` (progress redraws), dropping
/// lines that are only whitespace (the blanks progress output uses to clear a line).
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk; calls `emit` for every completed line.
    pub fn feed(&mut self, chunk: &[u8], mut emit: impl FnMut(String)) {
        for &b in chunk {
            if b == b'\n' || b == b'\r' {
                self.flush(&mut emit);
            } else {
                self.pending.push(b);
                if self.pending.len() >= MAX_LINE_BYTES {
                    self.flush(&mut emit);
                }
            }
        }
    }

    /// Ends the stream: emits what is left.
    pub fn finish(&mut self, mut emit: impl FnMut(String)) {
        self.flush(&mut emit);
    }

    fn flush(&mut self, emit: &mut impl FnMut(String)) {
        if self.pending.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.pending);
        let trimmed = line.trim_end();
        if !trimmed.trim_start().is_empty() {
            emit(trimmed.to_string());
        }
        self.pending.clear();
    }
}

/// The last `cap` lines of a job, and the next seq.
#[derive(Debug)]
pub struct LogBuffer {
    lines: VecDeque<LogLine>,
    cap: usize,
    next_seq: u64,
}

impl LogBuffer {
    pub fn new(cap: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            cap: cap.max(1),
            next_seq: 1,
        }
    }

    /// A buffer restored from the store, continuing after its last seq.
    pub fn restored(cap: usize, lines: Vec<LogLine>, last_seq: u64) -> Self {
        let mut b = Self::new(cap);
        for l in lines {
            b.lines.push_back(l);
            if b.lines.len() > b.cap {
                b.lines.pop_front();
            }
        }
        b.next_seq = last_seq + 1;
        b
    }

    /// Appends a line, giving it the next seq.
    pub fn push(&mut self, stream: Stream, line: String) -> LogLine {
        let l = LogLine {
            seq: self.next_seq,
            ts: Utc::now(),
            stream,
            line,
        };
        self.next_seq += 1;
        self.lines.push_back(l.clone());
        if self.lines.len() > self.cap {
            self.lines.pop_front();
        }
        l
    }

    /// The last seq given out (0 when there was none).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Lines with seq > `after`, at most `limit`.
    pub fn after(&self, after: u64, limit: usize) -> Vec<LogLine> {
        self.lines
            .iter()
            .filter(|l| l.seq > after)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The newest `n` lines.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |l| out.push(l));
        }
        s.finish(|l| out.push(l));
        out
    }

    #[test]
    fn splits_newlines_and_carriage_returns() {
        assert_eq!(
            split(&[b"a\nb\r\nc\rd", b"e\r   \rf\n"]),
            vec!["a", "b", "c", "de", "f"]
        );
        assert_eq!(split(&[b"no newline"]), vec!["no newline"]);
        assert!(split(&[b"\n\n\r\r  \n"]).is_empty());
    }

    #[test]
    fn long_lines_are_cut() {
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 5];
        let out = split(&[&long]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].len(), MAX_LINE_BYTES);
    }

    #[test]
    fn seq_is_contiguous_and_survives_the_cap() {
        let mut b = LogBuffer::new(3);
        for i in 0..5 {
            b.push(Stream::Stdout, format!("{i}"));
        }
        assert_eq!(b.last_seq(), 5);
        let seqs: Vec<u64> = b.after(0, 10).iter().map(|l| l.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(b.after(4, 10).len(), 1);
        assert_eq!(b.tail(2)[0].seq, 4);
        let r = LogBuffer::restored(3, b.tail(3), 5);
        let mut r = r;
        assert_eq!(r.push(Stream::Stderr, "x".into()).seq, 6);
    }
}
