//! The catalog: every loaded plugin (in the slot its bindings share) and the
//! binding set built from the config it was loaded with.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::SystemTime;

use crate::config::{BindingConfig, Config, PluginConfig};
use crate::jetstream::JsBinding;
use crate::plugin::{Plugin, PluginSlot};
use crate::runtime::Runtime;
use crate::status::{BindingCounters, BindingSpec};
use crate::supervisor::{Binding, BindingSet};

/// Identifies a binding across reloads, so its counters carry over.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BindingKey {
    plugin: String,
    subject: String,
    queue: Option<String>,
    consumer: Option<(String, String)>,
}

/// A [`BindingKey`] borrowed from the config, to look one up without
/// allocating (hashes as the owned key does: the same fields in order).
#[derive(Hash)]
struct BindingRef<'a> {
    plugin: &'a str,
    subject: &'a str,
    queue: Option<&'a str>,
    consumer: Option<(&'a str, &'a str)>,
}

impl hashbrown::Equivalent<BindingKey> for BindingRef<'_> {
    fn equivalent(&self, key: &BindingKey) -> bool {
        self.plugin == key.plugin
            && self.subject == key.subject
            && self.queue == key.queue.as_deref()
            && self.consumer == key.consumer.as_ref().map(|(s, c)| (s.as_str(), c.as_str()))
    }
}

/// A component file's modification time and length: a rebuilt `.wasm` under
/// unchanged settings still has to be reloaded.
pub(super) type Stamp = Option<(SystemTime, u64)>;

pub(super) fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// One loaded plugin and the settings it was loaded with.
pub(super) struct Loaded {
    pub(super) config: PluginConfig,
    pub(super) slot: Arc<PluginSlot>,
    pub(super) stamp: Stamp,
}

impl Loaded {
    /// A plugin seen for the first time, in a fresh slot. The stamp is taken
    /// after loading, like on every swap.
    pub(super) fn new(config: PluginConfig, plugin: Plugin) -> Loaded {
        let stamp = stamp(&config.path);
        Loaded {
            config,
            slot: PluginSlot::new(Arc::new(plugin)),
            stamp,
        }
    }
}

/// What the gateway runs: the plugins by name and the binding definitions.
pub struct Catalog {
    pub(super) runtime: Runtime,
    pub(super) max_payload: Arc<AtomicUsize>,
    /// The gateway's connection, for the plugins' `requester` calls.
    pub(super) nats: crate::runtime::NatsLink,
    pub(super) config: Config,
    pub(super) plugins: BTreeMap<String, Loaded>,
    counters: HashMap<BindingKey, Arc<BindingCounters>>,
    /// `[telemetry] histograms` as the gateway started (a restart setting).
    histograms: bool,
}

impl Catalog {
    /// Load every plugin of `config` (any failure fails the whole load).
    pub fn load(
        runtime: Runtime,
        max_payload: Arc<AtomicUsize>,
        nats: crate::runtime::NatsLink,
        config: Config,
    ) -> anyhow::Result<(Catalog, BindingSet)> {
        let mut plugins = BTreeMap::new();
        for p in &config.plugins {
            let plugin = Plugin::load_shared(&runtime, p, max_payload.clone(), nats.clone())?;
            plugins.insert(p.name.clone(), Loaded::new(p.clone(), plugin));
        }
        let mut catalog = Catalog {
            runtime,
            max_payload,
            nats,
            histograms: config.telemetry.histograms,
            config,
            plugins,
            counters: HashMap::new(),
        };
        let set = catalog.binding_set();
        Ok((catalog, set))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every plugin's slot, for the status.
    pub fn slots(&self) -> Vec<Arc<PluginSlot>> {
        self.plugins.values().map(|l| l.slot.clone()).collect()
    }

    /// The running version of a plugin.
    pub fn plugin(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.get(name).map(|l| l.slot.current().0)
    }

    /// Plugin names whose component lives at `path`.
    pub fn plugins_at(&self, path: &Path) -> Vec<String> {
        self.plugins
            .iter()
            .filter(|(_, l)| {
                l.config.path == path || l.config.path.canonicalize().ok().as_deref() == Some(path)
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The bindings of the current config, keeping counters of bindings that
    /// stay. Both the first load and every re-binding reload come here.
    pub(super) fn binding_set(&mut self) -> BindingSet {
        let mut specs = Vec::new();
        let mut bindings = Vec::new();
        let mut counters = HashMap::with_capacity(self.counters.len());
        for p in &self.config.plugins {
            let slot = &self.plugins[&p.name].slot;
            for b in &p.bindings {
                // A binding that stays moves its key and counters over.
                let (key, c) = self
                    .counters
                    .remove_entry(&BindingRef::new(p, b))
                    .unwrap_or_else(|| {
                        (
                            BindingKey::new(p, b),
                            Arc::new(BindingCounters::new(self.histograms)),
                        )
                    });
                counters.insert(key, c.clone());
                let (spec, binding) = build_binding(p, b, slot, c);
                specs.push(spec);
                bindings.push(binding);
            }
        }
        self.counters = counters;
        BindingSet { specs, bindings }
    }
}

impl<'a> BindingRef<'a> {
    fn new(p: &'a PluginConfig, b: &'a BindingConfig) -> BindingRef<'a> {
        BindingRef {
            plugin: &p.name,
            subject: &b.subject,
            queue: b.queue.as_deref(),
            consumer: b
                .jetstream
                .as_ref()
                .map(|j| (j.stream.as_str(), j.consumer.as_str())),
        }
    }
}

impl BindingKey {
    fn new(p: &PluginConfig, b: &BindingConfig) -> BindingKey {
        BindingKey {
            plugin: p.name.clone(),
            subject: b.subject.clone(),
            queue: b.queue.clone(),
            consumer: b
                .jetstream
                .as_ref()
                .map(|j| (j.stream.clone(), j.consumer.clone())),
        }
    }
}

/// The one place a `[[plugin.binding]]` table becomes what the status shows
/// of it and what the supervisor subscribes.
fn build_binding(
    p: &PluginConfig,
    b: &BindingConfig,
    slot: &Arc<PluginSlot>,
    counters: Arc<BindingCounters>,
) -> (BindingSpec, Binding) {
    let spec = BindingSpec {
        plugin: p.name.clone(),
        subject: b.subject.clone(),
        queue: b.queue.clone(),
        stream: b.jetstream.as_ref().map(|j| j.stream.clone()),
        consumer: b.jetstream.as_ref().map(|j| j.consumer.clone()),
    };
    let binding = Binding {
        plugin: slot.clone(),
        subject: b.subject.clone(),
        queue: b.queue.clone(),
        jetstream: b.jetstream.as_ref().map(|j| {
            Arc::new(JsBinding {
                subject: b.subject.clone(),
                config: j.clone(),
            })
        }),
        counters,
        workers: p.concurrency,
        buffer: b.buffer,
    };
    (spec, binding)
}
