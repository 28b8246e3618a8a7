//! Logging set-up for the binary: `RUST_LOG`-style filters (default `info`),
//! text or JSON lines on stderr.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. `json` switches to one JSON object per line.
pub fn init(json: bool) {
    init_with_default(json, "info");
}

/// Like [`init`], with another filter for when `RUST_LOG` is unset.
pub fn init_with_default(json: bool, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A subscriber set by an embedding program wins.
    let _ = result;
}
