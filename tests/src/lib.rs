//! The test kit of wasmgate's integration tests (`tests/tests/*.rs`) and its
//! benchmarks. It owns everything a test needs around the gateway it tests:
//!
//! - real servers: one `nats-server` process ([`NatsServer`], in `server`)
//!   or a 3-node JetStream cluster ([`cluster`]), on free loopback ports,
//!   that a test kills, pauses and restarts; server configs with
//!   authentication and TLS ([`auth`]);
//! - the guest plugins, built on demand once per test process ([`plugins`]);
//! - gateways: configs tuned for tests and a gateway run in-process
//!   ([`test_config`], [`plugin`], [`Running`], in `gateway`), or the real
//!   binary as a separate process that a test kills and restarts
//!   ([`process`]);
//! - waiting and assertions: the one bound on waiting, [`WAIT`], and checks
//!   of what the gateway reports and what reached the server (in `assert`);
//! - the fixture of the fault tests: a gateway with a misbehaving plugin
//!   beside a healthy one ([`Fixture`], in `fixture`);
//! - a collector for trace export: an OTLP/HTTP receiver that decodes the
//!   spans it is sent ([`otlp`]).
//!
//! A test file takes the single-node kit whole with `use wasmgate_tests::*;`
//! and names the cluster and auth kits by module (`wasmgate_tests::cluster::…`,
//! `wasmgate_tests::auth::…`). Tests never skip: without a `nats-server` or a
//! plugin's build tools they fail, saying what is missing.

mod assert;
pub mod auth;
pub mod cluster;
mod fixture;
mod gateway;
pub mod otlp;
pub mod pipeline;
pub mod plugins;
pub mod process;
pub mod rolling;
mod server;

pub use assert::{
    WAIT, ack_pending, assert_metrics, assert_nothing_before_marker, eventually, stream_info,
};
pub use fixture::{Fixture, error_kind, text};
pub use gateway::{
    Running, http_get, init_logs, jetstream_plugin, js_config, plugin, plugin_from, test_config,
    upper_config,
};
pub use plugins::{plugin_wasm, polyglot_wasm, repo_root};
pub use server::{
    NatsServer, client, dead_letter_stream, free_port, js_publish, js_round_trip, nats_server_bin,
};
