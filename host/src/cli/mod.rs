//! The `wasmgate` command line: `run`, `config default|validate`, `invoke`
//! and `check`, on the library's public API. `main.rs` only calls [`main`].
//!
//! Exit codes (also in the README):
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success (`invoke`: the handler returned `ok`) |
//! | 1 | the gateway stopped with an error (`run`) |
//! | 2 | bad arguments or a bad config file |
//! | 3 | a plugin could not be loaded (missing, not a component, wrong world, cannot be linked) |
//! | 4 | `invoke`: the handler returned `retry` |
//! | 5 | `invoke`: the handler returned `reject` |
//! | 6 | `invoke`: the handler trapped (panic, memory limit, cannot instantiate) |
//! | 7 | `invoke`: the handler exceeded its deadline |

mod check;
mod invoke;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The process exit codes of the commands.
mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const LOAD: u8 = 3;
    pub const RETRY: u8 = 4;
    pub const REJECT: u8 = 5;
    pub const TRAP: u8 = 6;
    pub const TIMEOUT: u8 = 7;
}

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

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
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
    /// Run a handler once on one message, without NATS, and print its log
    /// lines, publishes, reply and result.
    #[command(after_help = invoke::AFTER_HELP)]
    Invoke(invoke::InvokeArgs),
    /// Validate a config file and load every plugin in it; one line per plugin.
    Check(check::CheckArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default config.
    Default,
    /// Parse and validate a config file without starting anything.
    Validate { file: PathBuf },
}

/// Parse the arguments, run the command, return its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", wasmgate::Config::default_toml());
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Validate { file },
        } => {
            init_logs(cli.log_json, "info");
            match wasmgate::Config::load(&file) {
                Ok(_) => {
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(exit::USAGE)
                }
            }
        }
        Command::Run { config, no_watch } => run::run(&config, !no_watch, cli.log_json),
        Command::Invoke(args) => {
            // The guest's log lines are printed on stdout; don't repeat them on stderr.
            init_logs(cli.log_json, "warn,wasmgate::guest=off");
            let mut out = std::io::stdout().lock();
            ExitCode::from(invoke::run(&args, &mut out))
        }
        Command::Check(args) => {
            init_logs(cli.log_json, "warn");
            let mut out = std::io::stdout().lock();
            ExitCode::from(check::run(&args, &mut out))
        }
    }
}

/// Install the global `tracing` subscriber on stderr: `RUST_LOG`'s filter,
/// or `default_filter` when it is unset; `json` switches to one JSON object
/// per line.
fn init_logs(json: bool, default_filter: &str) {
    init_logs_exporting(json, default_filter, None);
}

/// [`init_logs`], and spans exported to `otlp` (whatever the log filter).
fn init_logs_exporting(json: bool, default_filter: &str, otlp: Option<&wasmgate::otel::Otlp>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let result = tracing_subscriber::registry()
        .with(fmt)
        .with(otlp.map(|o| o.layer()))
        .try_init();
    // Only fails when a subscriber is already set.
    let _ = result;
}

/// `KEY=VALUE` for `--header` and `--config`; the value may contain `=`.
fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        assert_eq!(parse_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_pair("a="), Ok(("a".into(), String::new())));
        assert!(parse_pair("=b").is_err());
        assert!(parse_pair("ab").is_err());
    }
}
