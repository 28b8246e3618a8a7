//! `wasmgate:plugin/log-filter`: whether a guest's line at a level would be
//! recorded, so the guest can skip formatting it. True for every level while
//! `wasmgate invoke` captures the lines; otherwise what the gateway's
//! tracing filter lets through for the guest target.

use crate::runtime::HostState;
use crate::runtime::bindings::wasmgate::plugin::log::Level;
use crate::runtime::bindings::wasmgate::plugin::log_filter::Host;

impl Host for HostState {
    fn enabled(&mut self, level: Level) -> bool {
        self.log_sink.is_some() || recorded(level)
    }
}

/// Whether tracing records a guest line at `level` (the target `log` uses).
fn recorded(level: Level) -> bool {
    match level {
        Level::Trace => tracing::enabled!(target: "wasmgate::guest", tracing::Level::TRACE),
        Level::Debug => tracing::enabled!(target: "wasmgate::guest", tracing::Level::DEBUG),
        Level::Info => tracing::enabled!(target: "wasmgate::guest", tracing::Level::INFO),
        Level::Warn => tracing::enabled!(target: "wasmgate::guest", tracing::Level::WARN),
        Level::Error => tracing::enabled!(target: "wasmgate::guest", tracing::Level::ERROR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_tracing_filter() {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("warn,wasmgate::guest=info")
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let got: Vec<bool> = [
                Level::Trace,
                Level::Debug,
                Level::Info,
                Level::Warn,
                Level::Error,
            ]
            .into_iter()
            .map(recorded)
            .collect();
            assert_eq!(got, [false, false, true, true, true]);
        });
        // No subscriber: nothing is recorded.
        assert!(!recorded(Level::Error));
    }
}
