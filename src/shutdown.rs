//! Shutdown in phases: not ready and refusing new requests → every buffer
//! flushed → wait for accepted work up to `shutdown_grace` → abort what is
//! left (its producers get 503) → stop the listeners → report.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

// The fixed waits after `shutdown_grace`. They are not derived from it: the
// grace is the budget for delivering accepted work, and operators size the
// orchestrator's grace period as `shutdown_grace` + a margin
// (docs/operations.md, "Shutdown timing"). These tails deliver nothing new;
// they let answers already decided leave and tasks end, so they stay small and
// fixed and must fit in that margin ([`AFTER_GRACE`]).

/// After the abort, how long the drain waits for the aborted messages' 503s.
/// Dropping a delivery answers its producers at once (the `Reply` drop guard),
/// so this covers only the producer tasks being scheduled to write them.
pub const ABORTED_ANSWERS: Duration = Duration::from_secs(1);

/// How long a stopped listener lets its open connections finish writing
/// answers already decided, before closing them. Longer than
/// [`ABORTED_ANSWERS`]: a slow client on a busy host may need a moment to read.
pub const CONNECTIONS_FINISH: Duration = Duration::from_secs(2);

/// How long each background task (the batcher worker, then the dispatch loop)
/// may take to end once the listeners are gone. Both end as soon as their
/// inputs close; the bound only covers a connection task that outlived its
/// listener and still holds a batcher handle.
pub const TASK_EXIT: Duration = Duration::from_secs(1);

/// The longest shutdown runs past `shutdown_grace`: the answers after the abort,
/// then the listeners (in parallel), then the worker and the dispatch loop in turn.
pub const AFTER_GRACE: Duration = Duration::from_secs(
    ABORTED_ANSWERS.as_secs() + CONNECTIONS_FINISH.as_secs() + 2 * TASK_EXIT.as_secs(),
);

/// The margin docs/operations.md asks orchestrators to leave over `shutdown_grace`.
const DOCUMENTED_MARGIN: Duration = Duration::from_secs(10);
const _: () = assert!(AFTER_GRACE.as_secs() < DOCUMENTED_MARGIN.as_secs());

/// How the drain ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// Every accepted message was answered within the grace period.
    pub complete: bool,
    /// Bytes of messages still unanswered when the grace period ended.
    pub unanswered_bytes: usize,
    pub took: Duration,
}

/// Listens for SIGTERM and SIGINT (Ctrl-C) from the moment it is called; the
/// future resolves on the first of them. Call it (inside the runtime) before
/// announcing readiness: a handler installed only when the future is first
/// polled leaves a window in which a SIGTERM kills the process outright,
/// without a drain.
pub fn signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &'static str| {
            let stream = signal(kind);
            if let Err(e) = &stream {
                tracing::error!(error = %e, "cannot listen for {name}");
            }
            stream.ok()
        };
        let term = listen(SignalKind::terminate(), "SIGTERM");
        let int = listen(SignalKind::interrupt(), "SIGINT");
        async move {
            tokio::select! {
                _ = received(term) => tracing::info!("SIGTERM received"),
                _ = received(int) => tracing::info!("SIGINT received"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("Ctrl-C received");
    }
}

/// Resolves when `stream` delivers a signal; never, when it could not be installed.
#[cfg(unix)]
async fn received(stream: Option<tokio::signal::unix::Signal>) {
    match stream {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// The tokens and trackers the phases act on.
pub struct Phases {
    /// Phase 1: `/readyz` 503, new requests 503, buffers flushed.
    pub draining: CancellationToken,
    /// Every accepted message and every delivery.
    pub work: TaskTracker,
    /// Phase 3: drop deliveries still running (their producers get 503).
    pub abort: CancellationToken,
}

/// Runs the drain; `unanswered` reads the bytes still held in the bound.
pub async fn drain(
    phases: &Phases,
    grace: Duration,
    unanswered: impl Fn() -> usize,
) -> DrainReport {
    let started = Instant::now();
    tracing::info!(
        unanswered_bytes = unanswered(),
        grace = %humantime::format_duration(grace),
        "draining: not ready, refusing new requests, flushing every buffer"
    );
    phases.draining.cancel();
    phases.work.close();
    let complete = tokio::time::timeout(grace, phases.work.wait())
        .await
        .is_ok();
    let left = unanswered();
    if complete {
        tracing::info!(took = ?started.elapsed(), "drain complete: every accepted message was answered");
    } else {
        tracing::warn!(
            unanswered_bytes = left,
            "drain incomplete: shutdown_grace passed; answering what is left with 503"
        );
        phases.abort.cancel();
        let _ = tokio::time::timeout(ABORTED_ANSWERS, phases.work.wait()).await;
    }
    DrainReport {
        complete,
        unanswered_bytes: left,
        took: started.elapsed(),
    }
}

/// Wraps a future so the abort phase can drop it.
pub async fn abortable(abort: CancellationToken, work: impl Future<Output = ()>) {
    tokio::select! {
        _ = work => {}
        _ = abort.cancelled() => {}
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Without a handler installed by the call itself, the SIGTERM raised before
    /// the first poll would kill this test process.
    #[tokio::test]
    async fn sigterm_is_caught_from_the_moment_signal_is_called() {
        let stop = signal();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        stop.await;
    }
}
