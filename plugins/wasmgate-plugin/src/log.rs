//! Log lines into the gateway's tracing output, tagged with the plugin name
//! (and printed by `wasmgate invoke`). The macros take `format!` arguments:
//! `wasmgate_plugin::debug!("{} bytes", n)`.
//!
//! A line at a level the gateway does not record is not formatted and not
//! sent: the SDK asks the host once per instance which levels it records
//! (`wasmgate:plugin/log-filter`), so a `debug!` in a hot handler costs a
//! check when the gateway logs at `info`.

use std::sync::atomic::{AtomicU8, Ordering};

pub use crate::bindings::wasmgate::plugin::log::Level;

/// Bit `1 << level` set when the host records that level; `UNKNOWN` until
/// asked.
static ENABLED: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0x80;

const LEVELS: [Level; 5] = [
    Level::Trace,
    Level::Debug,
    Level::Info,
    Level::Warn,
    Level::Error,
];

/// Whether the host records lines at `level` (asked once per instance).
pub fn enabled(level: Level) -> bool {
    let mut mask = ENABLED.load(Ordering::Relaxed);
    if mask == UNKNOWN {
        mask = LEVELS
            .iter()
            .filter(|&&l| crate::bindings::wasmgate::plugin::log_filter::enabled(l))
            .fold(0, |m, &l| m | 1 << l as u8);
        ENABLED.store(mask, Ordering::Relaxed);
    }
    mask & (1 << level as u8) != 0
}

pub fn log(level: Level, message: impl AsRef<str>) {
    if enabled(level) {
        crate::bindings::wasmgate::plugin::log::log(level, message.as_ref());
    }
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
