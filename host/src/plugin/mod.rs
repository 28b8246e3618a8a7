//! Plugins outside a gateway: load and check a component, and call it, as
//! the gateway would, without NATS (what `wasmgate check` and `wasmgate
//! invoke` do). A gateway's running plugins are the same [`Plugin`] values
//! ([`Gateway::plugin`](crate::Gateway::plugin)).
//!
//! A [`Runtime`] is the engine and the host interfaces;
//! [`Plugin::load`] compiles a component once, checks it and
//! pre-instantiates it; [`Plugin::instantiate`] makes an [`Instance`], whose
//! [`handle`](Instance::handle) runs one [`Message`] (and
//! [`handle_batch`](Instance::handle_batch) a [`Batch`], for a plugin that
//! exports `batch-handler`).
//!
//! Load-time checks give a [`LoadError`] that names the plugin and the file:
//! the file is missing, is not WebAssembly, is a core module rather than a
//! component, does not export the `wasmgate:plugin` handler, or imports
//! something the host does not provide.
//!
//! Compiling goes through the runtime's [`CompileCache`] when `[runtime]
//! cache_dir` is set; [`Plugin::cache_outcome`] says whether this load was a
//! hit.
//!
//! Each instance gets the WASI capabilities of its `[plugin.wasi]` table and
//! nothing else: clocks and random numbers always; the listed environment
//! variables (read once, at load), read-only preopened directories, and the
//! host's stdout/stderr only when granted. No arguments, stdin or network.
//!
//! A guest's own error (`retry`, `reject`) is an [`Outcome`]; a trap (panic,
//! deadline, memory limit, stack overflow) is a [`CallError`]. They never mix.
//! After a trap the instance is discarded and the next call gets a fresh one.
//! A reply larger than the server's max payload cannot be delivered, so it
//! becomes a rejection (the requester gets an error reply instead of nothing).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, InstancePre};
use wasmtime::{Store, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx};

use crate::config::{PluginConfig, PreopenConfig};
use crate::runtime::bindings::{self, BatchIndices, HandlerIndices};
use crate::runtime::{HostState, PluginShared};

mod codec;
mod instance;
mod slot;

pub use crate::cache::{CacheOutcome, CompileCache};
pub use crate::runtime::bindings::Message;
pub use crate::runtime::{Outgoing, PluginCounters, Runtime};
pub use codec::{Batch, BatchResult, BatchResults};
pub use instance::{CallError, Handled, Instance, Outcome};
pub(crate) use slot::PluginSlot;

impl From<async_nats::Message> for Message {
    /// A NATS message as a handler sees it: subject, payload, headers (a
    /// header with several values is one pair per value) and reply-to, as
    /// the gateway hands a core message to `handle`.
    #[inline]
    fn from(msg: async_nats::Message) -> Message {
        let headers = msg
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .flat_map(|(name, values)| {
                        values
                            .iter()
                            .map(move |v| (name.to_string(), v.as_str().to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Message {
            subject: msg.subject.to_string(),
            payload: msg.payload.to_vec(),
            headers,
            reply_to: msg.reply.map(|r| r.to_string()),
        }
    }
}

/// Why a plugin could not be loaded: which plugin, which file, and what
/// was wrong with it (nats.rs's `Error<Kind>` shape, so a new kind is one
/// variant, not another copy of `plugin` and `path`).
#[derive(Debug, thiserror::Error)]
pub struct LoadError {
    /// The plugin's name, from its `[[plugin]]` table.
    pub plugin: String,
    /// The component file it was loaded from.
    pub path: PathBuf,
    /// What was wrong.
    #[source]
    pub kind: LoadErrorKind,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            // Names its own path: the preopened directory, not the component.
            LoadErrorKind::Preopen { .. } => write!(f, "plugin {:?}: {}", self.plugin, self.kind),
            kind => write!(
                f,
                "plugin {:?}: {}: {kind}",
                self.plugin,
                self.path.display()
            ),
        }
    }
}

/// What was wrong with a plugin's file or its grants.
#[derive(Debug, thiserror::Error)]
pub enum LoadErrorKind {
    /// There is no file at the path.
    #[error("file not found")]
    Missing,
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    /// The file is not WebAssembly.
    #[error("not a WebAssembly file (bad magic bytes)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "is a core WebAssembly module, not a component; build it for wasm32-wasip2 (or run `wasm-tools component new`)"
    )]
    CoreModule,
    /// wasmtime refused to compile it (wasmtime's reason).
    #[error("invalid component: {0}")]
    Invalid(String),
    /// It does not export the handler interface this host calls (or exports
    /// it, or `batch-handler`, with the wrong shape).
    #[error(
        "wrong world: it does not export `{expected}` (exports: {found}); build it against the `{world}` world in wit/"
    )]
    WrongWorld {
        /// The export it should have.
        expected: &'static str,
        /// The world to build it against.
        world: &'static str,
        /// What it exports instead (or why the export does not fit).
        found: String,
    },
    /// It imports something the host does not provide.
    #[error("cannot be linked: {0}")]
    Link(String),
    /// A directory of its `wasi.preopen` grant cannot be opened.
    #[error("wasi.preopen {}: cannot open: {reason}", host.display())]
    Preopen {
        /// The host directory.
        host: PathBuf,
        /// Why it cannot be opened.
        reason: String,
    },
}

impl LoadErrorKind {
    fn of(self, plugin: &str, path: &Path) -> LoadError {
        LoadError {
            plugin: plugin.to_string(),
            path: path.to_path_buf(),
            kind: self,
        }
    }
}

/// A loaded, checked and pre-instantiated plugin.
pub struct Plugin {
    runtime: Runtime,
    pre: InstancePre<HostState>,
    handler: HandlerIndices,
    /// Set when the component exports `batch-handler` and the config lets
    /// the host use it.
    batch: Option<BatchIndices>,
    /// The component imports `delivery` (any 0.1.x).
    reads_delivery: bool,
    /// Its batch export is 0.1.4 or later: the batch encoding carries each
    /// message's JetStream metadata.
    batch_jetstream: bool,
    shared: Arc<PluginShared>,
    path: PathBuf,
    timeout: Duration,
    memory: usize,
    grants: WasiGrants,
    publish_ack: crate::config::PublishAck,
    cache_outcome: CacheOutcome,
    /// Keeps the compiled code in the runtime's table while this plugin
    /// uses it (entries of the same bytes share it).
    _code: Arc<wasmtime::component::Component>,
}

/// What `[plugin.wasi]` grants, resolved at load time.
#[derive(Debug, Clone, Default)]
struct WasiGrants {
    /// Names and values of the passed-through variables that are set.
    env: Vec<(String, String)>,
    preopen: Vec<PreopenConfig>,
    inherit_stdout: bool,
    inherit_stderr: bool,
}

impl WasiGrants {
    fn resolve(plugin: &str, config: &crate::config::WasiConfig) -> WasiGrants {
        let mut env = Vec::new();
        for name in &config.env {
            match std::env::var(name) {
                Ok(value) => env.push((name.clone(), value)),
                Err(e) => tracing::warn!(
                    plugin,
                    variable = name.as_str(),
                    "wasi.env: not passed to the plugin: {e}"
                ),
            }
        }
        WasiGrants {
            env,
            preopen: config.preopen.clone(),
            inherit_stdout: config.inherit_stdout,
            inherit_stderr: config.inherit_stderr,
        }
    }

    /// A WASI context with exactly these grants (plus clocks and random).
    fn build(&self) -> Result<WasiCtx, (PathBuf, String)> {
        let mut b = WasiCtx::builder();
        for (name, value) in &self.env {
            b.env(name, value);
        }
        for p in &self.preopen {
            b.preopened_dir(&p.host, &p.guest, FsPerms::ReadOnly)
                .map_err(|e| (p.host.clone(), format!("{e:#}")))?;
        }
        if self.inherit_stdout {
            b.inherit_stdout();
        }
        if self.inherit_stderr {
            b.inherit_stderr();
        }
        Ok(b.build())
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.shared.name)
            .field("path", &self.path)
            .finish()
    }
}

impl Plugin {
    /// Load, check and pre-instantiate the plugin a `[[plugin]]` table
    /// describes, exactly as the gateway does at start-up and on reload: the
    /// same checks, the same host interfaces, its WASI grants, deadline and
    /// memory limit. `max_payload` is the largest payload in bytes a publish
    /// or a reply of this plugin may have, as a NATS server's `max_payload`
    /// (the gateway uses the connected server's); 0 checks no size.
    pub fn load(
        runtime: &Runtime,
        config: &PluginConfig,
        max_payload: usize,
    ) -> Result<Plugin, LoadError> {
        Plugin::load_shared(
            runtime,
            config,
            Arc::new(AtomicUsize::new(max_payload)),
            crate::runtime::NatsLink::none(),
        )
    }

    /// [`load`](Self::load) with a NATS client for the plugin's requests
    /// (`requester`), whose futures run on `runtime`: what `wasmgate invoke
    /// --nats` uses. Calls must then not run on one of that runtime's threads.
    pub fn load_connected(
        runtime: &Runtime,
        config: &PluginConfig,
        max_payload: usize,
        client: async_nats::Client,
        nats_runtime: tokio::runtime::Handle,
    ) -> Result<Plugin, LoadError> {
        Plugin::load_shared(
            runtime,
            config,
            Arc::new(AtomicUsize::new(max_payload)),
            crate::runtime::NatsLink {
                client: tokio::sync::watch::channel(Some(client)).1,
                runtime: Some(nats_runtime),
            },
        )
    }

    /// [`load`](Self::load) with the max payload the gateway shares between
    /// its plugins: 0 until connected, then the server's.
    pub(crate) fn load_shared(
        runtime: &Runtime,
        config: &PluginConfig,
        max_payload: Arc<AtomicUsize>,
        nats: crate::runtime::NatsLink,
    ) -> Result<Plugin, LoadError> {
        let name = config.name.clone();
        let path = config.path.clone();
        let bytes = std::fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                LoadErrorKind::Missing.of(&name, &path)
            } else {
                LoadErrorKind::Read(source).of(&name, &path)
            }
        })?;
        let started = Instant::now();
        let (component, cache_outcome) = compile(runtime, &name, &path, &bytes)?;
        tracing::info!(
            plugin = name.as_str(),
            path = %path.display(),
            cache = cache_outcome.as_str(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "{}",
            match cache_outcome {
                CacheOutcome::Hit => "plugin loaded from the compile cache",
                CacheOutcome::Shared => "plugin shares the compiled code of another entry",
                _ => "plugin compiled",
            }
        );
        let (pre, handler, batch) = link(runtime, &name, &path, &component)?;
        let reads_delivery = component
            .component_type()
            .imports(runtime.engine())
            .any(|(name, _)| name.starts_with(bindings::DELIVERY_IMPORT));
        let batch_jetstream = component
            .component_type()
            .exports(runtime.engine())
            .any(|(name, _)| bindings::batch_carries_jetstream(name));
        let grants = WasiGrants::resolve(&name, &config.wasi);
        // Open the preopens once now, so a bad grant stops the load, not a message.
        grants
            .build()
            .map_err(|(host, reason)| LoadErrorKind::Preopen { host, reason }.of(&name, &path))?;
        let shared = Arc::new(PluginShared {
            name,
            config: config
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            max_payload,
            publish_allow: config.publish_allow.clone(),
            request_allow: config.request_allow.clone(),
            nats,
            counters: PluginCounters::default(),
        });
        Ok(Plugin {
            runtime: runtime.clone(),
            pre,
            handler,
            batch: batch.filter(|_| config.batch),
            reads_delivery,
            batch_jetstream,
            shared,
            path,
            timeout: config.timeout,
            memory: config.memory.as_u64().min(usize::MAX as u64) as usize,
            grants,
            publish_ack: config.publish_ack,
            cache_outcome,
            _code: component,
        })
    }

    /// Whether this load compiled the component or took it from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache_outcome
    }

    /// Its name, from the `[[plugin]]` table.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The component file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether bindings hand this plugin whole batches (`handle-batch`).
    pub fn batched(&self) -> bool {
        self.batch.is_some()
    }

    /// Whether the plugin imports `delivery` (reads the JetStream metadata
    /// of the message in hand).
    pub fn reads_delivery(&self) -> bool {
        self.reads_delivery
    }

    /// Whether JetStream bindings hand this plugin batches too: it is
    /// batched, and either it does not read `delivery` or its batch
    /// encoding carries each message's metadata (0.1.4 on). A 0.1.2/0.1.3
    /// plugin that reads `delivery` gets one `handle` per JetStream message,
    /// since its `delivery` answers for "the message in hand".
    pub fn batches_jetstream(&self) -> bool {
        self.batched() && (self.batch_jetstream || !self.reads_delivery)
    }

    /// An empty batch in the encoding this plugin's `handle-batch` reads.
    pub fn new_batch(&self) -> Batch {
        if self.batch_jetstream {
            Batch::new()
        } else {
            Batch::without_jetstream()
        }
    }

    /// The deadline of one `handle` call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Which of its publishes wait for a stream's PubAck (`publish_ack`).
    pub fn publish_ack(&self) -> crate::config::PublishAck {
        self.publish_ack
    }

    /// What the host refused of its publishes since this version was loaded.
    pub fn counters(&self) -> &PluginCounters {
        &self.shared.counters
    }

    /// A new instance: a store with its own memory limit and the plugin's WASI grants.
    pub fn instantiate(self: &Arc<Self>) -> Result<Instance, CallError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.memory)
            .trap_on_grow_failure(true)
            .build();
        let wasi = self.grants.build().map_err(|(host, reason)| {
            CallError::Instantiate(format!("wasi.preopen {}: {reason}", host.display()))
        })?;
        let state = HostState {
            wasi,
            table: wasmtime::component::ResourceTable::new(),
            limits,
            plugin: self.shared.clone(),
            outbox: Vec::new(),
            delivery: None,
            deadline: None,
            log_sink: None,
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.runtime.deadline_ticks(self.timeout));
        let instantiate = |store: &mut Store<HostState>| -> wasmtime::Result<_> {
            let instance = self.pre.instantiate(&mut *store)?;
            let handler = self.handler.load(&mut *store, &instance)?;
            let batch = match &self.batch {
                Some(indices) => Some(indices.load(&mut *store, &instance)?),
                None => None,
            };
            Ok((handler, batch))
        };
        let (handler, batch) =
            instantiate(&mut store).map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        Ok(Instance {
            plugin: self.clone(),
            store,
            handler,
            batch,
        })
    }
}

fn compile(
    runtime: &Runtime,
    plugin: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<(Arc<Component>, CacheOutcome), LoadError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(LoadErrorKind::NotWasm.of(plugin, path));
    }
    // Byte 4..8 is the version/layer: 1 for core modules, 0x0d 0x00 0x01 0x00 for components.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadErrorKind::CoreModule.of(plugin, path));
    }
    runtime
        .compile(bytes)
        .map_err(|e| LoadErrorKind::Invalid(format!("{e:#}")).of(plugin, path))
}

fn link(
    runtime: &Runtime,
    plugin: &str,
    path: &Path,
    component: &Component,
) -> Result<(InstancePre<HostState>, HandlerIndices, Option<BatchIndices>), LoadError> {
    // Semver-aware: a plugin built against any 0.1.x exports a compatible handler.
    if component
        .get_export_index(None, bindings::HANDLER_EXPORT)
        .is_none()
    {
        let ty = component.component_type();
        let exports: Vec<&str> = ty.exports(runtime.engine()).map(|(name, _)| name).collect();
        return Err(LoadErrorKind::WrongWorld {
            expected: bindings::HANDLER_EXPORT,
            world: bindings::WORLD,
            found: if exports.is_empty() {
                "none".into()
            } else {
                exports.join(", ")
            },
        }
        .of(plugin, path));
    }
    let instance_pre = runtime
        .linker()
        .instantiate_pre(component)
        .map_err(|e| LoadErrorKind::Link(format!("{e:#}")).of(plugin, path))?;
    let wrong_world = |e: wasmtime::Error| {
        LoadErrorKind::WrongWorld {
            expected: bindings::HANDLER_EXPORT,
            world: bindings::WORLD,
            found: format!("{e:#}"),
        }
        .of(plugin, path)
    };
    let handler = HandlerIndices::new(&instance_pre).map_err(wrong_world)?;
    // Optional: absent is fine, but present with the wrong shape is a bad build.
    let batch = if component
        .get_export_index(None, bindings::BATCH_HANDLER_EXPORT)
        .is_some()
    {
        let indices = BatchIndices::new(&instance_pre).map_err(|e| {
            LoadErrorKind::WrongWorld {
                expected: bindings::BATCH_HANDLER_EXPORT,
                world: bindings::BATCH_WORLD,
                found: format!("{e:#}"),
            }
            .of(plugin, path)
        })?;
        Some(indices)
    } else {
        None
    };
    Ok((instance_pre, handler, batch))
}
