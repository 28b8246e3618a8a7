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
pub use self::wasmgate::plugin::types::{HandleError, Message, PublishError};

/// The exported handler interface, as `<package>/<interface>@<version>`.
pub const HANDLER_EXPORT: &str = "wasmgate:plugin/handler@0.1.3";
/// The optional batch export (added in 0.1.2).
pub const BATCH_HANDLER_EXPORT: &str = "wasmgate:plugin/batch-handler@0.1.3";
/// The prefix of the `delivery` import's name, whatever its 0.1.x version.
pub const DELIVERY_IMPORT: &str = "wasmgate:plugin/delivery@";
/// The package every supported world belongs to, for load-time messages.
pub const WORLD: &str = "wasmgate:plugin/plugin@0.1.3";
/// The world of plugins that also export `batch-handler`.
pub const BATCH_WORLD: &str = "wasmgate:plugin/batch-plugin@0.1.3";
