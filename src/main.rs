//! The `inletd` binary: parses the command line, loads the configuration,
//! starts logging, runs the library and maps the result to an exit code.

mod logging;

/// mimalloc instead of the system allocator: the hot path allocates a few
/// dozen small blocks per message (hyper's head, the router, the reply), and
/// glibc's malloc/free (arena locks, consolidation) were about a fifth of
/// inletd's instructions per message in `bench/profile.sh`. Its v2 (Cargo
/// feature): with v3, the tiny-message memory test (`tests/it/memory.rs`)
/// peaked ~6 MB higher, past its bound in one run of four.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inletd::config::{unknown_env_vars, ConfigError, Layer, Sources, ENV_PREFIX};
use inletd::reload::Reloader;
use inletd::{build_info, App, Config, DrainReport};

/// A local batching proxy for Adobe Experience Platform streaming ingestion.
///
/// Producers POST single messages to http://LISTEN/collection/{CONNECTION_ID} as they
/// would to AEP; inletd sends them upstream in batches and answers each producer with
/// its own message's result. Every key can be set in the TOML file (--config or
/// INLETD_CONFIG), as INLETD_<KEY> in the environment, or as a flag below; flags win
/// over the environment, which wins over the file.
#[derive(Parser, Debug)]
#[command(
    name = "inletd",
    version = inletd::build_info::LONG_VERSION,
    about,
    long_about,
    max_term_width = 100,
    after_help = EXIT_CODES
)]
struct Cli {
    /// TOML configuration file (also INLETD_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<String>,

    #[command(flatten)]
    keys: Layer,

    /// Refused: a secret on the command line shows in `ps` and shell history.
    /// Declared only so the refusal can say where the secret may come from.
    #[arg(long, hide = true, value_name = "SECRET")]
    ims_client_secret: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the layered configuration and print the effective values.
    CheckConfig,
    /// Probe a running inletd's /healthz (for container health checks): exit 0 if healthy.
    Healthcheck {
        /// The URL to probe [default: /healthz on `admin_listen` of the layered
        /// configuration (--config, INLETD_*, flags), 127.0.0.1 when it is 0.0.0.0].
        #[arg(long)]
        url: Option<String>,
    },
    /// List the spool's dead letters, or resend them through a running inletd.
    DeadLetters(inletd::dead_letters::DeadLettersArgs),
}

/// The exit codes, as `--help` shows them (docs/operations.md lists the same).
const EXIT_CODES: &str = "Exit codes:
  0  stopped after a complete drain (every accepted message was answered)
  1  could not start (a port taken, the runtime or upstream client failed)
  2  invalid configuration or command line
  3  stopped after an incomplete drain: shutdown_grace ran out and messages
     still waiting were answered 503 (delivery unknown)";

/// Exit code of a drain that ended with messages answered 503 "may or may not".
const DRAIN_INCOMPLETE: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.ims_client_secret.is_some() {
        let refusal = inletd::ims::not_allowed_here("a command-line flag (--ims-client-secret)");
        eprintln!("inletd: {refusal}");
        return ExitCode::from(2);
    }
    if let Some(Command::Healthcheck { url: Some(url) }) = &cli.command {
        return healthcheck(url);
    }
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    let unknown = unknown_env_vars(&env);
    // What a SIGHUP re-reads: the same file, environment and flags as now.
    let (path, flags, start_env) = (cli.config.clone(), cli.keys.clone(), env.clone());
    let reread = move || {
        Sources::read(path.clone(), start_env.clone(), flags.clone()).and_then(Config::load)
    };
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
    match cli.command {
        Some(Command::CheckConfig) => {
            // Warnings on stderr: stdout stays a valid configuration file.
            for w in &warnings {
                eprintln!("inletd: warning: {w}");
            }
            print_effective(&config);
            return ExitCode::SUCCESS;
        }
        Some(Command::Healthcheck { .. }) => {
            return healthcheck(&inletd::healthcheck::healthz_url(config.admin_listen));
        }
        Some(Command::DeadLetters(args)) => {
            let spool_dir = config.spool_dir.0.clone();
            return inletd::dead_letters::run(args, config.listen, spool_dir);
        }
        None => {}
    }
    let rust_log = std::env::var("RUST_LOG").ok();
    let log_handle = logging::init(&config, rust_log.as_deref());
    let reloader = Reloader::new(log_handle, rust_log, config.clone(), reread);
    tracing::info!(
        version = build_info::VERSION,
        revision = build_info::REVISION,
        built = build_info::BUILD_DATE,
        "inletd starting"
    );
    for w in &warnings {
        tracing::warn!("{w}");
    }
    match serve(config, reloader) {
        Ok(report) if report.complete => ExitCode::SUCCESS,
        // Logged by the drain ("drain incomplete"); the code lets a supervisor see it too.
        Ok(_) => ExitCode::from(DRAIN_INCOMPLETE),
        Err(e) => {
            tracing::error!(error = %e, "inletd could not start");
            eprintln!("inletd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs inletd until SIGTERM or SIGINT and its drain; SIGHUP reloads the log level.
fn serve(
    config: Config,
    mut reloader: Reloader<impl FnMut() -> Result<Config, ConfigError> + Send + 'static>,
) -> Result<DrainReport, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let report = runtime.block_on(async {
        // Listening before binding: from the moment inletd is up, SIGTERM drains it.
        let stop = inletd::shutdown::signal();
        inletd::reload::on_hangup(move || reloader.reload());
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
    // A comment, so the output stays a usable config file (where the secret may not be).
    println!(
        "# the IMS client secret ({} or {}): {}",
        inletd::ims::SECRET_ENV,
        inletd::ims::SECRET_FILE_KEY,
        config.ims_secret_shown()
    );
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
