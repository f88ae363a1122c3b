//! The `inletd` binary: parses the command line, loads the configuration,
//! starts logging, runs the library and maps the result to an exit code.

mod logging;

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inletd::config::{unknown_env_vars, Layer, Sources, ENV_PREFIX};
use inletd::{build_info, App, Config, DrainReport};

/// A local batching proxy for Adobe Experience Platform streaming ingestion.
///
/// Producers POST single messages to http://LISTEN/collection/{CONNECTION_ID} as they
/// would to AEP; inletd sends them upstream in batches and answers each producer with
/// its own message's result. Every key can be set in the TOML file (--config or
/// INLETD_CONFIG), as INLETD_<KEY> in the environment, or as a flag below; flags win
/// over the environment, which wins over the file.
#[derive(Parser, Debug)]
#[command(name = "inletd", version = inletd::build_info::LONG_VERSION, about, long_about, max_term_width = 100)]
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
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return healthcheck(url);
    }
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    let unknown = unknown_env_vars(&env);
    let config = match Sources::read(cli.config, env, cli.keys).and_then(Config::load) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("inletd: {e}");
            return ExitCode::from(2);
        }
    };
    let mut warnings = config.warnings();
    if !unknown.is_empty() {
        warnings.push(format!(
            "ignoring INLETD_* environment variables that name no configuration key (typo? Kubernetes service link?): {}",
            unknown.join(", ")
        ));
    }
    if let Some(Command::CheckConfig) = cli.command {
        // Warnings on stderr: stdout stays a valid configuration file.
        for w in &warnings {
            eprintln!("inletd: warning: {w}");
        }
        print_effective(&config);
        return ExitCode::SUCCESS;
    }
    logging::init(&config);
    tracing::info!(
        version = build_info::VERSION,
        revision = build_info::REVISION,
        built = build_info::BUILD_DATE,
        "inletd starting"
    );
    for w in &warnings {
        tracing::warn!("{w}");
    }
    match serve(config) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "inletd could not start");
            eprintln!("inletd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs inletd until SIGTERM or SIGINT and its drain.
fn serve(config: Config) -> Result<DrainReport, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let report = runtime.block_on(async {
        // Listening before binding: from the moment inletd is up, SIGTERM drains it.
        let stop = inletd::shutdown::signal();
        let app = App::bind(config).await?;
        app.run(stop).await
    })?;
    Ok(report)
}

/// `check-config`: the effective values as TOML, so the output can serve as a config file.
fn print_effective(config: &Config) {
    println!("# configuration is valid; effective values:");
    for (key, value) in config.effective() {
        if value.parse::<u64>().is_ok() {
            println!("{key} = {value}");
        } else {
            println!("{key} = {value:?}");
        }
    }
}

/// `healthcheck`: exit 0 when the probed URL answers 200 (see [`inletd::healthcheck`]).
fn healthcheck(url: &str) -> ExitCode {
    match inletd::healthcheck::probe(url) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inletd healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
