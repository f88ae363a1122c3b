//! One log line per answer that is not a success, so an operator can find the
//! producer behind a 400, 413, 429 or 504 by its connection id — rate-limited,
//! so a producer sending garbage in a loop cannot flood the log.
//!
//! [`OutcomeLog`] lets through at most one line per (connection id, status)
//! per window and counts what it held back; the next line for that pair says
//! how many were held back. Lines carry the connection id (already checked to
//! be a short, plain path segment), the status, inletd's reason and counts:
//! never a header, token or body.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// How long a (connection id, status) pair stays quiet after a line.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Most pairs remembered at once. Connection ids are chosen by clients, so the
/// table is bounded; past it, lines for new pairs are held back and counted.
const MAX_PAIRS: usize = 4096;

/// Events held back: how many answers, and how many messages they concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub events: u64,
    pub messages: u64,
}

impl Held {
    fn add(&mut self, other: Held) {
        self.events += other.events;
        self.messages += other.messages;
    }
}

/// What [`OutcomeLog::admit`] decided for one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it, with what was held back before it: for this pair, and for
    /// other pairs whose counts could not wait (their entry was forgotten to
    /// make room, or the table had none).
    Log { suppressed: Held, elsewhere: Held },
    /// Held back (and counted).
    Suppress,
}

#[derive(Debug)]
struct Pair {
    logged_at: Instant,
    suppressed: Held,
}

#[derive(Debug, Default)]
struct Table {
    pairs: HashMap<(String, u16), Pair>,
    /// Held back for pairs no longer in the table: reported by the next line logged.
    elsewhere: Held,
}

/// The rate limiter; shared by every producer request.
#[derive(Debug)]
pub struct OutcomeLog {
    every: Duration,
    table: Mutex<Table>,
}

impl OutcomeLog {
    pub fn new(every: Duration) -> OutcomeLog {
        OutcomeLog {
            every,
            table: Mutex::new(Table::default()),
        }
    }

    /// Decides whether an answer of `status` for `messages` messages to
    /// `connection_id`, at `now`, gets its log line.
    pub fn admit(&self, connection_id: &str, status: u16, messages: u64, now: Instant) -> Verdict {
        // A poisoned lock only means another request panicked mid-update: the
        // counts are still usable, and logging must never take requests down.
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let table = &mut *table;
        let key = (connection_id.to_owned(), status);
        let every = self.every;
        let event = Held {
            events: 1,
            messages,
        };
        if !table.pairs.contains_key(&key) && table.pairs.len() >= MAX_PAIRS {
            // Forget pairs whose window is over; what they held back moves to `elsewhere`.
            let elsewhere = &mut table.elsewhere;
            table.pairs.retain(|_, p| {
                let open = now < p.logged_at + every;
                if !open {
                    elsewhere.add(p.suppressed);
                }
                open
            });
            if table.pairs.len() >= MAX_PAIRS {
                table.elsewhere.add(event);
                return Verdict::Suppress;
            }
        }
        let suppressed = match table.pairs.get_mut(&key) {
            Some(pair) if now < pair.logged_at + every => {
                pair.suppressed.add(event);
                return Verdict::Suppress;
            }
            Some(pair) => std::mem::replace(pair, Pair::fresh(now)).suppressed,
            None => {
                table.pairs.insert(key, Pair::fresh(now));
                Held::default()
            }
        };
        Verdict::Log {
            suppressed,
            elsewhere: std::mem::take(&mut table.elsewhere),
        }
    }

    /// Logs one answer that was not a success, if [`OutcomeLog::admit`] lets it.
    /// `messages` of the request's `of` got `status` for `reason`.
    pub fn record(&self, connection_id: &str, status: u16, reason: &str, messages: u64, of: u64) {
        if let Verdict::Log {
            suppressed,
            elsewhere,
        } = self.admit(connection_id, status, messages, Instant::now())
        {
            tracing::warn!(
                connection_id,
                status,
                reason,
                messages,
                of,
                suppressed = suppressed.events,
                suppressed_messages = suppressed.messages,
                suppressed_other_producers = elsewhere.events,
                "producer answered with an error"
            );
        }
    }
}

impl OutcomeLog {
    /// A request answered with `error` as a whole (a single message, or a
    /// refusal before its messages were counted).
    pub fn error(&self, connection_id: &str, error: &Error) {
        let reason = error.to_string();
        self.record(connection_id, error.status().as_u16(), short(&reason), 1, 1);
    }

    /// The failed entries of a batch answer: one line per status, with the
    /// first entry's reason and how many of the request's messages got it.
    pub fn entries<T>(&self, connection_id: &str, results: &[Result<T, Error>]) {
        let mut by_status: BTreeMap<u16, (u64, &Error)> = BTreeMap::new();
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            by_status.entry(e.status().as_u16()).or_insert((0, e)).0 += 1;
        }
        let of = results.len() as u64;
        for (status, (messages, first)) in by_status {
            let reason = first.to_string();
            self.record(connection_id, status, short(&reason), messages, of);
        }
    }
}

/// A connection id that failed its check, made safe to log: its first 64
/// characters, control characters, quotes and non-ASCII escaped (`\n`, `\u{..}`).
pub fn printable(raw: &str) -> String {
    raw.chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect()
}

/// A reason cut to a log line's worth (the upstream's messages can be long).
fn short(reason: &str) -> &str {
    match reason.char_indices().nth(200) {
        Some((i, _)) => &reason[..i],
        None => reason,
    }
}

impl Pair {
    fn fresh(now: Instant) -> Pair {
        Pair {
            logged_at: now,
            suppressed: Held::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(events: u64, messages: u64) -> Verdict {
        Verdict::Log {
            suppressed: Held { events, messages },
            elsewhere: Held::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_line_per_pair_per_window_then_the_count_of_the_rest() {
        let log = OutcomeLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(log.admit("a", 400, 1, t0), logged(0, 0));
        assert_eq!(log.admit("a", 400, 3, t0), Verdict::Suppress);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(log.admit("a", 400, 1, Instant::now()), Verdict::Suppress);
        // Other pairs have windows of their own.
        assert_eq!(log.admit("a", 413, 1, Instant::now()), logged(0, 0));
        assert_eq!(log.admit("b", 400, 1, Instant::now()), logged(0, 0));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(log.admit("a", 400, 2, Instant::now()), logged(2, 4));
        assert_eq!(log.admit("a", 400, 1, Instant::now()), Verdict::Suppress);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(log.admit("a", 400, 1, Instant::now()), logged(1, 1));
    }

    #[test]
    fn ids_that_failed_their_check_are_logged_escaped_and_cut() {
        assert_eq!(printable("a\nfake line\"x"), "a\\nfake line\\\"x");
        assert_eq!(printable("ü"), "\\u{fc}");
        assert_eq!(printable(&"x".repeat(300)).len(), 64);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_what_it_could_not_take_is_reported() {
        let log = OutcomeLog::new(Duration::from_secs(10));
        let now = Instant::now();
        for i in 0..MAX_PAIRS {
            assert_eq!(log.admit(&format!("c{i}"), 400, 1, now), logged(0, 0));
        }
        assert_eq!(log.admit("c0", 400, 4, now), Verdict::Suppress);
        assert_eq!(log.admit("new", 400, 5, now), Verdict::Suppress);
        assert_eq!(log.admit("new2", 400, 1, now), Verdict::Suppress);
        assert_eq!(log.table.lock().unwrap().pairs.len(), MAX_PAIRS);
        // Once the windows are over, the pairs make room again, and the first
        // line logged reports what was held back meanwhile (c0's 4 messages too).
        tokio::time::advance(Duration::from_secs(10)).await;
        let elsewhere = Held {
            events: 3,
            messages: 10,
        };
        assert_eq!(
            log.admit("new", 400, 1, Instant::now()),
            Verdict::Log {
                suppressed: Held::default(),
                elsewhere
            }
        );
        assert_eq!(log.table.lock().unwrap().pairs.len(), 1);
        assert_eq!(log.admit("new2", 400, 1, Instant::now()), logged(0, 0));
    }
}
