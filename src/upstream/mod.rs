//! The upstream: one pooled keep-alive client, at most `max_in_flight`
//! requests at once, and the delivery of each [`Batch`] until every message in
//! it has an outcome.
//!
//! Layout: [`envelope`] is a batch's request body, streamed from the
//! messages' own bytes; [`exchange`] performs one HTTP exchange and says what
//! came of it (not sent, sent without an answer, answered); [`answer`] reads and
//! classifies an answer; [`retry`] decides when to resend; [`deliver`] walks a
//! batch through retries and splits, with [`bisect`] for whole-batch 400s, over
//! the [`Transport`] seam so tests can script the upstream; [`forward`] carries
//! the requests that cannot be batched one-to-one.

pub mod answer;
mod bisect;
mod deliver;
#[cfg(test)]
mod deliver_props;
#[cfg(test)]
mod deliver_spool_tests;
#[cfg(test)]
mod deliver_tests;
mod envelope;
mod exchange;
pub mod forward;
mod patience;
pub mod retry;
#[cfg(test)]
mod scripted;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batcher::{Batch, BatchKey, Message};
use crate::config::{Config, UpstreamUrl};
use crate::ims::{Timing, TokenProvider};
use crate::metrics::Metrics;
use crate::StartError;
pub use envelope::Envelope;
pub use exchange::{no_token_retry_after, AnswerBody, Exchange, Silence};
pub use patience::Patience;
pub use retry::RetryPolicy;

/// The pooled client and its in-flight limit, shared by every delivery.
pub struct Upstream {
    client: reqwest::Client,
    base: UpstreamUrl,
    in_flight: Arc<Semaphore>,
    retry: RetryPolicy,
    /// The most an answer body may take (see [`exchange::body_limit`]).
    body_limit: usize,
    metrics: Arc<Metrics>,
    /// inletd's own IMS credentials, for managed keys (see [`exchange`]).
    ims: Option<TokenProvider>,
    /// How spooled messages are delivered (no producer deadline).
    patience: Patience,
}

impl Upstream {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<Upstream>, StartError> {
        Upstream::with_patience(
            config,
            metrics,
            Patience::new(config.request_timeout.0, CancellationToken::new()),
        )
    }

    /// [`Upstream::new`] whose spooled deliveries stop being resent once
    /// `patience.draining` is cancelled.
    pub fn with_patience(
        config: &Config,
        metrics: Arc<Metrics>,
        patience: Patience,
    ) -> Result<Arc<Upstream>, StartError> {
        // rustls with our roots and ALPN (see `tls`); HTTPS_PROXY / NO_PROXY are
        // honoured by reqwest's system proxy support, tunnelling with CONNECT.
        let tls = tls::client_config(
            config.upstream_ca_file.0.as_deref(),
            config.upstream_system_roots.0,
        )?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .pool_max_idle_per_host(config.max_in_flight)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            // A redirect would resend the batch, credentials included, to
            // wherever it points: a 3xx is an answer, not a new destination.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("inletd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let ims = match config.ims.get() {
            Some(ims) => Some(TokenProvider::for_ims(ims, Timing::default())?),
            None => None,
        };
        Ok(Arc::new(Upstream {
            client,
            base: config.upstream.clone(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            retry: RetryPolicy::new(
                config.max_retries,
                config.retry_initial_backoff.0,
                config.retry_max_backoff.0,
            ),
            body_limit: exchange::body_limit(config.max_batch_messages),
            metrics,
            ims,
            patience,
        }))
    }

    /// The token provider, where inletd holds IMS credentials (for its
    /// refresher, `/readyz` and the metrics).
    pub fn ims(&self) -> Option<&TokenProvider> {
        self.ims.as_ref()
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

    /// A batch request for `messages` under `key`'s credentials.
    fn batch_request(&self, key: &BatchKey, messages: &[Message]) -> reqwest::RequestBuilder {
        let url = self
            .base
            .endpoint(&["collection", "batch", key.connection_id()], None);
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(reqwest::Body::wrap(Envelope::new(messages)));
        for (name, value) in key.credentials() {
            // Sensitive: no HTTP library debug output prints a credential.
            let mut value = value.clone();
            value.set_sensitive(true);
            request = request.header(name, value);
        }
        request
    }
}

/// The seam between the delivery logic and HTTP: one batch request for
/// `messages` under `key`, answered (or not) before `deadline`. [`Upstream`]
/// is the real one; tests script the upstream's answers through it.
pub trait Transport: Send + Sync {
    fn send_batch(
        &self,
        key: &BatchKey,
        messages: &[Message],
        deadline: Instant,
    ) -> impl std::future::Future<Output = Exchange> + Send;
}

impl Transport for Upstream {
    async fn send_batch(
        &self,
        key: &BatchKey,
        messages: &[Message],
        deadline: Instant,
    ) -> Exchange {
        self.exchange_for(
            key.managed(),
            || self.batch_request(key, messages),
            deadline,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};
    use bytes::Bytes;

    #[test]
    fn credentials_go_upstream_marked_sensitive() {
        let metrics = Metrics::new(1 << 20);
        let upstream = Upstream::new(&Config::defaults(), metrics).expect("client builds");
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer secret"));
        headers.insert("x-api-key", HeaderValue::from_static("key"));
        let key = BatchKey::new("c", &headers);
        let request = upstream
            .batch_request(&key, &[])
            .build()
            .expect("request builds");
        for name in ["authorization", "x-api-key"] {
            let value = &request.headers()[name];
            assert!(value.is_sensitive(), "{name}");
            assert!(!format!("{value:?}").contains("secret"), "{name}");
        }
    }

    /// One HTTP/1.1 request read off `stream`: its head (lower-cased) and body,
    /// the body read by the head's `content-length` (none: empty).
    async fn read_request(stream: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let end = data.windows(4).position(|w| w == b"\r\n\r\n");
            if let Some(end) = end {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse::<usize>().expect("a length"));
                if data.len() >= end + 4 + len {
                    return (head, data[end + 4..end + 4 + len].to_vec());
                }
            }
            let n = stream.read(&mut buf).await.expect("request readable");
            assert!(n > 0, "connection closed mid-request");
            data.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn a_batch_goes_upstream_whole_with_its_content_length() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let request = read_request(&mut stream).await;
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
            stream.write_all(answer.as_bytes()).await.unwrap();
            request
        });
        let mut config = Config::defaults();
        config.upstream = format!("http://{addr}").parse().unwrap();
        let upstream = Upstream::new(&config, Metrics::new(1 << 20)).expect("client builds");
        let bound = Arc::new(Semaphore::new(1 << 30));
        let metrics = Metrics::new(1 << 30);
        let patience = Duration::from_secs(30);
        let (mut messages, _outcomes) = scripted::messages(3, &bound, &metrics, patience);
        let large = format!(r#"{{"x":"{}"}}"#, "y".repeat(envelope::COPY_BELOW));
        messages[1].body = Bytes::from(large.clone());
        let key = BatchKey::new("c", &HeaderMap::new());
        let deadline = Instant::now() + patience;
        let exchange = upstream.send_batch(&key, &messages, deadline).await;
        assert!(
            matches!(exchange, Exchange::Answered { status: 200, .. }),
            "{exchange:?}"
        );
        let (head, body) = server.await.unwrap();
        let expected = format!(r#"{{"messages":["m0",{large},"m2"]}}"#);
        assert_eq!(String::from_utf8_lossy(&body), expected);
        assert!(
            head.contains(&format!("content-length: {}", expected.len())),
            "{head}"
        );
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(head.starts_with("post /collection/batch/c "), "{head}");
    }
}
