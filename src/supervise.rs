//! Supervision of the tasks every answer depends on (the batcher worker, the
//! dispatch loop): a task that panics, or ends before shutdown asked it to,
//! is logged at error and recorded in [`Liveness`], which `/healthz` reads.
//! inletd cannot answer producers without them (every message would wait for
//! its 504), so the right move is a restart by the orchestrator, and a failing
//! liveness probe is what asks for one.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A supervised task that is gone when it should not be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dead {
    /// The task's name, e.g. `batcher`.
    pub task: &'static str,
    /// `panicked: <message>` or `ended unexpectedly`.
    pub reason: String,
}

/// Which supervised tasks died. Cheap to clone; all clones share the record.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    dead: Arc<Mutex<Vec<Dead>>>,
}

impl Liveness {
    /// The tasks that died, in order; empty while inletd is healthy.
    pub fn dead(&self) -> Vec<Dead> {
        self.dead
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, dead: Dead) {
        tracing::error!(
            task = dead.task,
            reason = %dead.reason,
            "a background task died: producers will not be answered; /healthz now fails so the process is restarted"
        );
        self.dead
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(dead);
    }

    /// Spawns `task` under supervision. Its end is expected only once
    /// `stopping` is cancelled; a panic is never expected.
    pub fn spawn(
        &self,
        name: &'static str,
        stopping: CancellationToken,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let liveness = self.clone();
        tokio::spawn(async move {
            // The task owns all its state, and after a panic nothing of it is used again.
            let ended = AssertUnwindSafe(task).catch_unwind().await;
            let reason = match ended {
                Err(panic) => format!("panicked: {}", panic_message(&*panic)),
                Ok(()) if stopping.is_cancelled() => return,
                Ok(()) => "ended unexpectedly".to_owned(),
            };
            liveness.record(Dead { task: name, reason });
        })
    }
}

/// The text a panic was raised with, when it carries one.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_recorded_with_its_message() {
        let liveness = Liveness::default();
        let task = liveness.spawn("batcher", CancellationToken::new(), async {
            panic!("boom {}", 42);
        });
        task.await.unwrap();
        assert_eq!(
            liveness.dead(),
            vec![Dead {
                task: "batcher",
                reason: "panicked: boom 42".into()
            }]
        );
    }

    #[tokio::test]
    async fn an_end_before_stopping_is_recorded() {
        let liveness = Liveness::default();
        liveness
            .spawn("dispatch", CancellationToken::new(), async {})
            .await
            .unwrap();
        assert_eq!(liveness.dead()[0].task, "dispatch");
        assert_eq!(liveness.dead()[0].reason, "ended unexpectedly");
    }

    #[tokio::test]
    async fn an_end_after_stopping_is_not() {
        let liveness = Liveness::default();
        let stopping = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = liveness.spawn("batcher", stopping.clone(), async move {
            let _ = rx.await;
        });
        stopping.cancel();
        drop(tx);
        task.await.unwrap();
        assert!(liveness.dead().is_empty());
        // A panic during shutdown still counts.
        liveness
            .spawn("dispatch", stopping, async { panic!("late") })
            .await
            .unwrap();
        assert_eq!(liveness.dead().len(), 1);
    }
}
