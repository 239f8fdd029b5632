//! The `ferry` command: `ferry serve` runs one node, `ferry dev` a local 3-node cluster.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ferry_server::config::{ServeArgs, DEFAULT_METRICS_IDLE_TIMEOUT_S};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "A replicated, SQS-compatible message queue"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "FERRY_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a cluster.
    Serve(Box<ServeArgs>),
    /// Run a local 3-node cluster on loopback.
    Dev {
        /// Where the nodes keep their data.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
}

/// jemalloc rather than glibc's malloc: glibc's allocator was ~10% of a node's samples under load
/// (arena locking, `malloc_consolidate`), and jemalloc keeps resident memory as low (mimalloc, tried
/// before, held 2.4 GiB per node after the queue-count benchmark; see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Serve(args) => {
            let config = args.resolve()?;
            let metrics = ferry_server::install_metrics(config.metrics_idle_timeout)?;
            runtime.block_on(ferry_server::run(config, Some(metrics), shutdown_signal()))
        }
        Command::Dev { data_dir } => {
            let idle_timeout = Duration::from_secs(DEFAULT_METRICS_IDLE_TIMEOUT_S);
            let metrics = ferry_server::install_metrics(idle_timeout)?;
            runtime.block_on(ferry_server::dev(
                &data_dir,
                Some(metrics),
                shutdown_signal(),
            ))
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; stop with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
