//! Shutdown in phases: not ready and refusing new requests → every buffer
//! flushed → wait for accepted work up to `shutdown_grace` → abort what is
//! left (its producers get 503) → stop the listeners → report.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How the drain ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// Every accepted message was answered within the grace period.
    pub complete: bool,
    /// Bytes of messages still unanswered when the grace period ended.
    pub unanswered_bytes: usize,
    pub took: Duration,
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
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
        // Aborted deliveries answer at once; give the answers a moment to go out.
        let _ = tokio::time::timeout(Duration::from_secs(1), phases.work.wait()).await;
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
