//! The one `bindgen!` of the `wasmgate:plugin` world (the WIT in `wit/` is the contract).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
});

pub use self::wasmgate::plugin::types::{HandleError, Message, PublishError};

/// The exported handler interface, as `<package>/<interface>@<version>`.
pub const HANDLER_EXPORT: &str = "wasmgate:plugin/handler@0.1.1";
/// The package every supported world belongs to, for load-time messages.
pub const WORLD: &str = "wasmgate:plugin/plugin@0.1.1";
