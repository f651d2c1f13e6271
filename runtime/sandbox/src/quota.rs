//! What one attempt may use of the host besides memory, fuel and time: HTTP
//! requests (at once and in all), resource handles, log lines, and the size
//! of the error message it leaves behind.
//!
//! Each cap, once hit, is named: a refused request says which cap refused
//! it, dropped log lines are announced once, a cut message says how much
//! was cut. None of this knows about bindings or the scheduler.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// HTTP requests one attempt may have waiting for an answer at once.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 32;

/// HTTP requests one attempt may send in all.
pub const MAX_REQUESTS: usize = 1_000;

/// Handles (open files, directories, streams, requests) one attempt's
/// resource table may hold at once.
pub const MAX_RESOURCES: usize = 4_096;

/// Log lines per second an attempt may write, on average...
const LOG_LINES_PER_SECOND: f64 = 100.0;
/// ... in bursts of at most this many.
const LOG_BURST: f64 = 200.0;
/// Log bytes one attempt may write in all.
pub const MAX_LOG_BYTES: usize = 1 << 20;
/// The longest log message kept; longer ones are cut.
pub const MAX_LOG_LINE: usize = 8 << 10;

/// The longest failure message kept in reports, events and dead letters.
pub const MAX_MESSAGE_BYTES: usize = 16 << 10;

/// Counts an attempt's HTTP requests.
#[derive(Debug, Default, Clone)]
pub struct Requests {
    in_flight: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
}

/// One request waiting for (or reading) its answer; dropping it frees the
/// slot.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Requests {
    /// Takes a slot for one more request, or says which cap refuses it.
    pub fn admit(&self) -> Result<InFlight, String> {
        let sent = self.sent.fetch_add(1, Ordering::AcqRel);
        if sent >= MAX_REQUESTS {
            return Err(format!(
                "the attempt already sent {MAX_REQUESTS} HTTP requests, the most one attempt may send (cap `requests`)"
            ));
        }
        let waiting = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = InFlight(Arc::clone(&self.in_flight));
        if waiting >= MAX_REQUESTS_IN_FLIGHT {
            return Err(format!(
                "the attempt has {MAX_REQUESTS_IN_FLIGHT} HTTP requests waiting for answers, the most one attempt may have at once (cap `requests_in_flight`)"
            ));
        }
        Ok(slot)
    }
}

/// What an attempt may still log.
#[derive(Debug)]
pub struct LogBudget {
    tokens: f64,
    refilled: Instant,
    bytes: usize,
    dropped: usize,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            tokens: LOG_BURST,
            refilled: Instant::now(),
            bytes: 0,
            dropped: 0,
        }
    }
}

/// What to do with one log line.
#[derive(Debug, PartialEq, Eq)]
pub enum LogVerdict {
    /// Write it (cut to the longest line kept).
    Write,
    /// Drop it, and say once that further lines are dropped.
    DropFirst,
    /// Drop it silently.
    Drop,
}

impl LogBudget {
    /// Whether a line of `len` bytes may be written now.
    pub fn take(&mut self, len: usize) -> LogVerdict {
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() * LOG_LINES_PER_SECOND;
        self.tokens = (self.tokens + refill).min(LOG_BURST);
        self.refilled = now;
        let len = len.min(MAX_LOG_LINE);
        if self.tokens >= 1.0 && self.bytes + len <= MAX_LOG_BYTES {
            self.tokens -= 1.0;
            self.bytes += len;
            return LogVerdict::Write;
        }
        self.dropped += 1;
        if self.dropped == 1 {
            LogVerdict::DropFirst
        } else {
            LogVerdict::Drop
        }
    }
}

/// `message` cut to at most `max` bytes (on a character boundary), saying
/// how much was cut.
pub fn cut(mut message: String, max: usize) -> String {
    if message.len() <= max {
        return message;
    }
    let total = message.len();
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(&format!(" ... ({} of {total} bytes cut)", total - end));
    message
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn requests_are_capped_at_once_and_in_all() {
        let requests = Requests::default();
        let held: Vec<InFlight> = (0..MAX_REQUESTS_IN_FLIGHT)
            .map(|_| requests.admit().unwrap())
            .collect();
        let refused = requests.admit().unwrap_err();
        assert!(refused.contains("requests_in_flight"), "{refused}");
        drop(held);
        for _ in MAX_REQUESTS_IN_FLIGHT + 1..MAX_REQUESTS {
            drop(requests.admit().unwrap());
        }
        let refused = requests.admit().unwrap_err();
        assert!(refused.contains("cap `requests`"), "{refused}");
    }

    #[test]
    fn a_log_flood_is_dropped_and_announced_once() {
        let mut budget = LogBudget::default();
        let verdicts: Vec<LogVerdict> = (0..1000).map(|_| budget.take(10)).collect();
        let written = verdicts.iter().filter(|v| **v == LogVerdict::Write).count();
        assert!((200..=210).contains(&written), "{written}");
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| **v == LogVerdict::DropFirst)
                .count(),
            1
        );
        let mut budget = LogBudget::default();
        assert_eq!(budget.take(MAX_LOG_BYTES), LogVerdict::Write);
        for _ in 0..130 {
            budget.take(MAX_LOG_LINE);
        }
        assert!(budget.bytes <= MAX_LOG_BYTES);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let message = "é".repeat(10_000);
        let cut = cut(message, 1001);
        assert!(cut.starts_with(&"é".repeat(500)));
        assert!(cut.ends_with("(19000 of 20000 bytes cut)"), "{cut}");
        assert_eq!(super::cut("short".into(), 10), "short");
    }
}
