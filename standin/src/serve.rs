//! The accept loop: one hyper HTTP/1 connection task per client, each with a
//! kill switch ([`KillSwitch`], in every request's extensions) that lets a
//! handler drop its own connection mid-request, as [`crate::Fault::ResetMidRequest`]
//! needs. axum's own `serve` offers no way to do that. Graceful shutdown stops
//! accepting, then waits for the answers in flight.

use std::future::Future;

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Cancelling it closes the connection the request came on, without an answer.
#[derive(Clone, Debug)]
pub(crate) struct KillSwitch(pub CancellationToken);

/// Serves `app` on `listener` until `shutdown` resolves; `on_accept` sees each
/// new connection first.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    on_accept: impl Fn(&tokio::net::TcpStream),
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    // EMFILE and the like: keep serving the connections we have.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        on_accept(&tcp);
        let kill = CancellationToken::new();
        let switch = KillSwitch(kill.clone());
        let service = app.clone().map_request(move |mut req: Request<_>| {
            req.extensions_mut().insert(switch.clone());
            req
        });
        let conn = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::select! {
                result = conn => {
                    if let Err(err) = result {
                        tracing::trace!("connection ended: {err}");
                    }
                }
                // Dropping the connection closes the socket with the request unread.
                () = kill.cancelled() => {}
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
