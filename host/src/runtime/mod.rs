//! The WebAssembly runtime: one wasmtime [`Engine`] for the whole gateway, the
//! [`Linker`] that gives plugins their imports (the `wasmgate:plugin` host
//! interfaces plus WASI p2, granting only what each plugin's `[plugin.wasi]`
//! lists), the epoch ticker that enforces handler deadlines, the compile
//! cache, and the per-store [`HostState`].
//!
//! Calls are synchronous with an epoch deadline: a `handle` call costs a few
//! hundred nanoseconds this way, against more for `call_async`, and the
//! deadline still bounds a looping guest.

pub mod bindings;
mod host;

pub(crate) use host::describe_publish_error;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::cache::{CacheOutcome, CompileCache};
use crate::config::RuntimeConfig;

/// A plugin may publish at most this many messages from the handling of one message.
pub(crate) const MAX_PUBLISHES_PER_CALL: usize = 1024;

/// A message a guest asked to publish, held until its `handle` call succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Where to publish it.
    pub subject: async_nats::Subject,
    /// Its payload.
    pub payload: Bytes,
    /// Its headers, in order (a name may repeat).
    pub headers: Vec<(String, String)>,
}

/// Counters a plugin's host functions update; [`Plugin::counters`]
/// reads them.
///
/// [`Plugin::counters`]: crate::plugin::Plugin::counters
#[derive(Debug, Default)]
pub struct PluginCounters {
    /// Publishes the host refused, for any reason (including `forbidden`).
    pub(crate) publish_refused: AtomicU64,
    /// Publishes refused because `publish_allow` does not match the subject.
    pub(crate) publish_forbidden: AtomicU64,
    /// Requests (`requester`) by outcome.
    pub(crate) requests: RequestCounts,
    /// How long each request sent waited for its outcome.
    pub(crate) request_time: crate::latency::Histogram,
}

/// A plugin's requests by outcome, since its version was loaded.
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// Answered.
    pub ok: AtomicU64,
    /// Sent, but nobody was subscribed.
    pub no_responders: AtomicU64,
    /// No answer in time (or no time left of the handler's deadline).
    pub timed_out: AtomicU64,
    /// Not sent: refused by the host (subject, grant, headers, size).
    pub refused: AtomicU64,
    /// Of those refused, by `request_allow` or a reserved header.
    pub forbidden: AtomicU64,
    /// Not answered for another reason (no connection, the client failed).
    pub unavailable: AtomicU64,
}

impl PluginCounters {
    /// Publishes the host refused, for any reason (including those
    /// [`publish_forbidden`](Self::publish_forbidden) counts).
    pub fn publish_refused(&self) -> u64 {
        self.publish_refused.load(Ordering::Relaxed)
    }

    /// Publishes refused because `publish_allow` does not match the subject.
    pub fn publish_forbidden(&self) -> u64 {
        self.publish_forbidden.load(Ordering::Relaxed)
    }

    /// Its requests by outcome.
    pub fn requests(&self) -> &RequestCounts {
        &self.requests
    }

    /// The request wait histogram, once a request was sent.
    pub(crate) fn request_time_snapshot(&self) -> Option<crate::latency::Snapshot> {
        let h = self.request_time.snapshot();
        (h.count > 0).then_some(h)
    }
}

/// How host calls reach NATS: the gateway's current client (none while it is
/// disconnected) and the runtime its futures run on. Outside a gateway
/// (`Plugin::load`, `wasmgate invoke`) there is neither.
#[derive(Debug, Clone)]
pub(crate) struct NatsLink {
    pub client: tokio::sync::watch::Receiver<Option<async_nats::Client>>,
    pub runtime: Option<tokio::runtime::Handle>,
}

impl NatsLink {
    /// The link of a gateway whose supervisor sends its current client on `client`.
    pub fn new(client: tokio::sync::watch::Receiver<Option<async_nats::Client>>) -> NatsLink {
        NatsLink {
            client,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// No connection, ever.
    pub fn none() -> NatsLink {
        NatsLink {
            client: tokio::sync::watch::channel(None).1,
            runtime: None,
        }
    }
}

/// What every store of one plugin shares.
#[derive(Debug)]
pub(crate) struct PluginShared {
    pub name: String,
    pub config: BTreeMap<String, String>,
    /// The server's max_payload; 0 until connected (then not checked here).
    pub max_payload: Arc<AtomicUsize>,
    /// Subject patterns the plugin may publish to (`publish_allow`).
    pub publish_allow: Vec<String>,
    /// Subject patterns the plugin may request (`request_allow`).
    pub request_allow: Vec<String>,
    pub nats: NatsLink,
    pub counters: PluginCounters,
}

impl PluginShared {
    /// Whether `publish_allow` lets the plugin publish to `subject`, under
    /// the reserved-namespace rules of [`crate::grants`].
    pub(crate) fn may_publish(&self, subject: &str) -> Result<(), crate::grants::Denied> {
        crate::grants::check(&self.publish_allow, subject)
    }
}

/// The data of one store (one plugin instance).
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) plugin: Arc<PluginShared>,
    pub(crate) outbox: Vec<Outgoing>,
    /// JetStream metadata of the message being handled, if any.
    pub(crate) delivery: Option<bindings::wasmgate::plugin::delivery::JetstreamInfo>,
    /// When the call in progress must end (its epoch deadline, which cannot
    /// interrupt a host call that waits: `requester` caps its wait by it).
    pub(crate) deadline: Option<std::time::Instant>,
    /// When set (by `wasmgate invoke`), guest log lines are also kept here.
    pub(crate) log_sink: Option<Vec<(&'static str, String)>>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The WebAssembly engine and the host interfaces every plugin is linked
/// against, with the ticker that enforces handler deadlines and, when
/// configured, the compile cache. One per gateway; cheap to clone (clones
/// share it). Needed to [`Plugin::load`](crate::plugin::Plugin::load) a
/// plugin outside a gateway.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    epoch_tick: Duration,
    cache: Option<Arc<CompileCache>>,
    /// The components plugins use, by the SHA-256 of their bytes: a hundred
    /// entries of one file share one copy of its machine code.
    loaded: Arc<Mutex<HashMap<[u8; 32], Weak<Component>>>>,
}

impl Runtime {
    /// Build the engine (epoch interruption on) and the linker, and start the
    /// epoch ticker thread, which stops when the engine is dropped.
    pub fn new(epoch_tick: Duration) -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // For profiling: name the guests' compiled functions in
        // /tmp/perf-<pid>.map, so that `perf report` shows them.
        if std::env::var_os("WASMGATE_PERFMAP").is_some_and(|v| !v.is_empty()) {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::BatchPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasmgate-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(epoch_tick);
                }
            })?;

        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            epoch_tick,
            cache: None,
            loaded: Arc::default(),
        })
    }

    /// [`Runtime::new`] with the `[runtime]` settings, including the compile
    /// cache. A cache folder that cannot be created is logged and the cache
    /// left off: it saves time, it is never needed.
    pub fn from_config(config: &RuntimeConfig) -> anyhow::Result<Runtime> {
        let mut runtime = Runtime::new(config.epoch_tick)?;
        if let Some(dir) = config.cache_dir() {
            runtime.use_cache_dir(dir, config.cache_max_size.as_u64());
        }
        Ok(runtime)
    }

    /// Cache compiled components under `dir`, in at most `max_size` bytes
    /// (0 = no limit; see [`crate::cache`]).
    pub(crate) fn use_cache_dir(&mut self, dir: &Path, max_size: u64) {
        match CompileCache::open(dir, &self.engine, max_size) {
            Ok(cache) => {
                tracing::debug!(dir = %cache.dir().display(), "compile cache");
                self.cache = Some(Arc::new(cache));
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "compile cache off: cannot create its folder");
                self.cache = None;
            }
        }
    }

    /// The compile cache, when there is one.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_deref()
    }

    /// A handle on the compile cache that outlives this runtime's borrow
    /// (for the status, which reads its counts at each snapshot).
    pub(crate) fn cache_handle(&self) -> Option<Arc<CompileCache>> {
        self.cache.clone()
    }

    /// The component for these bytes: the one a plugin already uses, or
    /// compiled (or loaded from the cache). Held by the plugins that use it;
    /// dropped with the last of them.
    pub(crate) fn compile(
        &self,
        wasm: &[u8],
    ) -> Result<(Arc<Component>, CacheOutcome), wasmtime::Error> {
        let sha: [u8; 32] = Sha256::digest(wasm).into();
        let shared =
            |loaded: &HashMap<[u8; 32], Weak<Component>>| loaded.get(&sha).and_then(Weak::upgrade);
        if let Some(c) = shared(&self.loaded.lock().expect("loaded components lock")) {
            return Ok((c, CacheOutcome::Shared));
        }
        // Compiled outside the lock: another plugin's load does not wait.
        let (component, outcome) = match &self.cache {
            Some(cache) => {
                cache.load_or_compile(&self.engine, wasm, || Component::new(&self.engine, wasm))?
            }
            None => (Component::new(&self.engine, wasm)?, CacheOutcome::Disabled),
        };
        let mut loaded = self.loaded.lock().expect("loaded components lock");
        if let Some(c) = shared(&loaded) {
            return Ok((c, CacheOutcome::Shared));
        }
        let component = Arc::new(component);
        loaded.retain(|_, c| c.strong_count() > 0);
        loaded.insert(sha, Arc::downgrade(&component));
        Ok((component, outcome))
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// Epoch ticks that cover `timeout`, plus one for the tick in progress.
    pub(crate) fn deadline_ticks(&self, timeout: Duration) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        (timeout.as_nanos().div_ceil(tick) as u64).saturating_add(1)
    }
}
