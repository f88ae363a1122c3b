//! The HTTP/1 accept loop shared by the producer and admin listeners:
//! keep-alive connections with a header-read deadline (which in hyper also
//! bounds how long an idle keep-alive connection may sit), and a graceful
//! stop that lets requests in progress finish.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest read buffer per connection (headers must fit in it).
pub const MAX_READ_BUFFER: usize = 16 * 1024;

/// Serves `router` on `listener` until `stop`, then waits (up to `finish`)
/// for the requests in progress. A client must send a request's headers
/// within `idle_timeout`, and a keep-alive connection idle that long is
/// closed: slow or stuck clients cannot pile up.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    idle_timeout: Duration,
    finish: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        // Caps each connection's read buffer (hyper's default is ~400 KiB): with
        // many producers, buffers would otherwise dwarf max_buffered_bytes.
        .max_buf_size(MAX_READ_BUFFER)
        .keep_alive(true);
    loop {
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
        });
    }
    drop(listener);
    if tokio::time::timeout(finish, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {finish:?}; closing them");
    }
}
