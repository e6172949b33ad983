//! Job output: splitting a byte stream into lines (carriage-return progress included)
//! and the bounded per-job buffer whose `seq` never resets.
//!
//! May import: `domain`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::JobId;

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error (borgmatic logs here).
    Stderr,
}

/// One published log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// The line's number in its job, from 1 with no gaps (a client resumes after the
    /// last one it saw).
    pub seq: u64,
    /// When the line was read.
    pub ts: DateTime<Utc>,
    /// Which pipe it came from.
    pub stream: Stream,
    /// The text, scrubbed of secrets, without its line ending.
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

/// A log line as it goes out, shared by the job's buffer and every listener.
#[derive(Debug)]
pub struct PublishedLine {
    /// The job the line belongs to.
    pub job_id: JobId,
    /// The line itself.
    pub line: LogLine,
    /// `line` as JSON, the wire form of both transports, rendered once.
    pub json: Bytes,
}

impl PublishedLine {
    /// Renders the JSON once; every listener shares the result.
    pub fn new(job_id: JobId, line: LogLine) -> Arc<Self> {
        let json = Bytes::from(serde_json::to_vec(&line).unwrap_or_default());
        Arc::new(Self { job_id, line, json })
    }
}

/// The last `cap` lines of a job, and the next seq. Seqs in it are contiguous,
/// so a seq finds its line by arithmetic.
#[derive(Debug)]
pub struct LogBuffer {
    job_id: JobId,
    lines: VecDeque<Arc<PublishedLine>>,
    cap: usize,
    next_seq: u64,
}

impl LogBuffer {
    /// An empty buffer keeping the last `cap` lines (at least one); seqs start at 1.
    pub fn new(job_id: JobId, cap: usize) -> Self {
        Self {
            job_id,
            lines: VecDeque::new(),
            cap: cap.max(1),
            next_seq: 1,
        }
    }

    /// Appends a line, giving it the next seq.
    pub fn push(&mut self, stream: Stream, line: String) -> Arc<PublishedLine> {
        let l = PublishedLine::new(
            self.job_id,
            LogLine {
                seq: self.next_seq,
                ts: Utc::now(),
                stream,
                line,
            },
        );
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
    pub fn after(&self, after: u64, limit: usize) -> impl Iterator<Item = &Arc<PublishedLine>> {
        let first = self
            .lines
            .front()
            .map(|l| l.line.seq)
            .unwrap_or(self.next_seq);
        let skip = (after + 1).saturating_sub(first) as usize;
        self.lines.iter().skip(skip).take(limit)
    }

    /// The newest `n` lines.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines
            .iter()
            .skip(skip)
            .map(|l| l.line.clone())
            .collect()
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
        let mut b = LogBuffer::new(JobId::new(), 3);
        for i in 0..5 {
            b.push(Stream::Stdout, format!("{i}"));
        }
        assert_eq!(b.last_seq(), 5);
        let seqs =
            |after, limit| -> Vec<u64> { b.after(after, limit).map(|l| l.line.seq).collect() };
        assert_eq!(seqs(0, 10), vec![3, 4, 5]);
        assert_eq!(seqs(3, 10), vec![4, 5]);
        assert_eq!(seqs(3, 1), vec![4]);
        assert_eq!(seqs(4, 10), vec![5]);
        assert!(seqs(5, 10).is_empty());
        assert!(seqs(99, 10).is_empty());
        assert_eq!(b.tail(2)[0].seq, 4);
        let json: serde_json::Value =
            serde_json::from_slice(&b.after(4, 1).next().unwrap().json).unwrap();
        assert_eq!(json["seq"], 5);
        assert_eq!(json["line"], "4");
    }
}
