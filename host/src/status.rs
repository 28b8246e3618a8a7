//! The gateway's status: what the supervisor decided (connection state,
//! failure count, attempts, reconnects, last error), every binding's state
//! and counters, and every plugin's running version. `GET /status` serves
//! it as JSON, `/readyz` and `/metrics` read it, and an embedder reads the
//! same values: [`Gateway::status`] for a snapshot, [`Gateway::status_watch`]
//! for a `watch` receiver that wakes on every change, [`Gateway::ready`] and
//! [`Gateway::wait_for`] to wait for one. Only the gateway writes it.
//!
//! [`Gateway::status`]: crate::Gateway::status
//! [`Gateway::status_watch`]: crate::Gateway::status_watch
//! [`Gateway::ready`]: crate::Gateway::ready
//! [`Gateway::wait_for`]: crate::Gateway::wait_for

// Per-message counters live in atomics beside the watch (`BindingCounters`),
// so the hot path never takes the watch's lock; `StatusHub::snapshot` folds
// them in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::watch;

pub use crate::cache::CacheStats;

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
    /// Its name in `/status` and `/metrics` (`connected`, `draining`, …).
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

/// Where a binding is in the status's list. A reload that keeps a binding
/// running can move it, so what reports on a binding holds this, not a number.
#[derive(Debug, Clone, Default)]
pub struct Position(Arc<std::sync::atomic::AtomicUsize>);

impl Position {
    pub fn new(index: usize) -> Position {
        Position(Arc::new(index.into()))
    }

    pub fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set(&self, index: usize) {
        self.0.store(index, std::sync::atomic::Ordering::Relaxed);
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

/// Declares every per-binding counter once: the atomic the hot path
/// updates ([`BindingCounters`]) and its value in the status ([`Counts`],
/// shown flattened into each binding of `/status`). A new counter is one
/// line here.
macro_rules! binding_counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Message counters of one binding, updated on the hot path.
        #[derive(Debug, Default)]
        pub(crate) struct BindingCounters {
            $( $(#[$doc])* pub(crate) $name: AtomicU64, )*
            /// Latency histograms, when `[telemetry] histograms` is on.
            pub(crate) times: Option<Box<crate::latency::Times>>,
        }

        /// The values of a binding's counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct Counts {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl BindingCounters {
            /// Fresh counters, with latency histograms or without.
            pub(crate) fn new(histograms: bool) -> BindingCounters {
                BindingCounters {
                    times: histograms.then(Box::default),
                    ..BindingCounters::default()
                }
            }

            /// Every counter, read now.
            pub(crate) fn counts(&self) -> Counts {
                Counts { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

binding_counters! {
    /// `handle` returned ok.
    handled,
    /// `handle` asked for a retry.
    retried,
    /// `handle` rejected the message.
    rejected,
    /// `handle` trapped or ran past its deadline.
    trapped,
    /// Publishing the outbox or the reply (or settling a JetStream message)
    /// failed, or a reply to a `$` subject was refused.
    publish_failed,
    /// Publishes a stream did not confirm (no PubAck in time, an error, or
    /// the server could not say which stream captures the subject): the
    /// input was nak'd (JetStream) or its requester got an error reply.
    publish_unconfirmed,
    /// JetStream messages dead-lettered and terminated.
    dead_lettered,
    /// Dead letters that could not be delivered (no PubAck in time, the
    /// stream refused, the server could not say which stream captures the
    /// subject): the message was nak'd and comes back.
    dead_letter_failed,
    /// Messages shed (core) or nak'd (JetStream) because the host was saturated.
    shed,
    /// Core messages dropped on arrival because the binding's buffer (or the
    /// gateway's) was full: each one a message, not an event.
    dropped,
    /// `handle-batch` calls that trapped or ran out of time, whose messages
    /// were then handled again one at a time.
    batches_rerun,
    /// `handle-batch` calls made; `handled` / `batches` is the mean batch size.
    batches,
}

/// A binding as shown in the status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindingStatus {
    /// The plugin that handles its messages.
    pub plugin: String,
    /// The subject (filter) it is bound to.
    pub subject: String,
    /// `core` or `jetstream`.
    pub kind: &'static str,
    /// The JetStream stream it consumes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The durable consumer it pulls from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// The queue group of a core binding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Where it stands.
    pub state: BindingState,
    /// Why it is not bound, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Something about the binding's stream or consumer to look at that does
    /// not stop it (a stream the gateway did not make that does not capture
    /// the binding's subject); kept until the binding is declared again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Its counters (`handled`, `retried`, …; `b.handled` reads through).
    #[serde(flatten)]
    pub counts: Counts,
}

impl std::ops::Deref for BindingStatus {
    type Target = Counts;

    fn deref(&self) -> &Counts {
        &self.counts
    }
}

/// The whole status, as `GET /status` returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The supervised connection's state.
    pub state: ConnectionState,
    /// `true` when connected and every binding is confirmed by the server.
    pub ready: bool,
    /// The server currently connected to, as `host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// That server's version, as it announced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Consecutive failed health probes.
    pub consecutive_failures: u32,
    /// Attempts in the current reconnect (client's own or the supervisor's); 0 when connected.
    pub reconnect_attempts: u32,
    /// Completed reconnects since start (the first connection is not one).
    pub total_reconnects: u64,
    /// When the last reconnect completed (RFC 3339).
    #[serde(with = "rfc3339_opt")]
    pub last_reconnect: Option<SystemTime>,
    /// The last connection, probe, binding or callback error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Round trip of the last successful health probe, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_probe_rtt_us: Option<u64>,
    /// Slow-consumer events reported by the client (messages were dropped).
    pub slow_consumer_events: u64,
    /// Moves to another server when the server entered lame duck mode
    /// (each also counts as a reconnect).
    pub lame_duck_switches: u64,
    /// Config or plugin reloads applied since start.
    pub config_reloads: u64,
    /// Why the last refused reload was refused (the old version kept running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reload_error: Option<String>,
    /// The last reload applied: what it changed and how long it took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reload: Option<LastReload>,
    /// Each plugin and the version of it that runs (1 at start, +1 per swap).
    pub plugins: Vec<PluginStatus>,
    /// Compile cache counts since start; absent when the cache is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile_cache: Option<CacheStats>,
    /// Every binding, in config order.
    pub bindings: Vec<BindingStatus>,
}

/// A plugin as shown in the status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginStatus {
    /// Its name, from its `[[plugin]]` table.
    pub name: String,
    /// The component file it runs.
    pub path: String,
    /// 1 at start, +1 per hot swap.
    pub version: u64,
    /// Publishes the host refused since this version was loaded (any reason).
    pub publish_refused: u64,
    /// Of those, refused by `publish_allow`.
    pub publish_forbidden: u64,
    /// Its requests (`requester`) by outcome since this version was loaded.
    pub requests: RequestStats,
    /// How long its requests waited (for `/metrics`; none before the first).
    #[serde(skip)]
    pub(crate) request_time: Option<crate::latency::Snapshot>,
    /// Whether bindings hand it batches (`handle-batch`).
    pub batched: bool,
    /// Whether it imports `delivery` (reads JetStream metadata).
    pub reads_delivery: bool,
    /// Whether its JetStream bindings hand it batches too: false for a
    /// plugin built against WIT 0.1.2/0.1.3 that reads `delivery`, which
    /// gets one `handle` per JetStream message instead.
    pub jetstream_batched: bool,
}

/// A plugin's requests by outcome, as shown in the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestStats {
    /// Answered.
    pub ok: u64,
    /// Sent, but nobody was subscribed to the subject.
    pub no_responders: u64,
    /// Not answered within the timeout (or the handler's deadline).
    pub timed_out: u64,
    /// Not sent: the host refused it (subject, grant, headers, size).
    pub refused: u64,
    /// Of those refused, by `request_allow` or a reserved header.
    pub forbidden: u64,
    /// Not answered for another reason (no connection, the client failed).
    pub unavailable: u64,
}

impl RequestStats {
    fn read(c: &crate::runtime::RequestCounts) -> RequestStats {
        RequestStats {
            ok: c.ok.load(Ordering::Relaxed),
            no_responders: c.no_responders.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            forbidden: c.forbidden.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
        }
    }
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
            counts: Counts::default(),
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

mod rfc3339 {
    use serde::Serializer;
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }
}

/// The last reload applied, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastReload {
    /// When it was applied (RFC 3339).
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    /// Reading and checking the config and loading what changed.
    pub load_ms: f64,
    /// Re-binding, until the new subscriptions were confirmed (0 when the
    /// bindings did not change).
    pub rebind_ms: f64,
    /// Plugins swapped to a new version, added, removed.
    pub swapped: usize,
    pub added: usize,
    pub removed: usize,
    /// Bindings left running, started, stopped by the re-binding.
    pub bindings_kept: usize,
    pub bindings_started: usize,
    pub bindings_stopped: usize,
}

/// What the status shows of a binding that never changes.
#[derive(Debug, Clone, Default)]
pub(crate) struct BindingSpec {
    pub plugin: String,
    pub subject: String,
    pub queue: Option<String>,
    pub stream: Option<String>,
    pub consumer: Option<String>,
}

/// Where the status lives; cheap to clone. Only the gateway writes it;
/// embedders read it through [`Gateway`](crate::Gateway).
#[derive(Clone, Debug)]
pub(crate) struct StatusHub {
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
            server_version: None,
            consecutive_failures: 0,
            reconnect_attempts: 0,
            total_reconnects: 0,
            last_reconnect: None,
            last_error: None,
            last_probe_rtt_us: None,
            slow_consumer_events: 0,
            lame_duck_switches: 0,
            config_reloads: 0,
            last_reload_error: None,
            last_reload: None,
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
                    requests: RequestStats::read(c.requests()),
                    request_time: c.request_time_snapshot(),
                    batched: plugin.batched(),
                    reads_delivery: plugin.reads_delivery(),
                    jetstream_batched: plugin.batches_jetstream(),
                }
            })
            .collect()
    }

    /// A new binding list (a config reload) with its counters. A binding the
    /// reload kept running keeps its state, error and warning: `kept[i]` is
    /// where binding `i` was.
    pub fn replace_bindings_keeping(
        &self,
        bindings: &[BindingSpec],
        counters: Vec<Arc<BindingCounters>>,
        kept: &[Option<usize>],
    ) {
        // Held while the bindings change too: a reader takes the counters'
        // lock before it reads the bindings, so it sees both old or both new.
        let mut held = self.counters.write().expect("status counters lock");
        *held = counters;
        self.update(|s| {
            let mut fresh = binding_statuses(bindings);
            for (b, from) in fresh.iter_mut().zip(kept) {
                if let Some(old) = from.and_then(|i| s.bindings.get(i)) {
                    b.state = old.state;
                    b.error = old.error.clone();
                    b.warning = old.warning.clone();
                }
            }
            s.bindings = fresh;
        });
        drop(held);
    }

    /// One binding's error as the status shows it.
    pub fn binding_error(&self, index: usize) -> Option<String> {
        self.tx
            .borrow()
            .bindings
            .get(index)
            .and_then(|b| b.error.clone())
    }

    /// The current status with fresh counters.
    pub fn snapshot(&self) -> Status {
        self.read(|_| ()).0
    }

    /// The status with fresh counters and, per binding in the same order,
    /// its latency histograms (`None` when they are off), read together.
    pub(crate) fn snapshot_with_times(
        &self,
    ) -> (Status, Vec<Option<[crate::latency::Snapshot; 3]>>) {
        let (status, times) = self.read(|c| {
            c.times.as_deref().map(|t| {
                [
                    t.handler.snapshot(),
                    t.queue_wait.snapshot(),
                    t.settle_delay.snapshot(),
                ]
            })
        });
        (status, times)
    }

    /// The status with fresh counts, and `more` of each binding's counters,
    /// all under one hold of the counters' lock taken before the bindings
    /// are read: a reload replaces both under that lock, so a scrape never
    /// gives one binding's figures another's labels.
    fn read<T>(&self, more: impl Fn(&BindingCounters) -> T) -> (Status, Vec<T>) {
        let counters = self.counters.read().expect("status counters lock");
        let mut status = self.tx.borrow().clone();
        status.plugins = self.plugin_statuses();
        status.compile_cache = self.cache.as_ref().map(|c| c.stats());
        for (b, c) in status.bindings.iter_mut().zip(counters.iter()) {
            b.counts = c.counts();
        }
        let extra = counters.iter().map(|c| more(c)).collect();
        (status, extra)
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

    /// Set or clear a binding's warning.
    pub fn set_binding_warning(&self, index: usize, warning: Option<String>) {
        self.update(|s| {
            if let Some(b) = s.bindings.get_mut(index) {
                b.warning = warning;
            }
        });
    }

    /// Set one binding's state and error.
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
