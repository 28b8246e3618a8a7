//! The one `bindgen!` of the `wasmgate:plugin` package (the WIT in `wit/` is
//! the contract), generated for its widest world, `batch-plugin`. A plugin
//! must export `handler`; `batch-handler` is optional, so the host looks up
//! each export interface on its own ([`HandlerIndices`], [`BatchIndices`])
//! rather than through the world's all-or-nothing `…Pre` type.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "batch-plugin",
});

pub use self::exports::wasmgate::plugin::batch_handler::{
    Guest as BatchGuest, GuestIndices as BatchIndices,
};
pub use self::exports::wasmgate::plugin::handler::{
    Guest as HandlerGuest, GuestIndices as HandlerIndices,
};
pub use self::wasmgate::plugin::types::{HandleError, Message};

/// The exported handler interface, as `<package>/<interface>@<version>`.
pub const HANDLER_EXPORT: &str = "wasmgate:plugin/handler@0.1.5";
/// The optional batch export (added in 0.1.2).
pub const BATCH_HANDLER_EXPORT: &str = "wasmgate:plugin/batch-handler@0.1.5";
/// The prefix of the batch export's name, whatever its 0.1.x version.
pub const BATCH_HANDLER_PREFIX: &str = "wasmgate:plugin/batch-handler@";
/// The prefix of the `delivery` import's name, whatever its 0.1.x version.
pub const DELIVERY_IMPORT: &str = "wasmgate:plugin/delivery@";
/// The package every supported world belongs to, for load-time messages.
pub const WORLD: &str = "wasmgate:plugin/plugin@0.1.5";
/// The world of plugins that also export `batch-handler`.
pub const BATCH_WORLD: &str = "wasmgate:plugin/batch-plugin@0.1.5";

/// Whether a batch export of this name (`<package>/batch-handler@<version>`)
/// reads each message's JetStream metadata from the batch encoding: 0.1.4
/// and later do, 0.1.2 and 0.1.3 do not (`wit/batch-handler.wit`).
pub fn batch_carries_jetstream(export_name: &str) -> bool {
    let since = semver::Version::new(0, 1, 4);
    export_name
        .strip_prefix(BATCH_HANDLER_PREFIX)
        .and_then(|v| semver::Version::parse(v).ok())
        .is_some_and(|v| v >= since && v.major == since.major && v.minor == since.minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_encoding_carries_jetstream_metadata_from_0_1_4() {
        assert!(batch_carries_jetstream(BATCH_HANDLER_EXPORT));
        assert!(batch_carries_jetstream(
            "wasmgate:plugin/batch-handler@0.1.9"
        ));
        for older in [
            "wasmgate:plugin/batch-handler@0.1.2",
            "wasmgate:plugin/batch-handler@0.1.3",
            "wasmgate:plugin/batch-handler@0.1.4-rc.1",
            "wasmgate:plugin/batch-handler@0.2.0",
            "wasmgate:plugin/batch-handler",
            "wasmgate:plugin/handler@0.1.4",
        ] {
            assert!(!batch_carries_jetstream(older), "{older}");
        }
    }
}
