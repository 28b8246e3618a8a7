//! The `wasmgate` binary: parse arguments, load the config, run the gateway
//! until SIGINT/SIGTERM, then drain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "wasmgate",
    version,
    about = "A WebAssembly-pluggable NATS event gateway"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The TOML config file.
        #[arg(short, long)]
        config: PathBuf,
        /// Do not reload when the config file or a plugin's `.wasm` changes
        /// (SIGHUP still reloads).
        #[arg(long)]
        no_watch: bool,
    },
    /// Config helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default config.
    Default,
    /// Parse and validate a config file without starting anything.
    Validate { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    wasmgate::telemetry::init(cli.log_json);
    match cli.command {
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", wasmgate::Config::default_toml());
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Validate { file },
        } => match wasmgate::Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            config: path,
            no_watch,
        } => {
            let config = match wasmgate::Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(wait_for_signal(shutdown.clone()));
                match serve(config, path, !no_watch, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("{e:#}");
                        eprintln!("error: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

async fn serve(
    config: wasmgate::Config,
    path: PathBuf,
    watch: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let gateway = wasmgate::Gateway::start(config, shutdown.clone()).await?;
    if watch {
        gateway.watch(path.clone())?;
    }
    let reloader = gateway.reloader();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!(config = %path.display(), "SIGHUP: reloading");
            let _ = reloader.reload_file(&path).await;
        }
    });
    gateway.wait().await
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: draining subscriptions");
    shutdown.cancel();
}
