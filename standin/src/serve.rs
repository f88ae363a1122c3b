//! The accept loop: one hyper connection task per client (HTTP/1.1, or over
//! TLS whichever of HTTP/2 and HTTP/1.1 ALPN chose), each with a
//! kill switch ([`KillSwitch`], in every request's extensions) that lets a
//! handler drop its own connection mid-request, as [`crate::Fault::ResetMidRequest`]
//! needs. axum's own `serve` offers no way to do that. Graceful shutdown stops
//! accepting, then waits for the answers in flight.

use std::future::Future;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Cancelling it closes the connection the request came on, without an answer.
#[derive(Clone, Debug)]
pub(crate) struct KillSwitch(pub CancellationToken);

/// Serves `app` on `listener` until `shutdown` resolves; `on_accept` sees each
/// new connection first. With `tls`, each connection is TLS, served as HTTP/2
/// when ALPN chose `h2` and as HTTP/1.1 otherwise.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    on_accept: impl Fn(&tokio::net::TcpStream),
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
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
        let service = TowerToHyperService::new(service);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = async move {
                match tls {
                    None => http1(watcher, TokioIo::new(tcp), service).await,
                    Some(acceptor) => {
                        // A client that never finishes its handshake must not
                        // hold up the graceful shutdown (the watcher waits).
                        let handshake =
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                        let stream = match handshake.await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(err)) => {
                                return tracing::debug!("TLS handshake failed: {err}");
                            }
                            Err(_) => return tracing::debug!("TLS handshake timed out"),
                        };
                        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                            let mut builder = http2::Builder::new(TokioExecutor::new());
                            builder.timer(TokioTimer::new());
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            report(watcher.watch(conn).await);
                        } else {
                            http1(watcher, TokioIo::new(stream), service).await;
                        }
                    }
                }
            };
            tokio::select! {
                () = served => {}
                // Dropping the connection closes the socket with the request unread.
                () = kill.cancelled() => {}
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The longest a TLS client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn http1<I, S>(watcher: Watcher, io: I, service: S)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send + 'static,
    S::Future: Send,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    <S::ResBody as hyper::body::Body>::Data: Send,
{
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new());
    report(watcher.watch(builder.serve_connection(io, service)).await);
}

fn report(result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        tracing::trace!("connection ended: {err}");
    }
}
