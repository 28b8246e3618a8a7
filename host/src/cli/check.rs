//! `wasmgate check`: validate a config file and load every plugin it names,
//! as `run` would before connecting, without touching the network.
//!
//! ```text
//! plugin "uppercase": examples/../plugins/target/wasm32-wasip2/release/uppercase.wasm: ok
//! plugin "broken": examples/broken.wasm: file not found
//! plugin "uppercase": warning: publish_allow = ">" lets it publish to any subject outside the reserved namespaces; list only the subjects it needs
//! examples/app.toml: 1 of 2 plugins failed to load
//! ```
//!
//! Loading checks that the file is a component, that it exports the
//! `wasmgate:plugin/handler` interface of the world version this host
//! supports, and that every import can be linked. Grants an operator should
//! look at (an unrestricted `>`, a reserved namespace) get a warning line. Exit code 0 when all is
//! well, 2 for a bad config (nothing is loaded), 3 when a plugin failed.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use wasmgate::plugin::{Plugin, Runtime};

use super::exit;

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// The TOML config file.
    config: PathBuf,
}

/// Run the command; writes the report to `out`, a bad config to stderr; returns the exit code.
pub(super) fn run(args: &CheckArgs, out: &mut dyn Write) -> u8 {
    let shown = args.config.display().to_string();
    let config = match wasmgate::Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let runtime = match Runtime::new(config.runtime.epoch_tick) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the WebAssembly runtime: {e:#}");
            return exit::FAILURE;
        }
    };
    let total = config.plugins.len();
    let mut failed = 0;
    for p in &config.plugins {
        match Plugin::load(&runtime, p, 0) {
            Ok(plugin) => {
                let _ = writeln!(
                    out,
                    "plugin {:?}: {}: ok",
                    plugin.name(),
                    plugin.path().display()
                );
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(out, "{e}");
            }
        }
    }
    for warning in config.warnings() {
        let _ = writeln!(out, "{warning}");
    }
    let plural = |n: usize| if n == 1 { "plugin" } else { "plugins" };
    let bindings: usize = config.plugins.iter().map(|p| p.bindings.len()).sum();
    let code = if failed == 0 {
        let _ = writeln!(
            out,
            "{shown}: ok: {total} {} loaded, {bindings} {}",
            plural(total),
            if bindings == 1 { "binding" } else { "bindings" }
        );
        exit::OK
    } else {
        let _ = writeln!(
            out,
            "{shown}: {failed} of {total} {} failed to load",
            plural(total)
        );
        exit::LOAD
    };
    let _ = out.flush();
    code
}
