//! Applying a reload to the catalog: diffing the running config against a
//! new one, loading what changed before touching anything (so a bad plugin
//! refuses the whole reload), then swapping plugins into their slots and
//! building a new binding set only when the bindings changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::catalog::{Catalog, Loaded, stamp};
use crate::config::{Config, PluginConfig};
use crate::plugin::Plugin;
use crate::supervisor::BindingSet;

/// A reload's effect, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Plugins whose new version was swapped in.
    pub swapped: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Whether the binding set changed (the supervisor re-binds).
    pub rebound: bool,
    /// Changed settings outside plugins, which need a restart.
    pub needs_restart: Vec<String>,
    /// Bindings the re-binding left running, started, and stopped.
    pub bindings_kept: usize,
    pub bindings_started: usize,
    pub bindings_stopped: usize,
    /// Reading and checking the config and loading what changed.
    pub load_time: std::time::Duration,
    /// Re-binding, until the new subscriptions were confirmed.
    pub rebind_time: std::time::Duration,
}

/// What the catalog hands back from a reload: the report, and the binding
/// set the supervisor has to re-bind to when the bindings changed.
pub(super) type Applied = (ReloadReport, Option<BindingSet>);

impl Catalog {
    /// Reload one plugin's component from its file; the old one stays on error.
    pub fn reload_plugin(&mut self, name: &str) -> anyhow::Result<u64> {
        let loaded = self
            .plugins
            .get_mut(name)
            .ok_or_else(|| anyhow::anyhow!("no plugin named {name:?}"))?;
        let plugin = Plugin::load_shared(
            &self.runtime,
            &loaded.config,
            self.max_payload.clone(),
            self.nats.clone(),
        )?;
        loaded.stamp = stamp(&loaded.config.path);
        let version = loaded.slot.swap(Arc::new(plugin));
        tracing::info!(plugin = name, version, "plugin reloaded");
        Ok(version)
    }

    /// Apply a new config: load what changed first (all or nothing), then
    /// swap changed plugins and, if the bindings changed, return the new set.
    pub fn reload(&mut self, new: Config) -> anyhow::Result<(ReloadReport, Option<BindingSet>)> {
        let mut report = ReloadReport {
            needs_restart: restart_sections(&self.config, &new),
            ..Default::default()
        };

        // Every load happens before the first swap: a `?` here leaves the
        // catalog exactly as it was.
        let mut fresh: BTreeMap<String, (PluginConfig, Option<Plugin>)> = BTreeMap::new();
        for p in &new.plugins {
            let unchanged = self
                .plugins
                .get(&p.name)
                .is_some_and(|l| same_but_bindings(&l.config, p) && l.stamp == stamp(&p.path));
            let plugin = if unchanged {
                None
            } else {
                Some(Plugin::load_shared(
                    &self.runtime,
                    p,
                    self.max_payload.clone(),
                    self.nats.clone(),
                )?)
            };
            fresh.insert(p.name.clone(), (p.clone(), plugin));
        }

        report.rebound = !same_bindings(&self.config, &new);
        report.removed = self
            .plugins
            .keys()
            .filter(|n| !fresh.contains_key(*n))
            .cloned()
            .collect();
        self.plugins.retain(|n, _| fresh.contains_key(n));
        for (name, (config, plugin)) in fresh {
            match (self.plugins.get_mut(&name), plugin) {
                (Some(loaded), Some(plugin)) => {
                    loaded.slot.swap(Arc::new(plugin));
                    loaded.stamp = stamp(&config.path);
                    loaded.config = config;
                    report.swapped.push(name);
                }
                (Some(loaded), None) => loaded.config = config,
                (None, Some(plugin)) => {
                    self.plugins
                        .insert(name.clone(), Loaded::new(config, plugin));
                    report.added.push(name);
                }
                (None, None) => unreachable!("a new plugin is always loaded"),
            }
        }
        self.config = new;
        let set = report.rebound.then(|| self.binding_set());
        Ok((report, set))
    }
}

/// The sections read only at start: the connection, its health checks and
/// reconnect policy, the HTTP listener, the WebAssembly engine and what
/// is measured.
fn restart_sections(old: &Config, new: &Config) -> Vec<String> {
    [
        ("nats", old.nats != new.nats),
        ("health", old.health != new.health),
        ("reconnect", old.reconnect != new.reconnect),
        ("http", old.http != new.http),
        ("runtime", old.runtime != new.runtime),
        ("telemetry", old.telemetry != new.telemetry),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| key.to_string())
    .collect()
}

/// Whether two plugin entries agree on everything but their bindings: a
/// binding-only change re-binds without reloading the component. Compared
/// field by field (a new field fails to compile here until it is added),
/// without copying either entry: a reload of 1,000 entries copied each one
/// twice, and the copies were most of its time.
fn same_but_bindings(a: &PluginConfig, b: &PluginConfig) -> bool {
    let PluginConfig {
        name,
        path,
        config,
        timeout,
        memory,
        concurrency,
        batch,
        publish_allow,
        request_allow,
        publish_ack,
        wasi,
        bindings: _,
    } = a;
    *name == b.name
        && *path == b.path
        && *config == b.config
        && *timeout == b.timeout
        && *memory == b.memory
        && *concurrency == b.concurrency
        && *batch == b.batch
        && *publish_allow == b.publish_allow
        && *request_allow == b.request_allow
        && *publish_ack == b.publish_ack
        && *wasi == b.wasi
}

/// Whether two configs give the same binding set: each plugin's bindings
/// and worker count, in order.
fn same_bindings(a: &Config, b: &Config) -> bool {
    a.plugins.len() == b.plugins.len()
        && a.plugins.iter().zip(&b.plugins).all(|(a, b)| {
            a.name == b.name && a.concurrency == b.concurrency && a.bindings == b.bindings
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BindingConfig;

    fn binding(subject: &str) -> BindingConfig {
        BindingConfig {
            subject: subject.into(),
            queue: None,
            jetstream: None,
            buffer: None,
        }
    }

    fn config(plugins: Vec<PluginConfig>) -> Config {
        Config {
            plugins,
            ..Config::default()
        }
    }

    #[test]
    fn only_bindings_differ_then_the_component_stays() {
        let mut a = PluginConfig::new("p", "/p.wasm");
        a.bindings.push(binding("a"));
        let mut b = a.clone();
        b.bindings.push(binding("b"));
        assert!(same_but_bindings(&a, &b));
        assert!(!same_bindings(
            &config(vec![a.clone()]),
            &config(vec![b.clone()])
        ));

        let mut c = a.clone();
        c.publish_allow.push("more.>".into());
        assert!(!same_but_bindings(&a, &c), "a grant changed");
        let mut d = a.clone();
        d.config
            .insert("k".into(), crate::config::ConfigValue::String("v".into()));
        assert!(!same_but_bindings(&a, &d), "a config value changed");
    }

    #[test]
    fn the_binding_set_changes_with_workers_order_and_entries() {
        let mut a = PluginConfig::new("a", "/a.wasm");
        a.bindings.push(binding("x"));
        let mut b = PluginConfig::new("b", "/b.wasm");
        b.bindings.push(binding("y"));
        let both = config(vec![a.clone(), b.clone()]);
        assert!(same_bindings(&both, &both.clone()));
        assert!(!same_bindings(&both, &config(vec![b.clone(), a.clone()])));
        assert!(!same_bindings(&both, &config(vec![a.clone()])));
        let mut busier = a.clone();
        busier.concurrency = 4;
        assert!(!same_bindings(&both, &config(vec![busier, b])));
    }
}
