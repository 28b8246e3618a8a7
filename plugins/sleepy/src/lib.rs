//! Test plugin: sleeps for the number of milliseconds in the payload (through
//! WASI clocks) and replies `<start>,<end>` in Unix nanoseconds, so a test can
//! see which handlings overlapped.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use exports::wasmgate::plugin::handler::Guest;
use wasmgate::plugin::types::{HandleError, Message};

struct Sleepy;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl Guest for Sleepy {
    fn handle(msg: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let ms: u64 = std::str::from_utf8(&msg.payload)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                HandleError::Reject("payload must be a number of milliseconds".into())
            })?;
        let start = now_ns();
        std::thread::sleep(Duration::from_millis(ms));
        let end = now_ns();
        Ok(Some(format!("{start},{end}").into_bytes()))
    }
}

export!(Sleepy);
