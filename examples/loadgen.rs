//! `loadgen`: a closed-loop HTTP/1.1 load generator for the inletd benchmark
//! (`bench/run.sh`).
//!
//! It opens `--connections` persistent keep-alive connections (hyper's
//! low-level `client::conn::http1` over a tokio `TcpStream`), and on each one
//! sends one `POST` at a time to `--url`: a valid AEP streaming message of about
//! `--message-bytes` bytes whose `body.xdmEntity._id` is unique per request.
//! The next request on a connection leaves when the previous answer is in
//! (closed loop), or, with `--rate`, no earlier than its slot in an even
//! schedule of that many messages per second in total.
//!
//! After `--warmup`, for `--duration`, it counts answers: a success is a `200`
//! (`--expect-status`) whose body contains `--expect` (default `xactionId`,
//! which inletd, the AEP stand-in's single endpoint and `trivial200` all
//! return); anything else is an error (other statuses, `200` without the marker, connection errors,
//! timeouts). Latencies of successes go into an HDR histogram. Requests still
//! open when the window closes are abandoned, so the run is bounded by
//! warmup + duration (+ a short join). At the end it prints ONE JSON line:
//!
//! ```json
//! {"url":"…","connections":512,"duration_s":10.0,"ok":N,"errors":N,
//!  "status_counts":{"200":N},"msgs_per_s":…,"p50_ms":…,"p90_ms":…,"p99_ms":…,"max_ms":…, …}
//! ```
//!
//! Only `127.0.0.1` / `localhost` targets are accepted. `--header` adds request
//! headers, e.g. `--header "Prefer: respond-async" --expect-status 202 --expect ""`
//! for fire-and-forget producers. `--ids-out PATH` writes the `_id` of every
//! request answered with the expected status (warmup included), one a line:
//! the set a fire-and-forget run was promised (`bench/spool.sh` compares it
//! with what the stand-in received).
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080/collection/abc \
//!     --connections 512 --duration 10s --warmup 2s --message-bytes 1024
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

#[derive(Parser, Debug)]
#[command(about = "Closed-loop HTTP/1.1 load generator for AEP-style single-message ingestion")]
struct Args {
    /// Target URL, e.g. http://127.0.0.1:8080/collection/CONNECTION_ID (127.0.0.1 only).
    #[arg(long)]
    url: String,
    /// Number of persistent keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Length of the measured window.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load before the measured window (not counted).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Approximate size of each message body in bytes (minimum: the bare envelope).
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    /// Total request rate in messages per second (default: unlimited, closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Per-request timeout (counted as an error).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Substring a success body must contain ("" disables the check).
    #[arg(long, default_value = "xactionId")]
    expect: String,
    /// Status that counts as success (e.g. 202 with `Prefer: respond-async`).
    #[arg(long, default_value_t = 200)]
    expect_status: u16,
    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Runtime worker threads (default: number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Write the `_id` of every success (warmup included) to this file, one a line.
    #[arg(long, value_name = "PATH")]
    ids_out: Option<std::path::PathBuf>,
}

/// Where and what to send; shared by all connections.
struct Target {
    addr: SocketAddr,
    uri: Uri,
    host: HeaderValue,
    /// The message with a placeholder `_id` at `id_at..id_at + ID_LEN`.
    template: Vec<u8>,
    id_at: usize,
    /// Run nonce (hex, 8 chars) so ids stay unique across runs.
    nonce: [u8; 8],
    expect: Vec<u8>,
    expect_status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    /// Keep the `_id`s of successes (`--ids-out`).
    keep_ids: bool,
}

/// `_id` = `{nonce:8 hex}-{connection:6}-{sequence:12}`.
const ID_LEN: usize = 8 + 1 + 6 + 1 + 12;
/// Keep at most this much of a response body for the `--expect` check.
const MAX_BODY_KEEP: usize = 64 * 1024;

/// The measurement window and hard stop, shared by all connections.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
}

#[derive(Default, Serialize)]
struct ErrorKinds {
    connect: u64,
    io: u64,
    timeout: u64,
    bad_status: u64,
    bad_body: u64,
}

/// One connection's counters; merged at the end (no sharing while running).
struct Stats {
    ok: u64,
    errors: u64,
    kinds: ErrorKinds,
    status: BTreeMap<u16, u64>,
    hist: Histogram<u64>,
    reconnects: u64,
    /// `_id`s answered with the expected status, at any time (`--ids-out`).
    ids: Vec<[u8; ID_LEN]>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            ok: 0,
            errors: 0,
            kinds: ErrorKinds::default(),
            status: BTreeMap::new(),
            // Microseconds, 1 us .. 10 min, 3 significant figures.
            hist: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
            reconnects: 0,
            ids: Vec::new(),
        }
    }

    fn merge(&mut self, o: &mut Stats) {
        self.ids.append(&mut o.ids);
        self.ok += o.ok;
        self.errors += o.errors;
        self.kinds.connect += o.kinds.connect;
        self.kinds.io += o.kinds.io;
        self.kinds.timeout += o.kinds.timeout;
        self.kinds.bad_status += o.kinds.bad_status;
        self.kinds.bad_body += o.kinds.bad_body;
        for (k, v) in &o.status {
            *self.status.entry(*k).or_insert(0) += v;
        }
        self.reconnects += o.reconnects;
        // Same bounds on both sides: cannot fail.
        let _ = self.hist.add(&o.hist);
    }
}

/// Refuses anything that is not plain http to 127.0.0.1 / localhost.
fn parse_target(url: &str) -> Result<(SocketAddr, Uri, HeaderValue), String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad --url {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--url must be http://… (got {url:?})"));
    }
    let host = uri.host().unwrap_or("");
    if host != "127.0.0.1" && host != "localhost" {
        return Err(format!(
            "refusing target host {host:?}: only 127.0.0.1 / localhost are allowed"
        ));
    }
    let port = uri.port_u16().unwrap_or(80);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let pq = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let path: Uri = pq.parse().map_err(|e| format!("bad path {pq:?}: {e}"))?;
    let host_header = HeaderValue::from_str(&format!("{host}:{port}"))
        .map_err(|e| format!("bad host header: {e}"))?;
    Ok((addr, path, host_header))
}

/// Parses `Name: value`.
fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("bad --header {text:?}: expected `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|e| format!("bad header name in {text:?}: {e}"))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|e| format!("bad header value in {text:?}: {e}"))?;
    Ok((name, value))
}

/// Builds the message template; returns it and the offset of the `_id` placeholder.
fn build_template(message_bytes: usize) -> (Vec<u8>, usize) {
    const SCHEMA: &str = r#"{"id":"https://ns.adobe.com/x/schemas/y","contentType":"application/vnd.adobe.xed-full+json;version=1"}"#;
    let head = format!(
        r#"{{"header":{{"schemaRef":{SCHEMA},"imsOrgId":"ORG@AdobeOrg","datasetId":"ds1","source":{{"name":"bench"}}}},"body":{{"xdmMeta":{{"schemaRef":{SCHEMA}}},"xdmEntity":{{"_id":""#
    );
    let mid = r#"","pad":""#;
    let tail = r#""}}}"#;
    let fixed = head.len() + ID_LEN + mid.len() + tail.len();
    let pad = message_bytes.saturating_sub(fixed);
    let mut t = Vec::with_capacity(fixed + pad);
    t.extend_from_slice(head.as_bytes());
    let id_at = t.len();
    t.resize(t.len() + ID_LEN, b'0');
    t.extend_from_slice(mid.as_bytes());
    t.resize(t.len() + pad, b'x');
    t.extend_from_slice(tail.as_bytes());
    (t, id_at)
}

/// Writes `n` as zero-padded decimal filling `out` (keeps the low digits).
fn write_dec(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Fills `buf` with the next message (reusing its allocation when the previous
/// request's body has been dropped) and returns it as `Bytes`.
fn next_body(t: &Target, buf: &mut BytesMut, conn: usize, seq: u64) -> Bytes {
    buf.reserve(t.template.len());
    buf.extend_from_slice(&t.template);
    let id = &mut buf[t.id_at..t.id_at + ID_LEN];
    id[..8].copy_from_slice(&t.nonce);
    id[8] = b'-';
    write_dec(&mut id[9..15], conn as u64);
    id[15] = b'-';
    write_dec(&mut id[16..], seq);
    buf.split().freeze()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

enum Outcome {
    /// Status and whether the body carried the expected marker.
    Answer(u16, bool),
    Io,
}

/// Sends one request and reads its whole answer into `resp_buf`.
async fn exchange(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
    expect: &[u8],
    resp_buf: &mut Vec<u8>,
) -> Outcome {
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(_) => return Outcome::Io,
    };
    let status = resp.status().as_u16();
    let mut body: Incoming = resp.into_body();
    let mut pinned = Pin::new(&mut body);
    resp_buf.clear();
    while let Some(frame) = std::future::poll_fn(|cx| pinned.as_mut().poll_frame(cx)).await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    let room = MAX_BODY_KEEP.saturating_sub(resp_buf.len());
                    resp_buf.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Err(_) => return Outcome::Io,
        }
    }
    Outcome::Answer(status, contains(resp_buf, expect))
}

/// One connection's closed loop. Returns when the window has closed.
async fn connection(
    idx: usize,
    conns: usize,
    t: Arc<Target>,
    w: Window,
    interval: Option<Duration>,
) -> Stats {
    let mut st = Stats::new();
    let mut seq: u64 = 0;
    let mut body_buf = BytesMut::with_capacity(t.template.len());
    let mut resp_buf = Vec::with_capacity(1024);
    // Spread paced connections evenly over one interval.
    let mut next_send = interval.map(|iv| Instant::now() + iv.mul_f64(idx as f64 / conns as f64));

    'reconnect: loop {
        let now = Instant::now();
        if now >= w.end {
            break;
        }
        let stream =
            match timeout_at((now + t.timeout).min(w.end), TcpStream::connect(t.addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(_)) | Err(_) => {
                    let at = Instant::now();
                    if w.contains(at) {
                        st.errors += 1;
                        st.kinds.connect += 1;
                    }
                    sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            match http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await {
                Ok(x) => x,
                Err(_) => {
                    if w.contains(Instant::now()) {
                        st.errors += 1;
                        st.kinds.connect += 1;
                    }
                    sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
        // Drives the connection; aborted when we leave it (dropping the
        // sender also ends it).
        let driver = tokio::spawn(conn);
        st.reconnects += 1;

        loop {
            if let (Some(iv), Some(ns)) = (interval, next_send.as_mut()) {
                let now = Instant::now();
                if *ns > now {
                    if *ns >= w.end {
                        driver.abort();
                        break 'reconnect;
                    }
                    sleep_until(*ns).await;
                }
                // Late sends do not accumulate a burst: at most one catch-up slot.
                *ns = (*ns + iv).max(Instant::now());
            }
            if Instant::now() >= w.end {
                driver.abort();
                break 'reconnect;
            }
            // The server may have closed the connection (e.g. after an error
            // answer): that is not a failed request, just reconnect.
            if std::future::poll_fn(|cx| sender.poll_ready(cx))
                .await
                .is_err()
            {
                driver.abort();
                continue 'reconnect;
            }
            seq += 1;
            let body = next_body(&t, &mut body_buf, idx, seq);
            let mut id = [0u8; ID_LEN];
            if t.keep_ids {
                id.copy_from_slice(&body[t.id_at..t.id_at + ID_LEN]);
            }
            let mut req = Request::new(Full::new(body));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = t.uri.clone();
            let h = req.headers_mut();
            h.insert(HOST, t.host.clone());
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            for (name, value) in &t.headers {
                h.insert(name.clone(), value.clone());
            }

            let started = Instant::now();
            let deadline = started + t.timeout;
            let res = timeout_at(
                deadline.min(w.end),
                exchange(&mut sender, req, &t.expect, &mut resp_buf),
            )
            .await;
            let done = Instant::now();
            let counted = w.contains(done);
            match res {
                Ok(Outcome::Answer(status, marker)) => {
                    if t.keep_ids && status == t.expect_status && marker {
                        st.ids.push(id);
                    }
                    if counted {
                        *st.status.entry(status).or_insert(0) += 1;
                        if status == t.expect_status && marker {
                            st.ok += 1;
                            let us = done.duration_since(started).as_micros() as u64;
                            st.hist.saturating_record(us.max(1));
                        } else {
                            st.errors += 1;
                            if status == t.expect_status {
                                st.kinds.bad_body += 1;
                            } else {
                                st.kinds.bad_status += 1;
                            }
                        }
                    }
                }
                Ok(Outcome::Io) => {
                    if counted {
                        st.errors += 1;
                        st.kinds.io += 1;
                    }
                    driver.abort();
                    continue 'reconnect;
                }
                Err(_) => {
                    // A real timeout counts; a request cut by the window's
                    // end is abandoned and not counted.
                    if deadline < w.end && done >= w.start {
                        st.errors += 1;
                        st.kinds.timeout += 1;
                    }
                    driver.abort();
                    continue 'reconnect;
                }
            }
        }
    }
    st
}

/// The one JSON line printed at the end (fields in this order).
#[derive(Serialize)]
struct Report {
    url: String,
    connections: usize,
    duration_s: f64,
    ok: u64,
    errors: u64,
    status_counts: BTreeMap<String, u64>,
    msgs_per_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    warmup_s: f64,
    message_bytes: usize,
    rate: Option<f64>,
    error_kinds: ErrorKinds,
    /// Connections opened (the initial ones plus reconnects).
    connects: u64,
    /// Connection tasks that did not stop in time (their counts are lost).
    lost_workers: u64,
    /// CPU seconds (user + system) this process used, warmup included
    /// (Linux only; null elsewhere).
    cpu_s: Option<f64>,
}

/// User + system CPU seconds of this process, from `/proc/self/stat`.
/// Assumes the usual 100 ticks per second.
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name's ")": state is 1st, utime 12th, stime 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn run(args: Args, target: Target) -> (Report, Vec<[u8; ID_LEN]>) {
    let t = Arc::new(target);
    let conns = args.connections.max(1);
    let begin = Instant::now();
    let w = Window {
        start: begin + args.warmup,
        end: begin + args.warmup + args.duration,
    };
    let interval = args
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(conns as f64 / r));

    let handles: Vec<_> = (0..conns)
        .map(|i| tokio::spawn(connection(i, conns, t.clone(), w, interval)))
        .collect();

    let mut total = Stats::new();
    let mut lost_workers = 0u64;
    // Workers stop by themselves at w.end; this is only a safety net.
    let hard_stop = w.end + Duration::from_secs(5);
    for h in handles {
        let abort = h.abort_handle();
        match timeout_at(hard_stop, h).await {
            Ok(Ok(mut s)) => total.merge(&mut s),
            _ => {
                abort.abort();
                lost_workers += 1;
            }
        }
    }

    let secs = args.duration.as_secs_f64();
    let h = &total.hist;
    let q = |x: f64| {
        if h.is_empty() {
            0.0
        } else {
            ms(h.value_at_quantile(x))
        }
    };
    let report = Report {
        url: args.url,
        connections: conns,
        duration_s: secs,
        ok: total.ok,
        errors: total.errors,
        status_counts: total
            .status
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        msgs_per_s: (total.ok as f64 / secs * 10.0).round() / 10.0,
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
        max_ms: ms(h.max()),
        mean_ms: if h.is_empty() {
            0.0
        } else {
            h.mean().round() / 1000.0
        },
        warmup_s: args.warmup.as_secs_f64(),
        message_bytes: t.template.len(),
        rate: args.rate,
        error_kinds: total.kinds,
        connects: total.reconnects,
        lost_workers,
        cpu_s: own_cpu_seconds(),
    };
    (report, std::mem::take(&mut total.ids))
}

fn main() {
    let args = Args::parse();
    let (addr, uri, host) = match parse_target(&args.url) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    if args.duration.is_zero() {
        eprintln!("loadgen: --duration must be > 0");
        std::process::exit(2);
    }
    let mut headers = Vec::with_capacity(args.headers.len());
    for h in &args.headers {
        match parse_header(h) {
            Ok(x) => headers.push(x),
            Err(e) => {
                eprintln!("loadgen: {e}");
                std::process::exit(2);
            }
        }
    }
    let (template, id_at) = build_template(args.message_bytes);
    if let Err(e) = serde_json::from_slice::<Value>(&template) {
        eprintln!("loadgen: internal error, message template is not JSON: {e}");
        std::process::exit(1);
    }
    let nonce_src = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32);
    let mut nonce = [0u8; 8];
    for (i, b) in nonce.iter_mut().enumerate() {
        let nib = ((nonce_src >> (i * 4)) & 0xf) as u8;
        *b = if nib < 10 {
            b'0' + nib
        } else {
            b'a' + nib - 10
        };
    }
    let target = Target {
        addr,
        uri,
        host,
        template,
        id_at,
        nonce,
        expect: args.expect.as_bytes().to_vec(),
        expect_status: args.expect_status,
        headers,
        timeout: args.timeout,
        keep_ids: args.ids_out.is_some(),
    };
    let ids_out = args.ids_out.clone();

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    let (report, ids) = rt.block_on(run(args, target));
    if let Some(path) = ids_out {
        let mut text = Vec::with_capacity(ids.len() * (ID_LEN + 1));
        for id in &ids {
            text.extend_from_slice(id);
            text.push(b'\n');
        }
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("loadgen: --ids-out {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    match serde_json::to_string(&report) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("loadgen: cannot encode report: {e}"),
    }
    // Do not wait for abandoned connection tasks.
    rt.shutdown_timeout(Duration::from_millis(100));
}
