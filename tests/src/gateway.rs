//! Gateways for tests: configs tuned so that failures show up in
//! milliseconds (health checks, backoff) and nothing outlives the test (HTTP
//! on a free port, no compile cache), plugin and JetStream binding tables,
//! and [`Running`], a whole gateway started in-process and ready.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use wasmgate::config::{BindingConfig, Config, JetStreamConfig, PluginConfig};

use crate::WAIT;
use crate::plugins::plugin_wasm;

/// A config for tests: the given servers, fast health checks and backoff, HTTP
/// on a free loopback port, no compile cache (tests that need one set
/// `runtime.cache_dir` to a temporary folder), and no plugins yet.
pub fn test_config(servers: &[String]) -> Config {
    let mut c = Config::default();
    c.nats.servers = servers.to_vec();
    c.nats.connect_timeout = Duration::from_millis(500);
    c.health.interval = Duration::from_millis(200);
    c.health.timeout = Duration::from_millis(200);
    c.reconnect.initial_backoff = Duration::from_millis(50);
    c.reconnect.max_backoff = Duration::from_millis(400);
    c.reconnect.failure_threshold = 3;
    c.reconnect.max_attempts = 0;
    c.http.listen = "127.0.0.1:0".into();
    c.runtime.cache_dir = PathBuf::new();
    c
}

/// [`test_config`] with the plugin most tests send their messages through:
/// `upper` (the `uppercase` plugin) on `in.>`, publishing the upper-cased
/// payload to `out.<subject>`.
pub fn upper_config(servers: &[String]) -> Config {
    let mut c = test_config(servers);
    c.plugins.push(plugin(
        "upper",
        "uppercase",
        &["in.>"],
        &[("prefix", "out")],
    ));
    c
}

/// A JetStream binding table: the documented defaults with `create = true`,
/// a 3 s `ack_wait`, a 100 ms nak delay and a 1 s heartbeat, so that tests
/// see redeliveries quickly.
pub fn js_config(stream: &str, consumer: &str) -> JetStreamConfig {
    let text = format!("stream = \"{stream}\"\nconsumer = \"{consumer}\"\n");
    let mut c: JetStreamConfig = toml::from_str(&text).expect("minimal JetStream table parses");
    c.create = true;
    c.ack_wait = Duration::from_secs(3);
    c.backoff = vec![Duration::from_millis(100)];
    c.heartbeat = Duration::from_secs(1);
    c
}

/// A plugin table with one binding per subject, for one of the Rust plugins
/// (`wasm` is its crate name, see [`plugin_wasm`]).
pub fn plugin(name: &str, wasm: &str, subjects: &[&str], config: &[(&str, &str)]) -> PluginConfig {
    plugin_from(name, plugin_wasm(wasm), subjects, config)
}

/// [`plugin`] with one binding, on `subject`, that consumes through
/// JetStream as `js` says instead of a core subscription.
pub fn jetstream_plugin(
    name: &str,
    wasm: &str,
    subject: &str,
    config: &[(&str, &str)],
    js: JetStreamConfig,
) -> PluginConfig {
    let mut p = plugin(name, wasm, &[subject], config);
    p.bindings[0].jetstream = Some(js);
    p
}

/// A plugin table with one binding per subject, for the component at `path`.
pub fn plugin_from(
    name: &str,
    path: PathBuf,
    subjects: &[&str],
    config: &[(&str, &str)],
) -> PluginConfig {
    PluginConfig {
        config: config
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    wasmgate::config::ConfigValue::String(v.to_string()),
                )
            })
            .collect(),
        timeout: Duration::from_secs(2),
        memory: wasmgate::config::ByteSize::mib(64),
        bindings: subjects
            .iter()
            .map(|s| BindingConfig {
                subject: s.to_string(),
                queue: None,
                jetstream: None,
                buffer: None,
            })
            .collect(),
        ..PluginConfig::new(name, path)
    }
}

/// GET a path on the gateway's HTTP address: status code and body as JSON (or `null`).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Logs for a test binary, once: `RUST_LOG` or warnings.
pub fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// A whole gateway running in-process, started and ready (the server has
/// confirmed its subscriptions), with the shutdown signal it answers to.
/// Derefs to the [`Gateway`](wasmgate::Gateway).
pub struct Running {
    pub gw: wasmgate::Gateway,
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl Running {
    /// Start a gateway on `config` and wait (up to [`WAIT`]) until it is
    /// ready; panics with the reason otherwise.
    pub async fn start(config: Config) -> Running {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let gw = wasmgate::Gateway::start(config, shutdown.clone())
            .await
            .expect("gateway starts");
        gw.ready(WAIT).await.expect("gateway becomes ready");
        Running { gw, shutdown }
    }

    /// Shut down (drain, finish, flush) and check it ended cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.gw.wait().await.expect("clean shutdown");
    }
}

impl std::ops::Deref for Running {
    type Target = wasmgate::Gateway;

    fn deref(&self) -> &wasmgate::Gateway {
        &self.gw
    }
}
