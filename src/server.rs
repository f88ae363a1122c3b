//! The HTTP/1 accept loop shared by the producer and admin listeners:
//! keep-alive connections with a header-read deadline (which in hyper also
//! bounds how long an idle keep-alive connection may sit), a cap on open
//! connections, connections ended after an answer by the [`keepalive`]
//! policy (and, once draining, idle ones closed at once), and a graceful stop
//! that lets requests in progress finish.
//!
//! [`keepalive`]: crate::keepalive

mod ending;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::keepalive;
use crate::shutdown::CONNECTIONS_FINISH;
use ending::Endings;

/// Largest read buffer per connection (headers must fit in it).
pub const MAX_READ_BUFFER: usize = 16 * 1024;

/// Connections the admin listener serves at once (scrapers and probes).
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// How long the loop pauses after a failed accept (out of file descriptors
/// and similar), instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// At most one "at the connection cap" warning per this long.
const CAP_LOG_EVERY: Duration = Duration::from_secs(10);

/// What one listener allows its clients.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest a client may take to send a request's headers, or sit idle.
    pub idle_timeout: Duration,
    /// Connections open at once. At the cap, the loop stops accepting: new
    /// connections wait in the kernel's listen backlog (not closed) until one ends.
    pub max_connections: usize,
    /// When a connection is closed after an answer.
    pub keepalive: keepalive::Policy,
}

/// What a listener serves: a `Router`, or for the producers a bare handler
/// that matches its own paths (see `ingest::routes::dispatch`).
pub trait App:
    tower::Service<
        axum::extract::Request<Incoming>,
        Response = axum::response::Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<
            axum::extract::Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Serves `router` on `listener` until `stop`, then waits (a short while)
/// for the requests in progress. Slow or stuck clients cannot pile up: each
/// must send its headers within `idle_timeout`, and at most `max_connections`
/// are open at once.
pub async fn serve(
    listener: TcpListener,
    router: impl App,
    stop: CancellationToken,
    limits: Limits,
) {
    let connections = TaskTracker::new();
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
    // One task per listener watches the stop and the drain for its connections.
    let endings = Endings::default();
    let drain = limits.keepalive.draining.clone();
    let watcher = tokio::spawn(watch(stop.clone(), drain.clone(), endings.clone()));
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
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = limits.keepalive.connection();
        let marks = state.clone();
        let service = ServiceExt::<axum::extract::Request<Incoming>>::map_response(
            router.clone(),
            move |answer| marks.answer(answer),
        );
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        // Decided now, at accept: a connection opened during the drain is not
        // cut short, so its first request gets an answer (a 503, marked as the
        // last) instead of a closed connection.
        let watch = endings.open(drain.as_ref().is_some_and(|d| !d.is_cancelled()));
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut ending = false;
            // On a stop or a drain: finish the answer in progress (hyper then
            // closes the connection), or close at once when idle.
            let ended = std::future::poll_fn(|cx| {
                if !ending && watch.poll_ended(cx) {
                    ending = true;
                    connection.as_mut().graceful_shutdown();
                }
                connection.as_mut().poll(cx)
            })
            .await;
            drop(watch);
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            // The slot is free only once the connection is gone.
            drop(slot);
        });
    }
    drop(listener);
    watcher.abort();
    endings.stop();
    connections.close();
    if tokio::time::timeout(CONNECTIONS_FINISH, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {CONNECTIONS_FINISH:?}; closing them");
    }
}

/// Tells `endings` when the listener stops, and when the drain (if this
/// listener's connections end with it) begins.
async fn watch(stop: CancellationToken, drain: Option<CancellationToken>, endings: Endings) {
    if let Some(drain) = drain {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = drain.cancelled() => endings.drain(),
        }
    }
    stop.cancelled().await;
    endings.stop();
}
