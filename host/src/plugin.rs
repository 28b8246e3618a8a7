//! A plugin: one component, compiled once, checked at load time and
//! pre-instantiated, plus the [`Instance`]s that run its `handle` calls.
//!
//! Load-time checks give an error that names the plugin and the file: the
//! file is missing, is not WebAssembly, is a core module rather than a
//! component, does not export the `wasmgate:plugin` handler, or imports
//! something the host does not provide.
//!
//! A guest's own error (`retry`, `reject`) is an [`Outcome`]; a trap (panic,
//! deadline, memory limit) is a [`CallError`]. They never mix. After a trap the
//! instance is discarded and the next call gets a fresh one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Store, StoreLimitsBuilder, Trap};
use wasmtime_wasi::WasiCtx;

use crate::config::PluginConfig;
use crate::runtime::bindings::{self, HandleError, Message, PluginPre};
use crate::runtime::{HostState, Outgoing, PluginCounters, PluginShared, Runtime};

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {plugin:?}: {path}: file not found")]
    Missing { plugin: String, path: PathBuf },
    #[error("plugin {plugin:?}: {path}: cannot read: {source}")]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {plugin:?}: {path}: not a WebAssembly file (bad magic bytes)")]
    NotWasm { plugin: String, path: PathBuf },
    #[error(
        "plugin {plugin:?}: {path}: is a core WebAssembly module, not a component; build it for wasm32-wasip2 (or run `wasm-tools component new`)"
    )]
    CoreModule { plugin: String, path: PathBuf },
    #[error("plugin {plugin:?}: {path}: invalid component: {reason}")]
    Invalid {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "plugin {plugin:?}: {path}: wrong world: it does not export `{expected}` (exports: {found}); build it against the `{world}` world in wit/"
    )]
    WrongWorld {
        plugin: String,
        path: PathBuf,
        expected: &'static str,
        world: &'static str,
        found: String,
    },
    #[error("plugin {plugin:?}: {path}: cannot be linked: {reason}")]
    Link {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
}

/// What `handle` decided, as the guest said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Success, with an optional reply payload.
    Ok(Option<Vec<u8>>),
    /// A transient failure.
    Retry(String),
    /// A permanent rejection.
    Reject(String),
}

/// A call that did not return normally. The instance it ran on is discarded.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("handler exceeded its {0:?} deadline and was interrupted")]
    Timeout(Duration),
    #[error("handler trapped: {0}")]
    Trap(String),
    #[error("cannot instantiate plugin: {0}")]
    Instantiate(String),
}

/// A loaded, checked and pre-instantiated plugin.
pub struct Plugin {
    runtime: Runtime,
    pre: PluginPre<HostState>,
    shared: Arc<PluginShared>,
    path: PathBuf,
    timeout: Duration,
    memory: usize,
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
    /// Load, check and pre-instantiate the plugin a config table describes.
    pub fn load(
        runtime: &Runtime,
        config: &PluginConfig,
        max_payload: Arc<AtomicUsize>,
    ) -> Result<Plugin, LoadError> {
        let name = config.name.clone();
        let path = config.path.clone();
        let bytes = std::fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                LoadError::Missing {
                    plugin: name.clone(),
                    path: path.clone(),
                }
            } else {
                LoadError::Read {
                    plugin: name.clone(),
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let component = compile(runtime, &name, &path, &bytes)?;
        let pre = link(runtime, &name, &path, &component)?;
        let shared = Arc::new(PluginShared {
            name,
            config: config
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            max_payload,
            counters: PluginCounters::default(),
        });
        Ok(Plugin {
            runtime: runtime.clone(),
            pre,
            shared,
            path,
            timeout: config.timeout,
            memory: config.memory.as_u64().min(usize::MAX as u64) as usize,
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn counters(&self) -> &PluginCounters {
        &self.shared.counters
    }

    /// A new instance: a store with its own memory limit and no WASI grants.
    pub fn instantiate(self: &Arc<Self>) -> Result<Instance, CallError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.memory)
            .trap_on_grow_failure(true)
            .build();
        let state = HostState {
            // Nothing granted: no args, env, preopens, network or stdio.
            wasi: WasiCtx::builder().build(),
            table: wasmtime::component::ResourceTable::new(),
            limits,
            plugin: self.shared.clone(),
            outbox: Vec::new(),
            log_sink: None,
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.runtime.deadline_ticks(self.timeout));
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        Ok(Instance {
            plugin: self.clone(),
            store,
            bindings,
        })
    }
}

fn compile(
    runtime: &Runtime,
    plugin: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<Component, LoadError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            plugin: plugin.to_string(),
            path: path.to_path_buf(),
        });
    }
    // Byte 4..8 is the version/layer: 1 for core modules, 0x0d 0x00 0x01 0x00 for components.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule {
            plugin: plugin.to_string(),
            path: path.to_path_buf(),
        });
    }
    runtime.compile(bytes).map_err(|e| LoadError::Invalid {
        plugin: plugin.to_string(),
        path: path.to_path_buf(),
        reason: format!("{e:#}"),
    })
}

fn link(
    runtime: &Runtime,
    plugin: &str,
    path: &Path,
    component: &Component,
) -> Result<PluginPre<HostState>, LoadError> {
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(runtime.engine()).map(|(name, _)| name).collect();
    if !exports.contains(&bindings::HANDLER_EXPORT) {
        return Err(LoadError::WrongWorld {
            plugin: plugin.to_string(),
            path: path.to_path_buf(),
            expected: bindings::HANDLER_EXPORT,
            world: bindings::WORLD,
            found: if exports.is_empty() {
                "none".into()
            } else {
                exports.join(", ")
            },
        });
    }
    let instance_pre =
        runtime
            .linker()
            .instantiate_pre(component)
            .map_err(|e| LoadError::Link {
                plugin: plugin.to_string(),
                path: path.to_path_buf(),
                reason: format!("{e:#}"),
            })?;
    PluginPre::new(instance_pre).map_err(|e| LoadError::WrongWorld {
        plugin: plugin.to_string(),
        path: path.to_path_buf(),
        expected: bindings::HANDLER_EXPORT,
        world: bindings::WORLD,
        found: format!("{e:#}"),
    })
}

/// One instance of a plugin: a store and its bindings, used by one caller at a time.
pub struct Instance {
    plugin: Arc<Plugin>,
    store: Store<HostState>,
    bindings: bindings::Plugin,
}

/// The result of a call that returned: the guest's outcome and what it asked to publish.
#[derive(Debug)]
pub struct Handled {
    pub outcome: Outcome,
    pub outbox: Vec<Outgoing>,
}

impl Instance {
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Keep the guest's log lines (for `wasmgate invoke`).
    pub fn capture_logs(&mut self) {
        self.store.data_mut().log_sink = Some(Vec::new());
    }

    pub fn take_logs(&mut self) -> Vec<(&'static str, String)> {
        self.store.data_mut().log_sink.take().unwrap_or_default()
    }

    /// Run `handle` once under the plugin's deadline. On `Err` the instance
    /// must be dropped: a trapped component cannot be entered again.
    pub fn handle(&mut self, msg: &Message) -> Result<Handled, CallError> {
        let ticks = self.plugin.runtime.deadline_ticks(self.plugin.timeout);
        self.store.set_epoch_deadline(ticks);
        self.store.data_mut().outbox.clear();
        let result = self
            .bindings
            .wasmgate_plugin_handler()
            .call_handle(&mut self.store, msg);
        match result {
            Ok(result) => {
                let outbox = std::mem::take(&mut self.store.data_mut().outbox);
                let outcome = match result {
                    Ok(reply) => Outcome::Ok(reply),
                    Err(HandleError::Retry(reason)) => Outcome::Retry(reason),
                    Err(HandleError::Reject(reason)) => Outcome::Reject(reason),
                };
                Ok(Handled { outcome, outbox })
            }
            Err(e) => {
                self.store.data_mut().outbox.clear();
                if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
                    Err(CallError::Timeout(self.plugin.timeout))
                } else {
                    Err(CallError::Trap(format!("{e:#}")))
                }
            }
        }
    }
}
