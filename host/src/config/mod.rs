//! The gateway's configuration: one TOML file, parsed into serde structs that
//! reject unknown keys, with every default in one place (`Default` impls here)
//! and a validation pass that runs before anything connects or loads.
//!
//! Durations are human strings (`"250ms"`, `"2s"`), sizes are human strings
//! (`"64MiB"`). Relative paths (plugins, preopened directories, the compile
//! cache) are resolved against the config file's folder, so a config works
//! from any working directory.
//!
//! This file owns the schema and its defaults; `load` reads a file or text
//! into it, `validate` checks what serde's types cannot.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

mod load;
pub(crate) mod secrets;
mod validate;

pub use load::{ConfigError, Problem};
/// A server URL as it may be shown: its password (and a user alone) masked.
pub use secrets::redact_url;

/// The whole gateway configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: NatsConfig,
    pub health: HealthConfig,
    pub reconnect: ReconnectConfig,
    pub http: HttpConfig,
    pub runtime: RuntimeConfig,
    pub telemetry: TelemetryConfig,
    /// The plugins and their bindings (`[[plugin]]` tables).
    #[serde(rename = "plugin", skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginConfig>,
}

/// `[nats]`: where to connect and how to authenticate.
///
/// `Debug` shows server URLs without credentials and every secret as `***`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:port`, `tls://host:port`). Credentials
    /// written into a URL are moved into `auth` when the config is loaded.
    pub servers: Vec<String>,
    /// Client name shown in the server's connection list.
    pub name: String,
    /// How long one connection attempt may take (TCP plus the NATS handshake).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Messages the client queues per subscription before the binding's
    /// reader moves them into its buffer; past it the client drops them
    /// (and reports a slow consumer). The reader keeps it near empty.
    pub subscription_capacity: usize,
    /// Bytes of core messages one binding may hold waiting for its plugin
    /// (wire length plus 256 bytes each); past it, arriving messages are
    /// dropped and counted (`dropped`). A binding's `buffer` overrides it.
    #[serde(deserialize_with = "size")]
    pub binding_buffer: ByteSize,
    /// Bytes of core messages all bindings together may hold waiting.
    #[serde(deserialize_with = "size")]
    pub buffer_limit: ByteSize,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            name: "wasmgate".into(),
            connect_timeout: Duration::from_secs(2),
            subscription_capacity: 65_536,
            binding_buffer: ByteSize::mib(256),
            buffer_limit: ByteSize::gib(1),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|s| secrets::redact_url(s).into_owned())
            .collect();
        f.debug_struct("NatsConfig")
            .field("servers", &servers)
            .field("name", &self.name)
            .field("connect_timeout", &self.connect_timeout)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("binding_buffer", &self.binding_buffer)
            .field("buffer_limit", &self.buffer_limit)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `[nats.auth]`: at most one of creds file, nkey seed, token, or user + password.
/// Every string here may be `${NAME}`, read from the environment at load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey_seed: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

/// A credential from the config: `Debug`, `Display` and `Serialize` never
/// show it; only [`Secret::expose`], at the one place that hands it to the
/// client, does.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the NATS client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `[nats.tls]`: a CA to trust and an optional client certificate. Paths may
/// be `${NAME}`, read from the environment at load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Refuse plain-text connections.
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// `[health]`: the application-level probe (a round trip through the server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between probes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long one probe may wait for its echo before it counts as a failure.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
        }
    }
}

/// What the supervisor does when `max_attempts` is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnExhausted {
    /// Stop the gateway with an error (the process exits non-zero), so an
    /// orchestrator can restart or page.
    Exit,
    /// Stay up in state `failed` (readiness false) and keep trying every `max_backoff`.
    KeepTrying,
}

/// `[reconnect]`: the backoff policy shared by the client's own reconnect and
/// the supervisor's application-level reconnect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// Attempts per outage before giving up; 0 means never give up.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Each delay is the previous one times this (≥ 1.0).
    pub backoff_factor: f64,
    /// Consecutive failed health probes that trigger an application-level reconnect.
    pub failure_threshold: u32,
    /// Fraction (0.0–1.0) by which a delay may be randomly shortened, so that
    /// many gateways do not reconnect in lockstep.
    pub jitter: f64,
    pub on_exhausted: OnExhausted,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            max_attempts: 30,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            backoff_factor: 2.0,
            failure_threshold: 3,
            jitter: 0.2,
            on_exhausted: OnExhausted::Exit,
        }
    }
}

/// `[http]`: the status and probe endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address for `/status`, `/healthz`, `/readyz`; an empty string turns HTTP off.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8480".into(),
        }
    }
}

/// `[telemetry]`: what the gateway measures beyond its counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Latency histograms per binding in `/metrics` (handler duration, queue
    /// wait, JetStream settle delay). Read at start, like `[runtime]`.
    pub histograms: bool,
    /// Where to export traces over OTLP/HTTP: the collector's base URL, as in
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` is appended). Empty (the
    /// default) leaves export to the standard `OTEL_EXPORTER_OTLP_*`
    /// variables, and off when they are unset. Read at start.
    pub otlp_endpoint: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            histograms: true,
            otlp_endpoint: String::new(),
        }
    }
}

/// `[runtime]`: host-wide settings of the WebAssembly runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Granularity of handler deadlines: the epoch ticks this often.
    #[serde(with = "humantime_serde")]
    pub epoch_tick: Duration,
    /// Threads plugin calls run on, shared by every binding; 0 = two per
    /// core, at least four. Idle bindings hold none.
    pub workers: usize,
    /// Batches handled at once across all plugins; 0 = no host-wide cap.
    pub max_concurrent_calls: usize,
    /// What a worker does when the host-wide cap is reached.
    pub overload: Overload,
    /// With `overload = "shed"`: how long a batch may wait for a slot.
    #[serde(with = "humantime_serde")]
    pub admission_wait: Duration,
    /// Folder for compiled components, so that a restart does not compile
    /// them again; an empty path turns the cache off.
    pub cache_dir: PathBuf,
    /// Most space the compiled components of this wasmtime build may take
    /// in `cache_dir`; the least recently used go first. `0` = no limit.
    #[serde(deserialize_with = "size")]
    pub cache_max_size: ByteSize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            epoch_tick: Duration::from_millis(10),
            workers: 0,
            max_concurrent_calls: 0,
            overload: Overload::Wait,
            admission_wait: Duration::from_millis(100),
            cache_dir: default_cache_dir(),
            cache_max_size: ByteSize::gib(1),
        }
    }
}

/// Backpressure when every host-wide slot is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overload {
    /// Wait for a slot: the subscription buffers, then the server slows or
    /// drops (core NATS), or holds messages back (JetStream `max_ack_pending`).
    Wait,
    /// Wait up to `admission_wait`, then shed: core messages are dropped (a
    /// requester gets an `overloaded` error reply), JetStream messages are
    /// nak'd with their backoff delay. Counted as `shed`.
    Shed,
}

impl RuntimeConfig {
    /// The compile cache folder, or `None` when the cache is off.
    pub fn cache_dir(&self) -> Option<&Path> {
        (!self.cache_dir.as_os_str().is_empty()).then_some(self.cache_dir.as_path())
    }
}

/// `$XDG_CACHE_HOME/wasmgate`, else `$HOME/.cache/wasmgate`, else off (empty).
fn default_cache_dir() -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(xdg) = absolute("XDG_CACHE_HOME") {
        xdg.join("wasmgate")
    } else if let Some(home) = absolute("HOME") {
        home.join(".cache").join("wasmgate")
    } else {
        PathBuf::new()
    }
}

/// A scalar plugin config value; handed to the guest as a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "a string, integer, float or boolean")]
pub enum ConfigValue {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigValue::String(s) => f.write_str(s),
            ConfigValue::Integer(i) => write!(f, "{i}"),
            ConfigValue::Float(x) => write!(f, "{x}"),
            ConfigValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// `[[plugin]]`: one WebAssembly component and the subjects it handles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique name, used in logs, metrics and `/status`.
    pub name: String,
    /// The component (`.wasm`); relative paths are relative to the config file.
    pub path: PathBuf,
    /// Values the plugin reads through the `config` interface.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, ConfigValue>,
    /// Longest time one `handle` call may run before it is interrupted.
    #[serde(default = "default_plugin_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Most linear memory one instance may grow to (`"64MiB"`).
    #[serde(default = "default_plugin_memory", deserialize_with = "size")]
    pub memory: ByteSize,
    /// Messages of each binding handled at once, each by its own pooled
    /// instance. 1 keeps a binding's messages in order.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Hand core-binding messages to the plugin in batches (one
    /// `handle-batch` call for what has arrived) when it exports
    /// `batch-handler`, as plugins built with the Rust SDK do. `false` calls
    /// `handle` once per message.
    #[serde(default = "default_true")]
    pub batch: bool,
    /// Subject patterns (NATS wildcards) the plugin may publish to; any other
    /// publish is refused with `publish-error::forbidden`. `[">"]` allows
    /// every subject, `[]` none.
    #[serde(default = "default_publish_allow")]
    pub publish_allow: Vec<String>,
    /// Subject patterns the plugin may send requests to (the `requester`
    /// interface, WIT 0.1.5); any other is refused with
    /// `request-error::forbidden`. None by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_allow: Vec<String>,
    /// Whether the plugin's publishes wait for a stream's PubAck before the
    /// input is settled (or replied to): `auto` when a stream captures the
    /// subject (asked of the server), `always`, or `never` (core publishes,
    /// which a stream that is not accepting drops without a word).
    #[serde(default, skip_serializing_if = "PublishAck::is_auto")]
    pub publish_ack: PublishAck,
    /// What the plugin may see of the host through WASI; nothing by default.
    #[serde(default, skip_serializing_if = "WasiConfig::is_empty")]
    pub wasi: WasiConfig,
    #[serde(rename = "binding", default)]
    pub bindings: Vec<BindingConfig>,
}

impl PluginConfig {
    /// A plugin table with every optional key at its default and no bindings.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> PluginConfig {
        PluginConfig {
            name: name.into(),
            path: path.into(),
            config: BTreeMap::new(),
            timeout: default_plugin_timeout(),
            memory: default_plugin_memory(),
            concurrency: default_concurrency(),
            batch: true,
            publish_allow: default_publish_allow(),
            request_allow: Vec::new(),
            publish_ack: PublishAck::Auto,
            wasi: WasiConfig::default(),
            bindings: Vec::new(),
        }
    }
}

fn default_plugin_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_true() -> bool {
    true
}

fn default_concurrency() -> usize {
    1
}

fn default_plugin_memory() -> ByteSize {
    ByteSize::mib(64)
}

fn default_publish_allow() -> Vec<String> {
    vec![">".into()]
}

/// `publish_ack`: which of a plugin's publishes are JetStream publishes
/// whose PubAck the input's settlement waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishAck {
    /// Those to subjects a stream of the account captures.
    #[default]
    Auto,
    /// Every publish (a stream the gateway cannot list, in another account).
    Always,
    /// None: plain core publishes.
    Never,
}

impl PublishAck {
    fn is_auto(&self) -> bool {
        *self == PublishAck::Auto
    }
}

/// `[plugin.wasi]`: WASI capabilities granted to one plugin. Without this
/// table a plugin gets clocks and random numbers only: no environment, no
/// files, no network, and its stdout/stderr go nowhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WasiConfig {
    /// Host environment variables passed through, by name (the values are
    /// read when the plugin loads; an unset variable stays unset).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Host directories the plugin may read, each at a guest path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preopen: Vec<PreopenConfig>,
    /// The guest's stdout goes to the gateway's stdout.
    pub inherit_stdout: bool,
    /// The guest's stderr goes to the gateway's stderr.
    pub inherit_stderr: bool,
}

impl WasiConfig {
    /// Nothing granted.
    pub fn is_empty(&self) -> bool {
        *self == WasiConfig::default()
    }
}

/// One read-only directory grant: `{ host = "path", guest = "/data" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreopenConfig {
    /// The directory on the host; relative paths are relative to the config file.
    pub host: PathBuf,
    /// Where the plugin sees it: an absolute guest path such as `/data`.
    pub guest: String,
}

/// A size as a human string (`"64MiB"`, `"1 GB"`) or a number of bytes.
fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a size like \"64MiB\" or a number of bytes")]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(n) => Ok(ByteSize::b(n)),
        Raw::Text(s) => s
            .parse::<ByteSize>()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a size like \"64MiB\""))),
    }
}

fn optional_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    size(d).map(Some)
}

/// `[[plugin.binding]]`: a subscription feeding the plugin, core NATS by
/// default, JetStream when it has a `[plugin.binding.jetstream]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// Subject filter; wildcards allowed. For JetStream, the consumer's filter subject.
    pub subject: String,
    /// Queue group: members share the messages instead of each getting a copy (core only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Consume from a JetStream durable pull consumer instead of a core subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStreamConfig>,
    /// Bytes of messages this core binding may hold waiting (default
    /// `nats.binding_buffer`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_size"
    )]
    pub buffer: Option<ByteSize>,
}

/// Where a JetStream consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliverPolicy {
    All,
    New,
    Last,
    LastPerSubject,
}

/// Stream storage, when the gateway creates the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Storage {
    File,
    Memory,
}

/// `[plugin.binding.jetstream]`: at-least-once delivery from a durable pull consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamConfig {
    /// The stream to consume from.
    pub stream: String,
    /// The durable consumer's name; gateways sharing it share the work.
    pub consumer: String,
    /// Create what is missing of the stream and consumer at start, on every
    /// reconnect, and whenever the server has lost them. An existing stream
    /// is never changed; an existing consumer only in the fields the binding
    /// owns (`ack_wait`, `max_deliver`, `max_ack_pending`).
    #[serde(default)]
    pub create: bool,
    /// Replicas of a stream `create` makes (a consumer it makes takes the
    /// stream's).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Subjects of the stream when `create` makes it (default: the binding's subject).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stream_subjects: Vec<String>,
    /// Storage of the stream when `create` makes it.
    #[serde(default = "default_storage")]
    pub storage: Storage,
    #[serde(default = "default_deliver_policy")]
    pub deliver_policy: DeliverPolicy,
    /// How long the server waits for an ack before redelivering.
    #[serde(default = "default_ack_wait", with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries before a failing message is dead-lettered; 0 = unlimited.
    #[serde(default = "default_max_deliver")]
    pub max_deliver: u32,
    /// Unacknowledged messages the server lets this consumer have out at once.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: u32,
    /// Nak delay after a failed delivery n is `backoff[n-1]` (the last entry
    /// repeats). A delivery that is never settled is redelivered after `ack_wait`.
    #[serde(default = "default_js_backoff", with = "duration_list")]
    pub backoff: Vec<Duration>,
    /// Where rejected and exhausted messages go, with headers saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// Idle heartbeat of the pull; two missed mean the consumer is re-attached.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Messages requested per pull.
    #[serde(default = "default_pull_batch")]
    pub pull_batch: usize,
}

/// A list of human durations (`["1s", "5s"]`).
mod duration_list {
    use humantime_serde::Serde;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|d| Serde::from(*d))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Ok(Vec::<Serde<Duration>>::deserialize(d)?
            .into_iter()
            .map(|d| d.into_inner())
            .collect())
    }
}

fn default_replicas() -> usize {
    1
}

fn default_storage() -> Storage {
    Storage::File
}
fn default_deliver_policy() -> DeliverPolicy {
    DeliverPolicy::All
}
fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_max_deliver() -> u32 {
    5
}
fn default_max_ack_pending() -> u32 {
    1000
}
fn default_js_backoff() -> Vec<Duration> {
    vec![
        Duration::from_secs(1),
        Duration::from_secs(5),
        Duration::from_secs(30),
    ]
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}
fn default_pull_batch() -> usize {
    256
}
