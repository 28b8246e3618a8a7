//! `wasmgate:plugin/delivery`: metadata of the message in hand, set by the
//! dispatcher around each `handle` call.

use crate::runtime::HostState;
use crate::runtime::bindings::wasmgate::plugin::delivery::{Host, JetstreamInfo};

impl Host for HostState {
    fn jetstream(&mut self) -> Option<JetstreamInfo> {
        self.delivery.clone()
    }
}
