//! The `inletd` binary: parses the command line, loads the configuration,
//! starts logging, runs the library and maps the result to an exit code.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use inletd::config::{unknown_env_vars, Layer, LogFormat, Sources, ENV_PREFIX};
use inletd::{App, Config};

/// A local batching proxy for Adobe Experience Platform streaming ingestion.
///
/// Producers POST single messages to http://LISTEN/collection/{CONNECTION_ID} as they
/// would to AEP; inletd sends them upstream in batches and answers each producer with
/// its own message's result. Every key can be set in the TOML file (--config or
/// INLETD_CONFIG), as INLETD_<KEY> in the environment, or as a flag below; flags win
/// over the environment, which wins over the file.
#[derive(Parser, Debug)]
#[command(name = "inletd", version, about, long_about, max_term_width = 100)]
struct Cli {
    /// TOML configuration file (also INLETD_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<String>,

    #[command(flatten)]
    keys: Layer,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the layered configuration and print the effective values.
    CheckConfig,
    /// Probe a running inletd's /healthz (for container health checks): exit 0 if healthy.
    Healthcheck {
        /// The URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:9464/healthz")]
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    let unknown = unknown_env_vars(&env);
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return healthcheck(url);
    }
    let config = match Sources::read(cli.config, env, cli.keys).and_then(Config::load) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("inletd: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig) = cli.command {
        println!("# configuration is valid; effective values:");
        // Printed as TOML, so the output can serve as a config file itself.
        for (key, value) in config.effective() {
            if value.parse::<u64>().is_ok() {
                println!("{key} = {value}");
            } else {
                println!("{key} = {value:?}");
            }
        }
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    if !unknown.is_empty() {
        tracing::warn!(
            variables = ?unknown,
            "ignoring INLETD_* environment variables that name no configuration key (typo? Kubernetes service link?)"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("inletd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let app = App::bind(config).await?;
        app.run(inletd::shutdown::signal()).await
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "inletd could not start");
            eprintln!("inletd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// A dependency-free probe: one HTTP/1.0 GET over a plain TCP connection.
fn healthcheck(url: &str) -> ExitCode {
    match probe(url) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inletd healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn probe(url: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs can be probed")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/"), |(a, p)| (a, p));
    let timeout = Duration::from_secs(3);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("the address did not resolve")?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    match line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(code) => Err(format!("answered {code}")),
        None => Err("no HTTP answer".into()),
    }
}
