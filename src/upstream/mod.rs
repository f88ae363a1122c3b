//! The upstream: one pooled keep-alive client, at most `max_in_flight`
//! requests at once, and the delivery of each [`Batch`] until every message in
//! it has an outcome.
//!
//! Layout: [`answer`] reads and classifies an answer, [`retry`] decides when to
//! resend, [`deliver`] walks a batch through retries, splits and bisection,
//! [`forward`] carries the requests that cannot be batched one-to-one.

pub mod answer;
mod deliver;
pub mod forward;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batcher::{Batch, BatchKey, Message};
use crate::config::{Config, UpstreamUrl};
use crate::metrics::Metrics;
pub use retry::RetryPolicy;

/// The outcome of one HTTP exchange with the upstream.
#[derive(Debug)]
pub enum Exchange {
    Answered {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: Bytes,
    },
    /// No answer: `connect` when the request surely never left, `timeout` when it ran out of time.
    Failed {
        connect: bool,
        timeout: bool,
        reason: String,
    },
}

/// The pooled client and its in-flight limit, shared by every delivery.
pub struct Upstream {
    client: reqwest::Client,
    base: UpstreamUrl,
    in_flight: Arc<Semaphore>,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<Upstream>, reqwest::Error> {
        // rustls; HTTPS_PROXY / NO_PROXY are honoured by reqwest's system proxy support.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(config.max_in_flight)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("inletd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Arc::new(Upstream {
            client,
            base: config.upstream.clone(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            retry: RetryPolicy::new(
                config.max_retries,
                config.retry_initial_backoff.0,
                config.retry_max_backoff.0,
            ),
            metrics,
        }))
    }

    /// Takes flushed batches and delivers each in its own task (tracked, so
    /// shutdown can wait for them). Ends when the batcher ends.
    /// `abort` drops deliveries still running when the drain deadline passes.
    pub async fn dispatch(
        self: Arc<Self>,
        mut batches: mpsc::UnboundedReceiver<Batch>,
        tracker: TaskTracker,
        abort: CancellationToken,
    ) {
        while let Some(batch) = batches.recv().await {
            tracker.spawn(crate::shutdown::abortable(
                abort.clone(),
                self.clone().deliver(batch),
            ));
        }
    }

    /// Sends one request under the in-flight limit, recording its metrics. The
    /// wait for a slot counts against `deadline`; nothing is sent once it passed.
    /// The request is built only once a slot is held, so batches waiting for a
    /// slot do not also hold a copy of their body.
    async fn exchange(
        &self,
        request: impl FnOnce() -> reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Exchange {
        let Ok(_permit) = self.in_flight.acquire().await else {
            return Exchange::Failed {
                connect: true,
                timeout: false,
                reason: "inletd is stopping".into(),
            };
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        if timeout.is_zero() {
            return Exchange::Failed {
                connect: true,
                timeout: true,
                reason: "the deadline passed while waiting for an upstream slot".into(),
            };
        }
        let request = request();
        self.metrics.in_flight.increment(1.0);
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, async {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            // Taken, not cloned: the body read below consumes the response.
            let headers = std::mem::take(response.headers_mut());
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        })
        .await;
        self.metrics.in_flight.decrement(1.0);
        self.metrics.upstream_latency(started.elapsed());
        match result {
            Ok(Ok((status, headers, body))) => {
                self.metrics.upstream_request(status);
                Exchange::Answered {
                    status,
                    headers,
                    body,
                }
            }
            Ok(Err(e)) => {
                let timeout = e.is_timeout();
                self.metrics
                    .upstream_failure(if timeout { "timeout" } else { "error" });
                Exchange::Failed {
                    connect: e.is_connect(),
                    timeout,
                    // Without the URL: it may carry credentials, and the key is logged anyway.
                    reason: error_chain(&e.without_url()),
                }
            }
            Err(_) => {
                self.metrics.upstream_failure("timeout");
                Exchange::Failed {
                    connect: false,
                    timeout: true,
                    reason: format!("no answer within {}", humantime::format_duration(timeout)),
                }
            }
        }
    }

    /// A batch request for `messages` under `key`'s credentials.
    fn batch_request(&self, key: &BatchKey, messages: &[Message]) -> reqwest::RequestBuilder {
        let url = self
            .base
            .endpoint(&["collection", "batch", key.connection_id()], None);
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(envelope(messages));
        for (name, value) in key.credentials() {
            request = request.header(name, value);
        }
        request
    }
}

/// `{"messages":[M1,M2,...]}` from the producers' bytes as received.
pub fn envelope(messages: &[Message]) -> Bytes {
    let payload: usize = messages.iter().map(|m| m.body.len()).sum();
    let mut body = Vec::with_capacity(crate::batcher::body_len(messages.len(), payload));
    body.extend_from_slice(br#"{"messages":["#);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&m.body);
    }
    body.extend_from_slice(b"]}");
    Bytes::from(body)
}

/// The error and its causes on one line (reqwest hides the useful part in `source`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
