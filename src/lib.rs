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
//! [`shutdown`] (the drain phases), [`server`] (the accept loop), [`keepalive`]
//! (when a connection closes after an answer),
//! [`dead_letters`] (the `dead-letters` subcommand: list and resend),
//! [`supervise`] (the batcher and dispatch tasks' liveness), [`reload`]
//! (SIGHUP: the log level re-read), [`build_info`] (the version, git revision
//! and build date).
//! The AEP stand-in used offline and in the tests is its own crate (`standin/`).

#![forbid(unsafe_code)]

pub mod admin;
pub mod batcher;
pub mod build_info;
pub mod config;
pub mod dead_letters;
pub mod error;
pub mod healthcheck;
pub mod ims;
pub mod ingest;
pub mod keepalive;
pub mod metrics;
pub mod reload;
pub mod reply;
pub mod server;
pub mod shutdown;
pub mod spool;
pub mod supervise;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
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
    #[error(transparent)]
    Tls(#[from] upstream::tls::TlsError),
    #[error("IMS credentials: {0}")]
    Ims(#[from] ims::ProviderError),
    #[error(transparent)]
    Spool(#[from] spool::OpenError),
}

/// A bound, not yet running inletd. Ports may be 0; [`App::addr`] tells the real ones.
pub struct App {
    config: Config,
    listener: TcpListener,
    admin_listener: TcpListener,
    /// The spool's file operations: the real ones unless a test injects faults.
    spool_storage: Option<Arc<dyn spool::Storage>>,
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
            spool_storage: None,
        })
    }

    /// Runs the spool (with `spool_dir`) over `storage` instead of the real
    /// files' operations: how tests inject a full disk or an I/O error.
    pub fn with_spool_storage(mut self, storage: Arc<dyn spool::Storage>) -> App {
        self.spool_storage = Some(storage);
        self
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

    /// Serves until `shutdown` resolves, then drains (see [`shutdown`]): start
    /// the pipeline, start the listeners, wait, drain, stop.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<DrainReport, StartError> {
        let (addr, admin_addr) = (self.addr(), self.admin_addr());
        let App {
            config,
            listener,
            admin_listener,
            spool_storage,
        } = self;
        let running = Running {
            metrics: metrics::Metrics::for_config(&config),
            phases: shutdown::Phases {
                draining: CancellationToken::new(),
                work: TaskTracker::new(),
                abort: CancellationToken::new(),
            },
            stop_http: CancellationToken::new(),
            liveness: supervise::Liveness::default(),
        };
        let pipeline = running.start_pipeline(&config, spool_storage).await?;
        let listeners = running.start_listeners(&config, listener, admin_listener, &pipeline);
        tracing::info!(
            %addr, %admin_addr, upstream = %config.upstream,
            max_batch_messages = config.max_batch_messages,
            linger = %config.linger,
            "inletd ready"
        );
        shutdown.await;
        let held = &pipeline.ingest;
        let report = shutdown::drain(&running.phases, config.shutdown_grace.0, || {
            held.held_bytes()
        })
        .await;
        running.stop(pipeline, listeners).await;
        tracing::info!(complete = report.complete, took = ?report.took, "inletd stopped");
        Ok(report)
    }
}

/// What every part of a running inletd shares.
struct Running {
    metrics: Arc<metrics::Metrics>,
    phases: shutdown::Phases,
    /// Stops the listeners and the metrics upkeep; from then on the batcher
    /// and dispatch tasks may end.
    stop_http: CancellationToken,
    liveness: supervise::Liveness,
}

/// The message path behind the producer routes, and its two background tasks.
struct Pipeline {
    /// Holds a batcher handle: the worker ends only once every handle is gone.
    ingest: ingest::Ingest,
    worker: JoinHandle<()>,
    dispatch: JoinHandle<()>,
    /// inletd's IMS token provider, where it holds credentials.
    ims: Option<ims::TokenProvider>,
    /// Closed last, once nothing can ack or dead-letter any more.
    spool: Option<spool::Spool>,
    /// The spool's feeder: stops by itself at the drain; aborted at the end in case it waits.
    replay: Option<JoinHandle<()>>,
}

/// The tasks serving HTTP (and the metrics upkeep, stopped with them).
struct Listeners {
    producers: JoinHandle<()>,
    admin: JoinHandle<()>,
    upkeep: JoinHandle<()>,
}

impl Running {
    /// The upstream client, the batcher worker and the dispatch loop, both
    /// supervised: they end only once the listeners stopped, earlier is a death.
    /// With `spool_dir`: the spool opened, and its feeder started.
    async fn start_pipeline(
        &self,
        config: &Config,
        storage: Option<Arc<dyn spool::Storage>>,
    ) -> Result<Pipeline, StartError> {
        let opened = match &config.spool_dir.0 {
            Some(dir) => Some(open_spool(config, dir.clone(), storage, &self.metrics).await?),
            None => None,
        };
        let patience =
            upstream::Patience::new(config.request_timeout.0, self.phases.draining.clone());
        let upstream = upstream::Upstream::with_patience(config, self.metrics.clone(), patience)?;
        // Fetched in the background: start-up never waits for IMS (`/readyz` does).
        // Supervised like the others: without it no token would be renewed.
        let ims = upstream.ims().cloned();
        if let Some(ims) = &ims {
            let stop = self.stop_http.clone();
            self.liveness
                .spawn("ims refresher", stop.clone(), ims.clone().run(stop));
            self.metrics.watch_ims(ims.clone());
        }
        let limits = batcher::Limits {
            max_messages: config.max_batch_messages,
            max_bytes: config.max_batch_bytes,
        };
        let (handle, worker, batches) = batcher::batcher(
            limits,
            batcher::Pacing::new(config.linger.0, config.max_in_flight),
            self.phases.draining.clone(),
            self.metrics.clone(),
        );
        let worker = self
            .liveness
            .spawn("batcher", self.stop_http.clone(), worker.run());
        let dispatch = self.liveness.spawn(
            "dispatch",
            self.stop_http.clone(),
            upstream
                .clone()
                .dispatch(batches, self.phases.work.clone(), self.phases.abort.clone()),
        );
        let ingest = ingest::Ingest::new(
            config,
            limits,
            handle,
            upstream,
            self.metrics.clone(),
            &self.phases,
            opened.as_ref().map(|(spool, _)| spool.clone()),
        );
        let (spool, replay) = match opened {
            Some((spool, feed)) => {
                let task = ingest
                    .clone()
                    .feed(feed, spool.clone(), config.spool_max_age.0);
                // Supervised: ending before the drain would strand what waits on disk.
                let draining = self.phases.draining.clone();
                let task = self.liveness.spawn("spool feeder", draining, task);
                (Some(spool), Some(task))
            }
            None => (None, None),
        };
        Ok(Pipeline {
            ingest,
            worker,
            dispatch,
            ims,
            spool,
            replay,
        })
    }

    /// The producer and admin listeners, and the metrics upkeep.
    fn start_listeners(
        &self,
        config: &Config,
        listener: TcpListener,
        admin_listener: TcpListener,
        pipeline: &Pipeline,
    ) -> Listeners {
        let producers = tokio::spawn(server::serve(
            listener,
            ingest::router(pipeline.ingest.clone()),
            self.stop_http.clone(),
            server::Limits {
                idle_timeout: config.producer_idle_timeout.0,
                max_connections: config.max_connections,
                keepalive: keepalive::Policy::new(
                    Some(self.phases.draining.clone()),
                    config.max_connection_age.0,
                    config.max_connection_requests,
                ),
            },
        ));
        let admin = tokio::spawn(server::serve(
            admin_listener,
            admin::router(
                self.metrics.clone(),
                self.phases.draining.clone(),
                self.liveness.clone(),
                pipeline.ims.clone(),
            ),
            self.stop_http.clone(),
            server::Limits {
                idle_timeout: config.producer_idle_timeout.0,
                max_connections: server::MAX_ADMIN_CONNECTIONS,
                keepalive: keepalive::Policy::default(),
            },
        ));
        let upkeep = tokio::spawn(metrics::upkeep(
            self.metrics.clone(),
            self.stop_http.clone(),
        ));
        Listeners {
            producers,
            admin,
            upkeep,
        }
    }

    /// After the drain: the listeners stop (each lets its connections finish
    /// for [`shutdown::CONNECTIONS_FINISH`]), then the worker and the dispatch
    /// loop end, each waited for at most [`shutdown::TASK_EXIT`].
    async fn stop(self, pipeline: Pipeline, listeners: Listeners) {
        let Pipeline {
            ingest,
            worker,
            dispatch,
            spool,
            replay,
            ..
        } = pipeline;
        if let Some(replay) = replay {
            replay.abort();
        }
        // The worker ends only once every batcher handle is gone, this one included.
        drop(ingest);
        self.stop_http.cancel();
        for task in [listeners.producers, listeners.admin, listeners.upkeep] {
            let _ = task.await;
        }
        // With the router gone the last batcher handle drops and the worker ends; a
        // connection task that outlived the listener may still hold one, so the wait is bounded.
        let _ = tokio::time::timeout(shutdown::TASK_EXIT, worker).await;
        let _ = tokio::time::timeout(shutdown::TASK_EXIT, dispatch).await;
        if let Some(spool) = spool {
            // Undelivered records stay for the next start.
            spool.close().await;
        }
    }
}

/// Opens `spool_dir` (blocking: it reads every segment once) with its
/// metrics attached.
async fn open_spool(
    config: &Config,
    dir: std::path::PathBuf,
    storage: Option<Arc<dyn spool::Storage>>,
    metrics: &Arc<metrics::Metrics>,
) -> Result<(spool::Spool, spool::Feed), StartError> {
    let mut options = spool::SpoolOptions::new(dir.clone());
    if let Some(storage) = storage {
        options.storage = storage;
    }
    options.max_spool_bytes = config.max_spool_bytes;
    options.on_sync = Some(metrics.spool.sync_observer());
    let opened = tokio::task::spawn_blocking(move || spool::Spool::open(options)).await;
    let (spool, feed) = match opened {
        Ok(result) => result?,
        Err(e) => {
            return Err(StartError::Spool(spool::OpenError {
                dir,
                what: "opening was interrupted",
                source: std::io::Error::other(e.to_string()),
            }))
        }
    };
    // The spool logs what it found itself (segments, undelivered, damage).
    metrics.spool.attach(spool.stats(), config.max_spool_bytes);
    Ok((spool, feed))
}
