//! [`Endings`]: tells a listener's open connections to finish the answer in
//! progress and close, on a stop or when the drain begins, without each
//! connection's task polling cancellation futures on every wake-up.
//!
//! Why not a `select!` on `CancellationToken::cancelled()` per connection: a
//! connection's task is woken several times per request (the request
//! arrives, its body, its outcome, the write), and every wake-up polled both
//! futures, each a lock (tokio's `Notified` re-checks its waker under the
//! waiters' lock): ~1.6k instructions a message in `bench/profile.sh`. Here a
//! connection registers once, when it opens; a wake-up costs an atomic load
//! and an `AtomicWaker` registration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Context;

use futures_util::task::AtomicWaker;

/// The open connections of one listener, and whether they were told to end.
#[derive(Clone, Default)]
pub struct Endings {
    registry: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    next: u64,
    /// Each open connection's signal, and whether the drain ends it.
    open: HashMap<u64, (Arc<Signal>, bool)>,
    stopped: bool,
    drained: bool,
}

#[derive(Default)]
struct Signal {
    ended: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// One connection's end signal; dropping it unregisters the connection.
pub struct Watch {
    signal: Arc<Signal>,
    id: u64,
    registry: Arc<Mutex<Registry>>,
}

impl Endings {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry holds no invariant a panic could break halfway.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection. `drains`: whether the drain ends it (decided
    /// at accept: a connection opened during the drain answers its request).
    pub fn open(&self, drains: bool) -> Watch {
        let signal = Arc::new(Signal::default());
        let mut registry = self.lock();
        if registry.stopped || (drains && registry.drained) {
            signal.end();
        }
        let id = registry.next;
        registry.next += 1;
        registry.open.insert(id, (signal.clone(), drains));
        Watch {
            signal,
            id,
            registry: self.registry.clone(),
        }
    }

    /// The listener stops: every connection ends after its answer in progress.
    pub fn stop(&self) {
        let mut registry = self.lock();
        registry.stopped = true;
        registry.open.values().for_each(|(signal, _)| signal.end());
    }

    /// The drain began: the connections opened before it end.
    pub fn drain(&self) {
        let mut registry = self.lock();
        registry.drained = true;
        let draining = registry.open.values().filter(|(_, drains)| *drains);
        draining.for_each(|(signal, _)| signal.end());
    }
}

impl Watch {
    /// Whether the connection should end; if not yet, `cx` is woken when it should.
    pub fn poll_ended(&self, cx: &mut Context<'_>) -> bool {
        // Registered before the look, so an end between the two still wakes.
        self.signal.waker.register(cx.waker());
        self.signal.ended.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        registry.open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;

    async fn ended(watch: &Watch) {
        poll_fn(|cx| {
            if watch.poll_ended(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    fn now(watch: &Watch) -> bool {
        watch.poll_ended(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[tokio::test]
    async fn stop_ends_every_connection_and_wakes_it() {
        let endings = Endings::default();
        let (a, b) = (endings.open(true), endings.open(false));
        assert!(!now(&a) && !now(&b));
        let waiting = tokio::spawn(async move { ended(&b).await });
        tokio::task::yield_now().await;
        endings.stop();
        waiting.await.expect("woken and ended");
        assert!(now(&a));
        assert!(now(&endings.open(false)), "opened after the stop");
    }

    #[tokio::test]
    async fn the_drain_ends_only_the_connections_opened_before_it() {
        let endings = Endings::default();
        let (before, kept) = (endings.open(true), endings.open(false));
        endings.drain();
        assert!(now(&before));
        assert!(!now(&kept), "a connection that keeps through the drain");
        assert!(
            now(&endings.open(true)),
            "drains, opened after: ended at once"
        );
        assert!(!now(&endings.open(false)));
    }

    #[test]
    fn a_closed_connection_leaves_the_registry() {
        let endings = Endings::default();
        let watch = endings.open(true);
        assert_eq!(endings.lock().open.len(), 1);
        drop(watch);
        assert!(endings.lock().open.is_empty());
    }
}
