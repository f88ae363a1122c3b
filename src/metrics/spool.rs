//! The fire-and-forget and spool metrics: what was accepted without waiting
//! and what became of it, and the spool's own gauges and counters. The spool
//! keeps its figures in [`SpoolStats`] (it owns no registry); they are copied
//! here at each scrape ([`SpoolMetrics::refresh`]), and its sync latency is
//! recorded as it happens through [`SpoolMetrics::sync_observer`].

use std::sync::{Arc, OnceLock};

use metrics::{counter, describe_counter, describe_gauge, gauge, histogram, Counter, Gauge};
use metrics::{Histogram, Unit};

use crate::spool::{SpoolStats, SyncObserver};

pub const ASYNC_ACCEPTED: &str = "inletd_async_accepted_total";
pub const ASYNC_RESULTS: &str = "inletd_async_results_total";
pub const SPOOL_BYTES: &str = "inletd_spool_bytes";
pub const SPOOL_MESSAGES: &str = "inletd_spool_messages";
pub const SPOOL_MAX_BYTES: &str = "inletd_spool_max_bytes";
pub const SPOOL_WAITING_ON_DISK: &str = "inletd_spool_waiting_on_disk_messages";
pub const SPOOL_SYNC: &str = "inletd_spool_sync_seconds";
pub const SPOOL_SYNCS: &str = "inletd_spool_syncs_total";
pub const SPOOL_SYNCED_MESSAGES: &str = "inletd_spool_synced_messages_total";
pub const DEAD_LETTERS: &str = "inletd_dead_letters_total";
pub const SPOOL_CORRUPT: &str = "inletd_spool_corrupt_records_total";
pub const SPOOL_REPLAYED: &str = "inletd_spool_replayed_total";
pub const SPOOL_RESENT_UNCONFIRMED: &str = "inletd_spool_resent_unconfirmed_total";

/// Buckets of `inletd_spool_sync_seconds`: an `fdatasync` takes from tens of
/// microseconds (NVMe) to hundreds of milliseconds (a struggling network disk).
pub const SYNC_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Per durability: `false` held in memory, `true` spooled.
struct ByDurable<T> {
    memory: T,
    spooled: T,
}

impl<T> ByDurable<T> {
    fn get(&self, durable: bool) -> &T {
        if durable {
            &self.spooled
        } else {
            &self.memory
        }
    }
}

/// Registered handles; see the module doc.
pub struct SpoolMetrics {
    accepted: ByDurable<Counter>,
    delivered: ByDurable<Counter>,
    failed: ByDurable<Counter>,
    pub replayed: Counter,
    pub resent_unconfirmed: Counter,
    sync: Histogram,
    bytes: Gauge,
    messages: Gauge,
    waiting_on_disk: Gauge,
    max_bytes: Gauge,
    syncs: Counter,
    synced_messages: Counter,
    dead_letters: Counter,
    corrupt: Counter,
    stats: OnceLock<Arc<SpoolStats>>,
}

impl SpoolMetrics {
    /// Registers every family (call under the owning recorder).
    pub(super) fn register() -> SpoolMetrics {
        describe_counter!(
            ASYNC_ACCEPTED,
            "Fire-and-forget messages answered 202, by durable (true: spooled to disk)."
        );
        describe_counter!(
            ASYNC_RESULTS,
            "Final results of fire-and-forget messages, by durable and result (delivered, failed)."
        );
        let by = |name: &'static str, extra: Option<(&'static str, &'static str)>| {
            let one = |durable: &'static str| match extra {
                Some((k, v)) => counter!(name, "durable" => durable, k => v),
                None => counter!(name, "durable" => durable),
            };
            ByDurable {
                memory: one("false"),
                spooled: one("true"),
            }
        };
        describe_gauge!(SPOOL_BYTES, Unit::Bytes, "Bytes of spool segments on disk.");
        describe_gauge!(
            SPOOL_MESSAGES,
            "Spooled messages not yet delivered or dead-lettered."
        );
        SpoolMetrics {
            accepted: by(ASYNC_ACCEPTED, None),
            delivered: by(ASYNC_RESULTS, Some(("result", "delivered"))),
            failed: by(ASYNC_RESULTS, Some(("result", "failed"))),
            replayed: counter!(
                description: "Spooled messages read back from disk and queued for delivery (found undelivered at start-up, or left on disk while memory was short).",
                SPOOL_REPLAYED
            ),
            resent_unconfirmed: counter!(
                description: "Spooled messages resent after a send without a usable answer (they may arrive twice).",
                SPOOL_RESENT_UNCONFIRMED
            ),
            sync: histogram!(
                description: "Duration of one spool segment fdatasync (up to three overlap).",
                unit: Unit::Seconds,
                SPOOL_SYNC
            ),
            bytes: gauge!(SPOOL_BYTES),
            messages: gauge!(SPOOL_MESSAGES),
            waiting_on_disk: gauge!(
                description: "Spooled messages waiting on disk only, for memory to bring them into delivery (part of inletd_spool_messages).",
                SPOOL_WAITING_ON_DISK
            ),
            max_bytes: gauge!(
                description: "The configured max_spool_bytes bound (0: no spool).",
                unit: Unit::Bytes,
                SPOOL_MAX_BYTES
            ),
            syncs: counter!(
                description: "Spool fdatasyncs of appended messages (group commits).",
                SPOOL_SYNCS
            ),
            synced_messages: counter!(
                description: "Messages made durable by those syncs (divided by the syncs: messages per fsync).",
                SPOOL_SYNCED_MESSAGES
            ),
            dead_letters: counter!(
                description: "Spooled messages written to dead-letter.jsonl (final failures).",
                DEAD_LETTERS
            ),
            corrupt: counter!(
                description: "Damaged spool records or ack entries skipped since start.",
                SPOOL_CORRUPT
            ),
            stats: OnceLock::new(),
        }
    }

    /// A fire-and-forget 202 for `n` messages.
    pub fn accepted(&self, durable: bool, n: usize) {
        self.accepted.get(durable).increment(n as u64);
    }

    /// The final result of one fire-and-forget message.
    pub fn result(&self, durable: bool, delivered: bool) {
        let family = if delivered {
            &self.delivered
        } else {
            &self.failed
        };
        family.get(durable).increment(1);
    }

    /// From now on the spool's figures are exported, with `max` as its bound.
    pub fn attach(&self, stats: Arc<SpoolStats>, max: u64) {
        self.max_bytes.set(max as f64);
        let _ = self.stats.set(stats);
    }

    /// Records each group's sync time in `inletd_spool_sync_seconds`.
    pub fn sync_observer(&self) -> SyncObserver {
        let sync = self.sync.clone();
        Arc::new(move |took| sync.record(took.as_secs_f64()))
    }

    /// Copies the spool's figures into the exported series (before a render).
    pub fn refresh(&self) {
        let Some(stats) = self.stats.get() else {
            return;
        };
        self.bytes.set(stats.bytes() as f64);
        self.messages.set(stats.messages() as f64);
        self.waiting_on_disk.set(stats.waiting_on_disk() as f64);
        self.syncs.absolute(stats.syncs());
        self.synced_messages.absolute(stats.synced_messages());
        self.dead_letters.absolute(stats.dead_letters());
        self.corrupt.absolute(stats.corrupt_records());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn the_spools_figures_are_exported_at_each_render() {
        let m = Metrics::new(1000);
        let before = m.render();
        assert!(before.contains("inletd_spool_max_bytes 0"), "{before}");
        let stats = Arc::new(SpoolStats::default());
        m.spool.attach(stats.clone(), 4096);
        stats.bytes.store(300, Ordering::Relaxed);
        stats.messages.store(3, Ordering::Relaxed);
        stats.syncs.store(2, Ordering::Relaxed);
        stats.synced_messages.store(7, Ordering::Relaxed);
        stats.corrupt.store(1, Ordering::Relaxed);
        stats.dead_letters.store(4, Ordering::Relaxed);
        (m.spool.sync_observer())(Duration::from_micros(300));
        m.spool.accepted(true, 5);
        m.spool.result(false, false);
        let text = m.render();
        for line in [
            "inletd_spool_bytes 300",
            "inletd_spool_messages 3",
            "inletd_spool_max_bytes 4096",
            "inletd_spool_syncs_total 2",
            "inletd_spool_synced_messages_total 7",
            "inletd_spool_corrupt_records_total 1",
            "inletd_dead_letters_total 4",
            r#"inletd_spool_sync_seconds_bucket{le="0.0005"} 1"#,
            r#"inletd_async_accepted_total{durable="true"} 5"#,
            r#"inletd_async_accepted_total{durable="false"} 0"#,
            r#"inletd_async_results_total{durable="false",result="failed"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
