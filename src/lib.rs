//! inletd: a local batching proxy for Adobe Experience Platform streaming
//! ingestion. Producers keep sending one message per request; inletd batches
//! them upstream and answers each producer with its own message's result.
//!
//! The crate follows a message's walk:
//!
//! - [`ingest`]: producer routes, body checks (400/413), admission against the
//!   memory bound (429), waiting for the outcome (504 on `request_timeout`).
//! - [`batcher`]: per-key buffers and the flush policy (count, bytes, linger, idle, shutdown).
//! - [`upstream`]: the pooled client, the 207 reading, retries, splits and bisection.
//! - [`reply`]: the per-message outcome and the handle that carries it back (fan-out).
//!
//! Around them: [`config`] (keys and layering), [`error`] (errors → HTTP),
//! [`metrics`] (every `inletd_*` name), [`admin`] (`/metrics`, `/healthz`,
//! `/readyz`), [`healthcheck`] (the container's probe of `/healthz`),
//! [`shutdown`] (the drain phases), [`server`] (the accept loop).
//! The AEP stand-in used offline and in the tests is its own crate (`standin/`).

#![forbid(unsafe_code)]

pub mod admin;
pub mod batcher;
pub mod config;
pub mod error;
pub mod healthcheck;
pub mod ingest;
pub mod metrics;
pub mod reply;
pub mod server;
pub mod shutdown;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use shutdown::DrainReport;

/// Why inletd could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} (`{key}`): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the upstream client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A bound, not yet running inletd. Ports may be 0; [`App::addr`] tells the real ones.
pub struct App {
    config: Config,
    listener: TcpListener,
    admin_listener: TcpListener,
}

impl App {
    /// Binds both listeners.
    pub async fn bind(config: Config) -> Result<App, StartError> {
        let bind = |key: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { key, addr, source })
        };
        let listener = bind("listen", config.listen).await?;
        let admin_listener = bind("admin_listen", config.admin_listen).await?;
        Ok(App {
            config,
            listener,
            admin_listener,
        })
    }

    /// The producers' address.
    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// The admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .unwrap_or(self.config.admin_listen)
    }

    /// Serves until `shutdown` resolves, then drains (see [`shutdown`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<DrainReport, StartError> {
        let (addr, admin_addr) = (self.addr(), self.admin_addr());
        let App {
            config,
            listener,
            admin_listener,
        } = self;
        let metrics = metrics::Metrics::new(config.max_buffered_bytes);
        let phases = shutdown::Phases {
            draining: CancellationToken::new(),
            work: TaskTracker::new(),
            abort: CancellationToken::new(),
        };
        let stop_http = CancellationToken::new();

        let upstream = upstream::Upstream::new(&config, metrics.clone())?;
        let limits = batcher::Limits {
            max_messages: config.max_batch_messages,
            max_bytes: config.max_batch_bytes,
        };
        let (handle, worker, batches) = batcher::batcher(
            limits,
            batcher::Pacing::new(config.linger.0, config.max_in_flight),
            phases.draining.clone(),
            metrics.clone(),
        );
        let worker = tokio::spawn(worker.run());
        let dispatch = tokio::spawn(upstream.clone().dispatch(
            batches,
            phases.work.clone(),
            phases.abort.clone(),
        ));
        let upkeep = tokio::spawn(metrics::upkeep(metrics.clone(), stop_http.clone()));

        let ingest = ingest::Ingest::new(
            &config,
            limits,
            handle,
            upstream.clone(),
            metrics.clone(),
            &phases,
        );
        let held = ingest.clone();
        let producers = tokio::spawn(server::serve(
            listener,
            ingest::router(ingest),
            stop_http.clone(),
            server::Limits {
                idle_timeout: config.producer_idle_timeout.0,
                max_connections: config.max_connections,
            },
        ));
        let admin = tokio::spawn(server::serve(
            admin_listener,
            admin::router(metrics.clone(), phases.draining.clone()),
            stop_http.clone(),
            server::Limits {
                idle_timeout: config.producer_idle_timeout.0,
                max_connections: server::MAX_ADMIN_CONNECTIONS,
            },
        ));
        tracing::info!(
            %addr, %admin_addr, upstream = %config.upstream,
            max_batch_messages = config.max_batch_messages,
            linger = %config.linger,
            "inletd ready"
        );

        shutdown.await;
        let report = shutdown::drain(&phases, config.shutdown_grace.0, || held.held_bytes()).await;
        // It holds a batcher handle: the worker ends only once every handle is gone.
        drop(held);
        stop_http.cancel();
        for task in [producers, admin, upkeep] {
            let _ = task.await;
        }
        // With the router gone the last batcher handle drops and the worker ends; a
        // connection task that outlived the listener may still hold one, so the wait is bounded.
        let _ = tokio::time::timeout(shutdown::TASK_EXIT, worker).await;
        let _ = tokio::time::timeout(shutdown::TASK_EXIT, dispatch).await;
        tracing::info!(complete = report.complete, took = ?report.took, "inletd stopped");
        Ok(report)
    }
}
