//! The AEP stand-in: a local imitation of Adobe Experience Platform's streaming
//! ingestion endpoints, for trying inletd offline, for the integration
//! tests and for the benchmark. It is **not** AEP: it validates only the shape of
//! messages and never stores anything beyond this process's memory.
//!
//! This file owns the configuration, binding, routing and the control endpoints
//! (`/standin/faults`, `/standin/stats`, `/standin/messages`, `/standin/reset`). The rest is split by role:
//!
//! - `ingest.rs`: what every ingestion request goes through (body, faults,
//!   latency, auth, size) before an endpoint answers it;
//! - `batch.rs`: `POST /collection/batch/{id}` and its 207 answer;
//! - `single.rs`: `POST /collection/{id}`;
//! - `message.rs`: per-message checks and the test directives in `body.standin`;
//! - `faults.rs`: the injectable [`Fault`]s and their answers;
//! - `ims.rs`: the IMS token endpoint `POST /ims/token/v3` and the check of
//!   the tokens it issued (`POST /standin/ims` steers it);
//! - `redirect.rs`: the second listener [`Fault::Redirect`] points to;
//! - `serve.rs`: the accept loop, with a per-connection kill switch;
//! - `tls.rs`: HTTPS with a CA and certificate generated at start-up;
//! - `state.rs`: what the stand-in remembers, and the [`StandInHandle`] to read it;
//! - `wire.rs`: the request/answer types and HTTP helpers all of the above share.

mod batch;
mod faults;
mod ims;
#[cfg(test)]
mod ims_tests;
mod ingest;
mod message;
mod redirect;
mod serve;
mod single;
mod state;
#[cfg(test)]
mod tests;
mod tls;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use tokio::net::TcpListener;

pub use faults::Fault;
pub use ims::{ImsHandle, StandInIms, TokenRequest, TOKEN_PATH};
pub use state::{Delivered, RecordedRequest, StandInHandle};
pub use tls::{Alpn, StandInTls, TlsSetupError};

use ingest::Endpoint;
use state::Shared;
use wire::{error_response, json_response};

/// How the stand-in behaves. `Default` matches AEP's documented limits.
#[derive(Clone, Debug)]
pub struct StandInConfig {
    /// A batch (or single) request body longer than this is answered 413 as a whole.
    pub max_body_bytes: usize,
    /// Added to every ingestion request before it is answered.
    pub latency: Duration,
    /// If set, ingestion requests need `Authorization: Bearer <token>`:
    /// missing header -> 401, any other value -> 403.
    pub required_token: Option<String>,
    /// If set, a message whose `header.imsOrgId` is present and differs gets a
    /// per-message 400 "wrong org".
    pub ims_org: Option<String>,
    /// Keep every request and delivered message in memory (for tests). When
    /// false only counters are kept, so a long benchmark does not grow memory.
    pub record: bool,
    /// If set, the main listener serves HTTPS with this certificate (the
    /// redirect target of [`Fault::Redirect`] stays plain HTTP).
    pub tls: Option<StandInTls>,
    /// If set, `POST /ims/token/v3` issues tokens to this client (see
    /// [`StandInIms`]), and ingestion may require them.
    pub ims: Option<StandInIms>,
}

impl Default for StandInConfig {
    fn default() -> Self {
        StandInConfig {
            max_body_bytes: 1_000_000,
            latency: Duration::ZERO,
            required_token: None,
            ims_org: None,
            record: true,
            tls: None,
            ims: None,
        }
    }
}

/// A bound, not yet running stand-in. [`StandIn::run`] serves it.
pub struct StandIn {
    listener: TcpListener,
    redirect_listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl StandIn {
    /// Binds the listener now (port 0 picks a free port; see [`StandIn::local_addr`]).
    pub async fn bind(addr: SocketAddr, config: StandInConfig) -> std::io::Result<StandIn> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        // The redirect target: same interface, any free port.
        let redirect_listener = TcpListener::bind(SocketAddr::new(local_addr.ip(), 0)).await?;
        let mut shared = Shared::new(config);
        shared.redirect_base = format!("http://{}", redirect_listener.local_addr()?);
        Ok(StandIn {
            listener,
            redirect_listener,
            local_addr,
            shared: Arc::new(shared),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A cheap handle to inject faults and read records, usable while running.
    pub fn handle(&self) -> StandInHandle {
        StandInHandle::new(Arc::clone(&self.shared))
    }

    /// Serves until `shutdown` resolves, then stops accepting, releases requests
    /// held by [`Fault::Hang`] (answered 503) and waits for in-flight answers.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stopping = self.shared.shutdown.clone();
        let counted = Arc::clone(&self.shared);
        let redirect_app = redirect::router(Arc::clone(&self.shared));
        let tls = self.shared.config.tls.as_ref().map(StandInTls::acceptor);
        let app = router(self.shared);
        let on_accept = move |tcp: &tokio::net::TcpStream| {
            counted.concurrency.connection_accepted();
            // Small answers on keep-alive connections: don't let Nagle delay them.
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::trace!("failed to set TCP_NODELAY: {err}");
            }
        };
        let redirect_stop = stopping.clone();
        let redirect_target = tokio::spawn(serve::serve(
            self.redirect_listener,
            redirect_app,
            |_| {},
            None,
            async move { redirect_stop.cancelled().await },
        ));
        let result = serve::serve(self.listener, app, on_accept, tls, async move {
            shutdown.await;
            // Releases the requests held by `Hang` before waiting for answers.
            stopping.cancel();
        })
        .await;
        let _ = redirect_target.await;
        result
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/collection/batch/{id}", post(batch_route))
        .route("/collection/{id}", post(single_route))
        .route("/standin/faults", post(faults_route))
        .route("/standin/stats", get(stats_route))
        .route("/standin/messages", get(messages_route))
        .route("/standin/reset", post(reset_route))
        .route(TOKEN_PATH, post(token_route))
        .route("/standin/ims", post(ims_route))
        .fallback(not_found)
        .with_state(shared)
}

async fn batch_route(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    ingest::serve(shared, Endpoint::Batch, id, req).await
}

async fn single_route(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    // `/collection/batch` without an id would otherwise land here.
    if id == "batch" {
        return not_found().await;
    }
    ingest::serve(shared, Endpoint::Single, id, req).await
}

/// `POST /standin/faults` with a JSON array of faults, queued in order.
async fn faults_route(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Vec<Fault>>(&body) {
        Ok(faults) => {
            let queued = faults.len();
            let pending = shared.push_faults(faults);
            json_response(
                StatusCode::OK,
                &serde_json::json!({ "queued": queued, "pending": pending }),
            )
        }
        Err(err) => error_response(
            StatusCode::BAD_REQUEST,
            &format!("expected a JSON array of faults: {err}"),
        ),
    }
}

async fn token_route(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    shared
        .issuer
        .issue(shared.config.ims.as_ref(), &headers, &body)
}

/// `POST /standin/ims` with e.g. `{"fail_next":3}`, `{"revoke":true}`,
/// `{"reject_all":true}` or `{"expires_in":30}`.
async fn ims_route(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<ims::Control>(&body) {
        Ok(control) => {
            control.apply(&ImsHandle(&shared.issuer));
            json_response(
                StatusCode::OK,
                &serde_json::json!({ "token_requests": ImsHandle(&shared.issuer).requests() }),
            )
        }
        Err(err) => error_response(
            StatusCode::BAD_REQUEST,
            &format!(
                "expected {{\"fail_next\",\"fail_status\",\"expires_in\",\"revoke\",\"reject_all\"}}: {err}"
            ),
        ),
    }
}

async fn stats_route(State(shared): State<Arc<Shared>>) -> Response {
    let stats = shared.counters();
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "requests": stats.requests,
            "batch_requests": stats.batch_requests,
            "delivered": stats.delivered,
        }),
    )
}

/// Per message id (`body.xdmEntity._id`), the `xactionId` of each delivery.
async fn messages_route(State(shared): State<Arc<Shared>>) -> Response {
    json_response(
        StatusCode::OK,
        &StandInHandle::new(shared).deliveries_by_id(),
    )
}

async fn reset_route(State(shared): State<Arc<Shared>>) -> Response {
    shared.reset();
    json_response(StatusCode::OK, &serde_json::json!({ "reset": true }))
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "aep-standin serves POST /collection/{id} and POST /collection/batch/{id}",
    )
    .into_response()
}
