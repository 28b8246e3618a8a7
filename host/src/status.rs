//! The gateway's reconnect status: what the supervisor decided (connection
//! state, failure count, attempts, reconnects, last error) and every binding's
//! state, published on a `watch` channel so that `/status`, `/readyz` and
//! embedding code read one source, and can wait for changes.
//!
//! Per-message counters live in atomics beside it (see [`BindingCounters`]),
//! so the hot path never takes the watch's lock; [`StatusHub::snapshot`] folds
//! them in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::watch;

/// The supervised connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionState {
    /// First connection not made yet.
    Connecting,
    /// Connected, and the last health probe (if any) succeeded.
    Connected,
    /// Connected, but health probes are failing (below the threshold).
    Degraded,
    /// The client lost the connection and is reconnecting on its own.
    Disconnected,
    /// The supervisor gave up on the client and is building a new one.
    Reconnecting,
    /// Reconnect attempts are used up.
    Failed,
    /// Shutting down: draining subscriptions and in-flight handlers.
    Draining,
    /// Shut down.
    Stopped,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Degraded => "degraded",
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Failed => "failed",
            ConnectionState::Draining => "draining",
            ConnectionState::Stopped => "stopped",
        }
    }
}

/// One binding's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BindingState {
    /// Not subscribed yet, or waiting for the server to confirm.
    Pending,
    /// Subscribed and confirmed by the server.
    Bound,
    /// The connection is down; the subscription will be restored.
    Rebinding,
    /// Subscribing failed; retried on every health tick.
    Failed,
    /// Drained at shutdown.
    Stopped,
}

/// Message counters of one binding, updated on the hot path.
#[derive(Debug, Default)]
pub struct BindingCounters {
    /// `handle` returned ok.
    pub handled: AtomicU64,
    /// `handle` asked for a retry.
    pub retried: AtomicU64,
    /// `handle` rejected the message.
    pub rejected: AtomicU64,
    /// `handle` trapped or ran past its deadline.
    pub trapped: AtomicU64,
    /// Publishing the outbox or the reply (or settling a JetStream message) failed.
    pub publish_failed: AtomicU64,
    /// JetStream messages dead-lettered and terminated.
    pub dead_lettered: AtomicU64,
    /// Dead letters that could not be delivered (no PubAck in time, the
    /// stream refused, the server could not say which stream captures the
    /// subject): the message was nak'd and comes back.
    pub dead_letter_failed: AtomicU64,
    /// Messages shed (core) or nak'd (JetStream) because the host was saturated.
    pub shed: AtomicU64,
    /// `handle-batch` calls that trapped or ran out of time, whose messages
    /// were then handled again one at a time.
    pub batches_rerun: AtomicU64,
    /// `handle-batch` calls made; `handled` / `batches` is the mean batch size.
    pub batches: AtomicU64,
}

/// A binding as shown in the status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindingStatus {
    pub plugin: String,
    pub subject: String,
    /// `core` or `jetstream`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    pub state: BindingState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Something about the binding's stream or consumer to look at that does
    /// not stop it (a stream the gateway did not make that does not capture
    /// the binding's subject); kept until the binding is declared again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub handled: u64,
    pub retried: u64,
    pub rejected: u64,
    pub trapped: u64,
    pub publish_failed: u64,
    pub dead_lettered: u64,
    pub dead_letter_failed: u64,
    pub shed: u64,
    pub batches_rerun: u64,
    pub batches: u64,
}

/// The whole status, as `GET /status` returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub state: ConnectionState,
    /// `true` when connected and every binding is confirmed by the server.
    pub ready: bool,
    /// The server currently connected to, as `host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Consecutive failed health probes.
    pub consecutive_failures: u32,
    /// Attempts in the current reconnect (client's own or the supervisor's); 0 when connected.
    pub reconnect_attempts: u32,
    /// Completed reconnects since start (the first connection is not one).
    pub total_reconnects: u64,
    /// When the last reconnect completed (RFC 3339).
    #[serde(with = "rfc3339_opt")]
    pub last_reconnect: Option<SystemTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Round trip of the last successful health probe, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_probe_rtt_us: Option<u64>,
    /// Slow-consumer events reported by the client (messages were dropped).
    pub slow_consumer_events: u64,
    /// Config or plugin reloads applied since start.
    pub config_reloads: u64,
    /// Why the last refused reload was refused (the old version kept running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reload_error: Option<String>,
    /// Each plugin and the version of it that runs (1 at start, +1 per swap).
    pub plugins: Vec<PluginStatus>,
    /// Compile cache counts since start; absent when the cache is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile_cache: Option<crate::cache::CacheStats>,
    pub bindings: Vec<BindingStatus>,
}

/// A plugin as shown in the status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub path: String,
    /// 1 at start, +1 per hot swap.
    pub version: u64,
    /// Publishes the host refused since this version was loaded (any reason).
    pub publish_refused: u64,
    /// Of those, refused by `publish_allow`.
    pub publish_forbidden: u64,
    /// Whether bindings hand it batches (`handle-batch`).
    pub batched: bool,
    /// Whether it imports `delivery` (reads JetStream metadata).
    pub reads_delivery: bool,
    /// Whether its JetStream bindings hand it batches too: false for a
    /// plugin built against WIT 0.1.2/0.1.3 that reads `delivery`, which
    /// gets one `handle` per JetStream message instead.
    pub jetstream_batched: bool,
}

fn binding_statuses(bindings: &[BindingSpec]) -> Vec<BindingStatus> {
    bindings
        .iter()
        .map(|b| BindingStatus {
            plugin: b.plugin.clone(),
            subject: b.subject.clone(),
            kind: if b.stream.is_some() {
                "jetstream"
            } else {
                "core"
            },
            stream: b.stream.clone(),
            consumer: b.consumer.clone(),
            queue: b.queue.clone(),
            state: BindingState::Pending,
            error: None,
            warning: None,
            handled: 0,
            retried: 0,
            rejected: 0,
            trapped: 0,
            publish_failed: 0,
            dead_lettered: 0,
            dead_letter_failed: 0,
            shed: 0,
            batches_rerun: 0,
            batches: 0,
        })
        .collect()
}

impl Status {
    fn compute_ready(&self) -> bool {
        self.state == ConnectionState::Connected
            && self.bindings.iter().all(|b| b.state == BindingState::Bound)
    }
}

mod rfc3339_opt {
    use serde::Serializer;
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// What the status shows of a binding that never changes.
#[derive(Debug, Clone, Default)]
pub struct BindingSpec {
    pub plugin: String,
    pub subject: String,
    pub queue: Option<String>,
    pub stream: Option<String>,
    pub consumer: Option<String>,
}

/// Where the status lives; cheap to clone.
#[derive(Clone, Debug)]
pub struct StatusHub {
    tx: Arc<watch::Sender<Status>>,
    counters: Arc<RwLock<Vec<Arc<BindingCounters>>>>,
    plugins: Arc<RwLock<Vec<Arc<crate::plugin::PluginSlot>>>>,
    cache: Option<Arc<crate::cache::CompileCache>>,
}

impl StatusHub {
    /// A hub for these bindings (all pending) and their counters.
    pub fn new(bindings: &[BindingSpec], counters: Vec<Arc<BindingCounters>>) -> StatusHub {
        let status = Status {
            state: ConnectionState::Connecting,
            ready: false,
            server: None,
            consecutive_failures: 0,
            reconnect_attempts: 0,
            total_reconnects: 0,
            last_reconnect: None,
            last_error: None,
            last_probe_rtt_us: None,
            slow_consumer_events: 0,
            config_reloads: 0,
            last_reload_error: None,
            plugins: Vec::new(),
            compile_cache: None,
            bindings: binding_statuses(bindings),
        };
        let (tx, _) = watch::channel(status);
        StatusHub {
            tx: Arc::new(tx),
            counters: Arc::new(RwLock::new(counters)),
            plugins: Arc::default(),
            cache: None,
        }
    }

    /// Show this compile cache's counts in every snapshot.
    pub fn with_compile_cache(mut self, cache: Option<Arc<crate::cache::CompileCache>>) -> Self {
        self.cache = cache;
        self
    }

    /// The plugins the status shows (at start and after a reload).
    pub fn set_plugins(&self, slots: Vec<Arc<crate::plugin::PluginSlot>>) {
        *self.plugins.write().expect("status plugins lock") = slots;
        let plugins = self.plugin_statuses();
        self.update(|s| s.plugins = plugins);
    }

    fn plugin_statuses(&self) -> Vec<PluginStatus> {
        self.plugins
            .read()
            .expect("status plugins lock")
            .iter()
            .map(|slot| {
                let (plugin, version) = slot.current();
                let c = plugin.counters();
                PluginStatus {
                    name: plugin.name().to_string(),
                    path: plugin.path().display().to_string(),
                    version,
                    publish_refused: c.publish_refused.load(Ordering::Relaxed),
                    publish_forbidden: c.publish_forbidden.load(Ordering::Relaxed),
                    batched: plugin.batched(),
                    reads_delivery: plugin.reads_delivery(),
                    jetstream_batched: plugin.batches_jetstream(),
                }
            })
            .collect()
    }

    /// A new binding set (after a config reload): all pending, with these counters.
    pub fn replace_bindings(&self, bindings: &[BindingSpec], counters: Vec<Arc<BindingCounters>>) {
        *self.counters.write().expect("status counters lock") = counters;
        self.update(|s| s.bindings = binding_statuses(bindings));
    }

    /// The current status with fresh counters.
    pub fn snapshot(&self) -> Status {
        let mut status = self.tx.borrow().clone();
        status.plugins = self.plugin_statuses();
        status.compile_cache = self.cache.as_ref().map(|c| c.stats());
        let counters = self.counters.read().expect("status counters lock");
        for (b, c) in status.bindings.iter_mut().zip(counters.iter()) {
            b.handled = c.handled.load(Ordering::Relaxed);
            b.retried = c.retried.load(Ordering::Relaxed);
            b.rejected = c.rejected.load(Ordering::Relaxed);
            b.trapped = c.trapped.load(Ordering::Relaxed);
            b.publish_failed = c.publish_failed.load(Ordering::Relaxed);
            b.dead_lettered = c.dead_lettered.load(Ordering::Relaxed);
            b.dead_letter_failed = c.dead_letter_failed.load(Ordering::Relaxed);
            b.shed = c.shed.load(Ordering::Relaxed);
            b.batches_rerun = c.batches_rerun.load(Ordering::Relaxed);
            b.batches = c.batches.load(Ordering::Relaxed);
        }
        status
    }

    /// A receiver that wakes on every state change (not on counter changes).
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.tx.subscribe()
    }

    /// Change the status; `ready` is recomputed.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        self.tx.send_modify(|s| {
            f(s);
            s.ready = s.compute_ready();
        });
    }

    /// Set one binding's state and error.
    /// Set or clear a binding's warning.
    pub fn set_binding_warning(&self, index: usize, warning: Option<String>) {
        self.update(|s| {
            if let Some(b) = s.bindings.get_mut(index) {
                b.warning = warning;
            }
        });
    }

    pub fn set_binding(&self, index: usize, state: BindingState, error: Option<String>) {
        self.update(|s| {
            if let Some(b) = s.bindings.get_mut(index) {
                b.state = state;
                b.error = error;
            }
        });
    }

    /// Set every binding's state (and clear or keep errors).
    pub fn set_all_bindings(&self, state: BindingState) {
        self.update(|s| {
            for b in &mut s.bindings {
                if b.state != BindingState::Failed || state == BindingState::Stopped {
                    b.state = state;
                }
            }
        });
    }
}
