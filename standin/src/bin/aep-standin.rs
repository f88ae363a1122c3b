//! `aep-standin`: command-line wrapper around [`aep_standin`], a local
//! stand-in for Adobe Experience Platform streaming ingestion. Owns only flag
//! parsing, logging and signal handling; the server lives in the crate's library.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use aep_standin::{Alpn, StandIn, StandInConfig, StandInIms, StandInTls};
use clap::Parser;

/// A local stand-in for Adobe Experience Platform (AEP) streaming ingestion, for
/// trying inletd offline, in tests and in benchmarks. It is NOT AEP: it checks
/// only the shape of messages and keeps what it receives in memory.
///
/// It serves `POST /collection/batch/{id}` (207 multi-status answers) and
/// `POST /collection/{id}` (single messages), plus control endpoints:
/// `POST /standin/faults` (a JSON array such as
/// `[{"kind":"status","status":503,"retry_after":1}]`; kinds: status,
/// short_responses, long_responses, garbage, plain_ok, delay, hang, cut_body,
/// redirect, reset_mid_request, slow_body, odd_codes), `GET /standin/stats`,
/// `GET /standin/messages` (the xactionIds delivered per `body.xdmEntity._id`)
/// and `POST /standin/reset`. With --ims-client-id it also serves an Adobe IMS
/// token endpoint, `POST /ims/token/v3`, steered by `POST /standin/ims`.
/// A message whose body holds
/// `"standin":{"status":503,"times":2}` fails with that status the first 2
/// times it is seen; `"standin":{"poison":true}` makes its whole batch a 400.
#[derive(Debug, Parser)]
#[command(name = "aep-standin", version, verbatim_doc_comment)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,

    /// Delay added to every ingestion request before answering, e.g. `20ms`.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,

    /// Request bodies larger than this many bytes are answered 413.
    #[arg(long, default_value_t = StandInConfig::default().max_body_bytes)]
    max_body_bytes: usize,

    /// Require `Authorization: Bearer <TOKEN>` (missing: 401, wrong: 403).
    #[arg(long)]
    token: Option<String>,

    /// Reject messages whose `header.imsOrgId` is set to another org (per-message 400).
    #[arg(long)]
    ims_org: Option<String>,

    /// Keep only counters, not every request and message (for long benchmarks).
    #[arg(long)]
    no_record: bool,

    /// Serve an IMS token endpoint, `POST /ims/token/v3`, issuing tokens to
    /// this client id (with --ims-client-secret). Steer it with
    /// `POST /standin/ims` (`{"fail_next":3}`, `{"revoke":true}`,
    /// `{"reject_all":true}`, `{"expires_in":30}`).
    #[arg(long, requires = "ims_client_secret")]
    ims_client_id: Option<String>,

    /// The secret the IMS token endpoint accepts (a stand-in's, not a real one).
    #[arg(long, requires = "ims_client_id")]
    ims_client_secret: Option<String>,

    /// Lifetime (`expires_in`) of the tokens it issues, e.g. `60s`.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ims_token_lifetime: Duration,

    /// Ingestion requires `Authorization: Bearer <a token the IMS endpoint
    /// issued, not expired, not revoked>` (401 otherwise).
    #[arg(long, requires = "ims_client_id")]
    require_ims_token: bool,

    /// Serve HTTPS (h2 and http/1.1) with a CA and certificate generated now,
    /// writing the CA's certificate (PEM) to this file for the client to trust
    /// (inletd: `upstream_ca_file`).
    #[arg(long, value_name = "PATH")]
    https_ca_out: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let tls = match &args.https_ca_out {
        None => None,
        Some(path) => {
            let made = StandInTls::generate("aep-standin", Alpn::Both)
                .map_err(|e| e.to_string())
                .and_then(|tls| {
                    std::fs::write(path, tls.ca_pem())
                        .map(|()| tls)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))
                });
            match made {
                Ok(tls) => Some(tls),
                Err(err) => {
                    tracing::error!("--https-ca-out: {err}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let config = StandInConfig {
        max_body_bytes: args.max_body_bytes,
        latency: args.latency,
        required_token: args.token,
        ims_org: args.ims_org,
        record: !args.no_record,
        tls,
        ims: args.ims_client_id.map(|client_id| StandInIms {
            client_id,
            client_secret: args.ims_client_secret.unwrap_or_default(),
            expires_in: args.ims_token_lifetime,
            require_token: args.require_ims_token,
        }),
    };
    let standin = match StandIn::bind(args.listen, config).await {
        Ok(standin) => standin,
        Err(err) => {
            tracing::error!("cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        addr = %standin.local_addr(),
        scheme,
        "aep-standin listening (a local stand-in for AEP streaming ingestion, not AEP)"
    );
    match standin.run(shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("aep-standin stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!("aep-standin failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                tracing::warn!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
