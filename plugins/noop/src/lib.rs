//! Benchmark plugin: takes the message and returns `ok(none)` without calling
//! any import. Its `handle` costs only the component-model call itself
//! (lowering the message into guest memory, the guest's allocations, lifting
//! the result), so it separates the host's per-call overhead from a plugin's
//! own work.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use exports::wasmgate::plugin::handler::Guest;
use wasmgate::plugin::types::{HandleError, Message};

struct Noop;

impl Guest for Noop {
    fn handle(msg: Message) -> Result<Option<Vec<u8>>, HandleError> {
        // Touch the message so the call cannot be reduced to nothing.
        std::hint::black_box(&msg);
        Ok(None)
    }
}

export!(Noop);
