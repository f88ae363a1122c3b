//! `spool_bench`: measures the durable spool alone (no HTTP): appends per
//! second, messages per fsync (the group-commit factor), sync time and append
//! latency with `--appenders` concurrent tasks, each appending and awaiting
//! one record at a time (as a producer connection waiting for its 202 would).
//! Then it acks everything and reports acks per second.
//!
//! The spool lives in a fresh temporary directory under `--dir` (default: the
//! current directory, since `/tmp` may be a tmpfs where fsync costs nothing).
//! Prints one JSON line.
//!
//! ```text
//! cargo run --release --example spool_bench -- --appenders 64 --messages 200000
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderName, HeaderValue};
use bytes::Bytes;
use clap::Parser;
use inletd::spool::{Record, Spool, SpoolOptions};

#[derive(Parser)]
struct Args {
    /// Concurrent appenders, each with one append in flight.
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// Messages in total.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Body size of each message.
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    /// Ack each record as soon as its append resolved (without waiting for
    /// the ack), as delivery would in steady state: appends then share the
    /// writer with a stream of acks.
    #[arg(long)]
    ack_inline: bool,
    /// Where the temporary spool directory is created.
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
}

fn record(message_bytes: usize) -> Record {
    Record {
        connection_id: "bench-connection".into(),
        credentials: vec![(
            HeaderName::from_static("authorization"),
            HeaderValue::from_static("Bearer bench"),
        )],
        body: Bytes::from(format!(
            "{{\"body\":\"{}\"}}",
            "x".repeat(message_bytes.saturating_sub(11))
        )),
        accepted_at: SystemTime::now(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let tmp = tempfile::tempdir_in(&args.dir)?;
    let mut options = SpoolOptions::new(tmp.path().join("spool"));
    options.max_spool_bytes = u64::MAX;
    let (spool, _) = Spool::open(options)?;
    let record = Arc::new(record(args.message_bytes));

    let per_task = args.messages / args.appenders.max(1);
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.appenders {
        let (spool, record) = (spool.clone(), Arc::clone(&record));
        let ack_inline = args.ack_inline;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(per_task);
            let mut latency = hdrhistogram::Histogram::<u64>::new(3)?;
            for _ in 0..per_task {
                let sent = Instant::now();
                let id = spool.append(&record).await?;
                latency.record(sent.elapsed().as_micros() as u64)?;
                if ack_inline {
                    drop(spool.ack(id)); // sent at once; the answer is not awaited
                } else {
                    ids.push(id);
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((ids, latency))
        }));
    }
    let mut ids = Vec::new();
    let mut latency = hdrhistogram::Histogram::<u64>::new(3)?;
    for task in tasks {
        let (mut got, hist) = task.await?.map_err(|e| e.to_string())?;
        ids.append(&mut got);
        latency.add(hist)?;
    }
    let append_time = began.elapsed();
    let stats = spool.stats();
    let (syncs, synced) = (stats.syncs(), stats.synced_messages());

    let began = Instant::now();
    let acks: Vec<_> = ids.iter().map(|id| spool.ack(*id)).collect();
    for ack in acks {
        ack.await?;
    }
    let ack_time = began.elapsed();
    spool.close().await;

    let n = (per_task * args.appenders) as f64;
    println!(
        "{}",
        serde_json::json!({
            "appenders": args.appenders,
            "messages": per_task * args.appenders,
            "ack_inline": args.ack_inline,
            "message_bytes": args.message_bytes,
            "appends_per_s": (n / append_time.as_secs_f64()).round(),
            "fsyncs": syncs,
            "messages_per_fsync": ((synced as f64 / syncs.max(1) as f64) * 10.0).round() / 10.0,
            "mean_sync_ms": ms(stats.sync_time()) / syncs.max(1) as f64,
            "append_p50_ms": latency.value_at_quantile(0.5) as f64 / 1e3,
            "append_p99_ms": latency.value_at_quantile(0.99) as f64 / 1e3,
            "acks_per_s": (ids.len() as f64 / ack_time.as_secs_f64()).round(),
            "spool_bytes_after_acks": stats.bytes(),
        })
    );
    Ok(())
}
