//! wasmgate: a NATS event gateway whose subscription handlers are WebAssembly
//! components, on a supervised connection that re-binds them after every
//! reconnect.
//!
//! - [`config`]: the TOML file, its defaults and validation.
//! - [`supervisor`]: the one owner of the NATS client (its state machine, a
//!   value, in `supervisor::machine`); health checks, backoff,
//!   reconnects, re-binding, callbacks (its docs hold the state machine).
//! - [`health`]: the round-trip probe. [`backoff`]: the policy and retry loop.
//! - [`runtime`] and [`plugin`]: wasmtime, the WIT host interfaces, loading
//!   and checking components, instances; [`cache`]: compiled components on
//!   disk. [`dispatch`]: the per-message path.
//! - [`grants`]: what a plugin may address (publish allow-lists, reserved
//!   namespaces).
//! - [`status`] and [`http`]: what operators and embedders see.
//! - [`gateway`]: the embedding API ([`Gateway`], [`run`]).
//!
//! The `wasmgate` command line (`run`, `config`, `invoke`, `check`) is the
//! binary's (`src/main.rs`, `src/cli/`), on this public API.

pub mod backoff;
pub mod cache;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod errors;
pub mod gateway;
pub mod grants;
pub mod health;
pub mod http;
pub mod jetstream;
pub mod plugin;
pub mod reload;
pub mod runtime;
pub mod status;
pub mod subject;
pub mod supervisor;
pub mod telemetry;

pub use config::Config;
pub use gateway::{Gateway, GatewayError, run};
pub use status::{BindingState, ConnectionState, Status};
pub use supervisor::{ReconnectEvent, ReconnectPath};
