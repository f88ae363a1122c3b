//! The hand-off between appends and the [`Feed`](super::Feed): where the
//! durable end of the spool is, and whether spooled messages are being left
//! on disk ("overflow") since which record.
//!
//! The writer thread decides, for each record of a synced group and under
//! this one lock, whether its caller hands it to delivery now: only when the
//! caller holds the memory for it and no earlier record waits on disk. Once
//! one record is left on disk, every later one is too, until the feed has
//! read up to the durable end and ends the overflow (under the same lock, so
//! no record is both handed over and read by the feed). That keeps the feed's
//! state O(1): one cursor, "everything from here on was not handed over".

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::record::RecordId;
use super::SpoolStats;

pub(crate) struct Tail {
    state: Mutex<State>,
    /// Woken when the overflow starts or its durable end moves.
    changed: Notify,
    stats: Arc<SpoolStats>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    /// Everything before this position is synced (earlier segments are sealed).
    pub end: RecordId,
    /// The first record left on disk, while the feed has not caught up.
    pub overflow: Option<RecordId>,
}

impl Tail {
    pub(crate) fn new(state: State, stats: Arc<SpoolStats>) -> Tail {
        Tail {
            state: Mutex::new(state),
            changed: Notify::new(),
            stats,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain positions: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writer: a group synced into segment `seq`, its records at `placed`
    /// (offset, whether the caller holds the memory), ending at `end`.
    /// Returns, per record, whether its caller delivers it now.
    pub(crate) fn synced(&self, seq: u64, placed: &[(u64, bool)], end: u64) -> Vec<bool> {
        let mut state = self.lock();
        let now: Vec<bool> = placed
            .iter()
            .map(|&(offset, memory)| {
                if state.overflow.is_none() && !memory {
                    state.overflow = Some(RecordId {
                        segment: seq,
                        offset,
                    });
                }
                state.overflow.is_none()
            })
            .collect();
        state.end = RecordId {
            segment: seq,
            offset: end,
        };
        let left = now.iter().filter(|now| !**now).count() as u64;
        self.stats.waiting.fetch_add(left, Ordering::Relaxed);
        if state.overflow.is_some() {
            self.changed.notify_one();
        }
        now
    }

    pub(crate) fn state(&self) -> State {
        *self.lock()
    }

    /// Feed: it has handed over everything before `at`. True when nothing
    /// waits on disk: no overflow, or `at` is the durable end (then the
    /// overflow ends, and later appends go straight to delivery again).
    pub(crate) fn caught_up(&self, at: RecordId) -> bool {
        let mut state = self.lock();
        if state.overflow.is_none() || at >= state.end {
            state.overflow = None;
            return true;
        }
        false
    }

    /// Resolves once the overflow starts or grows (or at once if it did
    /// since the last call).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// What the caller of [`Feed::next_chunk`](super::Feed::next_chunk) waits
/// on when nothing is left on disk.
#[derive(Clone)]
pub struct FeedSignal(pub(crate) Arc<Tail>);

impl FeedSignal {
    /// Resolves once records may be waiting on disk again.
    pub async fn changed(&self) {
        self.0.changed().await;
    }
}

impl std::fmt::Debug for FeedSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FeedSignal").field(&self.0.state()).finish()
    }
}
