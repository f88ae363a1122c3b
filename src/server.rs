//! The HTTP/1 accept loop shared by the producer and admin listeners:
//! keep-alive connections with a header-read deadline (which in hyper also
//! bounds how long an idle keep-alive connection may sit), a cap on open
//! connections, and a graceful stop that lets requests in progress finish.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::shutdown::CONNECTIONS_FINISH;

/// Largest read buffer per connection (headers must fit in it).
pub const MAX_READ_BUFFER: usize = 16 * 1024;

/// Connections the admin listener serves at once (scrapers and probes).
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// At most one "at the connection cap" warning per this long.
const CAP_LOG_EVERY: Duration = Duration::from_secs(10);

/// What one listener allows its clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest a client may take to send a request's headers, or sit idle.
    pub idle_timeout: Duration,
    /// Connections open at once. At the cap, the loop stops accepting: new
    /// connections wait in the kernel's listen backlog (not closed) until one ends.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `stop`, then waits (a short while)
/// for the requests in progress. Slow or stuck clients cannot pile up: each
/// must send its headers within `idle_timeout`, and at most `max_connections`
/// are open at once.
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken, limits: Limits) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        // Caps each connection's read buffer (hyper's default is ~400 KiB): with
        // many producers, buffers would otherwise dwarf max_buffered_bytes.
        .max_buf_size(MAX_READ_BUFFER)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut last_warning: Option<Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if last_warning.is_none_or(|at| at.elapsed() >= CAP_LOG_EVERY) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "at the connection cap: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            // The slot is free only once the connection is gone.
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(CONNECTIONS_FINISH, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {CONNECTIONS_FINISH:?}; closing them");
    }
}
