//! `trivial200`: the ceiling reference for the inletd benchmark (`bench/run.sh`).
//!
//! A minimal hyper HTTP/1.1 server on a multi-threaded tokio runtime with
//! keep-alive. For every request it reads (and discards) the whole body and
//! answers `200` at once with a small JSON body shaped like AEP's single-message
//! answer:
//!
//! ```json
//! {"inletId":"trivial200","xactionId":"trivial200-…","receivedTimeMs":N,"syncValidation":{"skipped":true}}
//! ```
//!
//! It does no batching, no upstream call and no JSON parsing, so the rate a load
//! generator reaches against it is what the machine (kernel TCP stack, hyper, the
//! load generator itself) can do at all: the number inletd is compared with.
//!
//! ```text
//! cargo run --release --example trivial200 -- --listen 127.0.0.1:8089
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
#[command(about = "Minimal HTTP/1.1 server answering 200 at once (benchmark ceiling)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// Worker threads (default: number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Reads the request body to its end, then answers 200.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut body = req.into_body();
    // Drain the body; a broken body still gets an answer (the connection
    // will be closed by hyper anyway).
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let text = format!(
        r#"{{"inletId":"trivial200","xactionId":"trivial200-{n}","receivedTimeMs":{now_ms},"syncValidation":{{"skipped":true}}}}"#
    );
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("trivial200 listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // E.g. EMFILE: back off briefly instead of spinning.
                eprintln!("accept error: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt.build()?;
    rt.block_on(async move {
        tokio::select! {
            r = serve(args.listen) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
