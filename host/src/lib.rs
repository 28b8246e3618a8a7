//! wasmgate: a NATS event gateway whose subscription handlers are WebAssembly
//! components, on a supervised connection that re-binds them after every
//! reconnect.
//!
//! The `wasmgate` binary runs it from a TOML file. This library is the same
//! gateway for a Rust program to embed: start it from a [`Config`], watch its
//! [`Status`], hear about reconnects, reload it, stop it. It can also load and
//! call a plugin on its own, without NATS, to check a component before it is
//! deployed ([`plugin`]).
//!
//! # Embedding a gateway
//!
//! [`Gateway::start`] loads and checks every plugin (a bad config or plugin
//! fails here, before anything touches the network), binds the HTTP
//! endpoints, and connects and binds in the background. Cancelling the
//! token drains the gateway; [`Gateway::wait`] returns once it has.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use tokio_util::sync::CancellationToken;
//! use wasmgate::{ConnectionState, Gateway};
//!
//! # async fn embed() -> Result<(), Box<dyn std::error::Error>> {
//! let config = wasmgate::Config::load("wasmgate.toml")?;
//! let shutdown = CancellationToken::new();
//! let gateway = Gateway::start(config, shutdown.clone()).await?;
//!
//! // Run after every reconnect, once the bindings are restored.
//! gateway
//!     .on_reconnect(|event| async move {
//!         println!("reconnect #{} via {:?}", event.total_reconnects, event.path);
//!         Ok(())
//!     })
//!     .await;
//!
//! // Connected, with every binding confirmed by the server.
//! let status = gateway.ready(Duration::from_secs(10)).await?;
//! println!("connected to {:?}", status.server);
//!
//! // Every status change, as it happens.
//! let mut changes = gateway.status_watch();
//! tokio::spawn(async move {
//!     while changes.changed().await.is_ok() {
//!         let state = changes.borrow().state;
//!         if state == ConnectionState::Degraded {
//!             eprintln!("health probes are failing");
//!         }
//!     }
//! });
//!
//! // Apply a changed file without a restart: a bad plugin refuses the
//! // reload and the running version stays.
//! let report = gateway.reload_file("wasmgate.toml".as_ref()).await?;
//! println!("swapped {:?}, re-bound: {}", report.swapped, report.rebound);
//!
//! // Drain subscriptions and in-flight handlers, then stop.
//! shutdown.cancel();
//! gateway.wait().await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`run`] does start-and-wait in one call. A config can as well be built in
//! code ([`config`] holds every table, each with its defaults):
//! `Gateway::start` validates it as [`Config::load`] does a file.
//!
//! The gateway logs through [`tracing`](https://docs.rs/tracing) and installs
//! no subscriber: an embedder's own subscriber gets its events (a guest's
//! log lines under the `wasmgate::guest` target). Each message is handled in
//! a `message` span that continues the W3C trace context of its headers;
//! [`otel::Otlp`] exports those spans over OTLP (the binary does so when
//! `[telemetry] otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set).
//!
//! # Checking a plugin without NATS
//!
//! ```no_run
//! use wasmgate::config::PluginConfig;
//! use wasmgate::plugin::{Message, Outcome, Plugin, Runtime};
//!
//! # fn check() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::from_config(&Default::default())?;
//! let config = PluginConfig::new("upper", "uppercase.wasm");
//! // The gateway's own load-time checks: a component of the right world
//! // whose every import can be linked (a `LoadError` names what is wrong).
//! let plugin = std::sync::Arc::new(Plugin::load(&runtime, &config, 1024 * 1024)?);
//! let mut instance = plugin.instantiate()?;
//! let handled = instance.handle(&Message {
//!     subject: "in.greeting".into(),
//!     payload: b"hello".to_vec(),
//!     headers: vec![],
//!     reply_to: Some("inbox.1".into()),
//! })?;
//! assert_eq!(handled.outcome, Outcome::Ok(Some(b"HELLO".to_vec())));
//! # Ok(())
//! # }
//! ```
//!
//! # The API
//!
//! - [`Gateway`], [`GatewayError`], [`run`]: a running gateway.
//! - [`config`]: [`Config`] and its tables; loading, parsing and validating
//!   it ([`ConfigError`](config::ConfigError)).
//! - [`status`]: what [`Gateway::status`] and [`Gateway::status_watch`]
//!   return, the same values `GET /status` serves: [`Status`],
//!   [`ConnectionState`], [`BindingState`], per-binding and per-plugin
//!   counts.
//! - [`ReconnectEvent`], [`ReconnectPath`]: what a callback registered with
//!   [`Gateway::on_reconnect`] is told.
//! - [`Reloader`], [`ReloadReport`]: reloading a running gateway (also
//!   [`Gateway::reload`] and [`Gateway::watch`]).
//! - [`plugin`]: loading, checking and calling a component outside a
//!   gateway ([`LoadError`](plugin::LoadError), [`LoadErrorKind`](plugin::LoadErrorKind)).
//! - [`errors`]: every error type in one list, and error chains as one line
//!   of text.
//! - [`subject`]: NATS subject syntax as the gateway checks it.
//! - [`otel`]: trace export over OTLP ([`Otlp`](otel::Otlp), a `tracing` layer).
//! - [`ERROR_HEADER`]: the header of the gateway's error replies.
//!
//! The `wasmgate` command line (`src/main.rs`, `src/cli/`) uses only this
//! API. The connection supervisor and its state machine, dispatch,
//! JetStream and the host side of the WIT interfaces are internal; `cargo
//! doc --document-private-items` documents them.

mod backoff;
mod cache;
pub mod config;
mod connection;
mod dispatch;
pub mod errors;
mod gateway;
pub mod grants;
mod health;
mod http;
mod jetstream;
mod latency;
pub mod otel;
pub mod plugin;
mod reload;
mod runtime;
pub mod status;
pub mod subject;
mod supervisor;
mod telemetry;
mod throttle;

pub use config::Config;
pub use dispatch::ERROR_HEADER;
pub use gateway::{Gateway, GatewayError, run};
pub use reload::{ReloadReport, Reloader};
pub use status::{BindingState, ConnectionState, Status};
pub use supervisor::{ReconnectEvent, ReconnectPath};

/// Implementation constants the integration tests check their own timing
/// against. Not part of the API (no stability promise); only with the
/// non-default `internals` feature, which embedders never need.
#[cfg(feature = "internals")]
pub mod internals {
    /// The longest the gateway trusts its snapshot of which streams capture
    /// which subjects without a JetStream advisory to refresh it.
    pub const STREAM_SNAPSHOT_MAX_AGE: std::time::Duration = crate::jetstream::streams::MAX_AGE;
}
