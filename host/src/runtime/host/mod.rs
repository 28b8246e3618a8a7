//! Host-side implementations of the interfaces a plugin imports, one file per
//! interface, all over [`HostState`](crate::runtime::HostState).

mod config;
mod delivery;
mod log;
mod log_filter;
mod publisher;
mod requester;

pub use publisher::describe as describe_publish_error;

use super::HostState;
use super::bindings::wasmgate::plugin::types;

impl types::Host for HostState {}
