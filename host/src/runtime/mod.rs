//! The WebAssembly runtime: one wasmtime [`Engine`] for the whole gateway, the
//! [`Linker`] that gives plugins their imports (the `wasmgate:plugin` host
//! interfaces plus WASI p2 granting nothing), the epoch ticker that enforces
//! handler deadlines, and the per-store [`HostState`].
//!
//! Calls are synchronous with an epoch deadline: a `handle` call costs a few
//! hundred nanoseconds this way, against more for `call_async`, and the
//! deadline still bounds a looping guest.

pub mod bindings;
mod host;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// A plugin may publish at most this many messages from one `handle` call.
pub const MAX_PUBLISHES_PER_CALL: usize = 1024;

/// A message a guest asked to publish, held until its `handle` call succeeds.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub subject: String,
    pub payload: Bytes,
    pub headers: Vec<(String, String)>,
}

/// Counters a plugin's host functions update; read into `/status`.
#[derive(Debug, Default)]
pub struct PluginCounters {
    pub publish_refused: AtomicU64,
}

/// What every store of one plugin shares.
#[derive(Debug)]
pub struct PluginShared {
    pub name: String,
    pub config: BTreeMap<String, String>,
    /// The server's max_payload; 0 until connected (then not checked here).
    pub max_payload: Arc<AtomicUsize>,
    pub counters: PluginCounters,
}

/// The data of one store (one plugin instance).
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) plugin: Arc<PluginShared>,
    pub(crate) outbox: Vec<Outgoing>,
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

/// The engine and linker shared by all plugins.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    epoch_tick: Duration,
    /// Components compiled so far, by the SHA-256 of their bytes: a file that
    /// several `[[plugin]]` tables name is compiled once (Python and
    /// JavaScript components take seconds).
    compiled: Arc<Mutex<HashMap<[u8; 32], Component>>>,
}

impl Runtime {
    /// Build the engine (epoch interruption on) and the linker, and start the
    /// epoch ticker thread, which stops when the engine is dropped.
    pub fn new(epoch_tick: Duration) -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

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
            compiled: Default::default(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// Compile a component, or reuse the one compiled from the same bytes.
    pub fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        let key: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(component) = self.lock_compiled().get(&key) {
            return Ok(component.clone());
        }
        let component = Component::new(&self.engine, bytes)?;
        self.lock_compiled().insert(key, component.clone());
        Ok(component)
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Component>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Epoch ticks that cover `timeout`, plus one for the tick in progress.
    pub fn deadline_ticks(&self, timeout: Duration) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        (timeout.as_nanos().div_ceil(tick) as u64).saturating_add(1)
    }
}
