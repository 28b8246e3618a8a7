//! `wasmgate:plugin/log`: guest log lines go to tracing, tagged with the plugin.

use crate::runtime::HostState;
use crate::runtime::bindings::wasmgate::plugin::log::{Host, Level};

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let plugin = self.plugin.name.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "wasmgate::guest", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "wasmgate::guest", plugin, "{message}"),
            Level::Info => tracing::info!(target: "wasmgate::guest", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "wasmgate::guest", plugin, "{message}"),
            Level::Error => tracing::error!(target: "wasmgate::guest", plugin, "{message}"),
        }
        if let Some(sink) = &mut self.log_sink {
            sink.push((level_name(level), message));
        }
    }
}

pub(crate) fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}
