//! Log lines into the gateway's tracing output, tagged with the plugin name
//! (and printed by `wasmgate invoke`). The macros take `format!` arguments:
//! `wasmgate_plugin::debug!("{} bytes", n)`.

pub use crate::bindings::wasmgate::plugin::log::Level;

pub fn log(level: Level, message: impl AsRef<str>) {
    crate::bindings::wasmgate::plugin::log::log(level, message.as_ref());
}

pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message)
}

pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message)
}

pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message)
}

pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message)
}

pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message)
}
