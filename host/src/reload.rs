//! Hot reload: swapping a plugin's component or settings without dropping
//! its subscriptions, and reloading the whole config.
//!
//! Every binding reaches its plugin through a [`PluginSlot`]. A reload loads
//! and checks the new version first — a bad one is refused and the old one
//! keeps running — then swaps it into the slot and bumps the slot's version.
//! Dispatch workers look at the version between batches: the batch in hand
//! finishes on the old instance, the next one starts on a new instance of the
//! new version. Nothing is unsubscribed, so nothing is lost.
//!
//! A whole-config reload (SIGHUP, or the config file changing) swaps changed
//! plugins the same way; when bindings are added, removed or changed the
//! supervisor re-binds: it stops the current workers (after the message in
//! hand) and subscribes the new binding set on the same connection.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use crate::config::{BindingConfig, Config, PluginConfig};
use crate::jetstream::JsBinding;
use crate::plugin::{Plugin, PluginSlot};
use crate::runtime::Runtime;
use crate::status::{BindingCounters, BindingSpec, StatusHub};
use crate::supervisor::{Binding, BindingSet, Command};

/// Identifies a binding across reloads, so its counters carry over.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BindingKey {
    plugin: String,
    subject: String,
    queue: Option<String>,
    consumer: Option<(String, String)>,
}

/// One loaded plugin and the settings it was loaded with.
struct Loaded {
    config: PluginConfig,
    slot: Arc<PluginSlot>,
    stamp: Option<(std::time::SystemTime, u64)>,
}

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
}

/// What the gateway runs: the plugins by name and the binding definitions.
pub struct Catalog {
    runtime: Runtime,
    max_payload: Arc<AtomicUsize>,
    config: Config,
    plugins: BTreeMap<String, Loaded>,
    counters: HashMap<BindingKey, Arc<BindingCounters>>,
}

fn stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Catalog {
    /// Load every plugin of `config` (any failure fails the whole load).
    pub fn load(
        runtime: Runtime,
        max_payload: Arc<AtomicUsize>,
        config: Config,
    ) -> anyhow::Result<(Catalog, BindingSet)> {
        let mut plugins = BTreeMap::new();
        for p in &config.plugins {
            let plugin = Plugin::load(&runtime, p, max_payload.clone())?;
            plugins.insert(
                p.name.clone(),
                Loaded {
                    config: p.clone(),
                    slot: PluginSlot::new(Arc::new(plugin)),
                    stamp: stamp(&p.path),
                },
            );
        }
        let mut catalog = Catalog {
            runtime,
            max_payload,
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
    pub fn plugins_at(&self, path: &std::path::Path) -> Vec<String> {
        self.plugins
            .iter()
            .filter(|(_, l)| {
                l.config.path == path || l.config.path.canonicalize().ok().as_deref() == Some(path)
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Reload one plugin's component from its file; the old one stays on error.
    pub fn reload_plugin(&mut self, name: &str) -> anyhow::Result<u64> {
        let loaded = self
            .plugins
            .get_mut(name)
            .ok_or_else(|| anyhow::anyhow!("no plugin named {name:?}"))?;
        let plugin = Plugin::load(&self.runtime, &loaded.config, self.max_payload.clone())?;
        loaded.stamp = stamp(&loaded.config.path);
        let version = loaded.slot.swap(Arc::new(plugin));
        tracing::info!(plugin = name, version, "plugin reloaded");
        Ok(version)
    }

    /// Apply a new config: load what changed first (all or nothing), then
    /// swap changed plugins and, if the bindings changed, return the new set.
    pub fn reload(&mut self, new: Config) -> anyhow::Result<(ReloadReport, Option<BindingSet>)> {
        let mut report = ReloadReport::default();
        for (key, changed) in [
            ("nats", self.config.nats != new.nats),
            ("health", self.config.health != new.health),
            ("reconnect", self.config.reconnect != new.reconnect),
            ("http", self.config.http != new.http),
            ("runtime", self.config.runtime != new.runtime),
        ] {
            if changed {
                report.needs_restart.push(key.to_string());
            }
        }

        let mut fresh: BTreeMap<String, (PluginConfig, Option<Plugin>)> = BTreeMap::new();
        for p in &new.plugins {
            let unchanged = self.plugins.get(&p.name).is_some_and(|l| {
                without_bindings(&l.config) == without_bindings(p) && l.stamp == stamp(&p.path)
            });
            let plugin = if unchanged {
                None
            } else {
                Some(Plugin::load(&self.runtime, p, self.max_payload.clone())?)
            };
            fresh.insert(p.name.clone(), (p.clone(), plugin));
        }

        let old_bindings = binding_defs(&self.config);
        let new_bindings = binding_defs(&new);
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
                    let stamp = stamp(&config.path);
                    self.plugins.insert(
                        name.clone(),
                        Loaded {
                            config,
                            slot: PluginSlot::new(Arc::new(plugin)),
                            stamp,
                        },
                    );
                    report.added.push(name);
                }
                (None, None) => unreachable!("a new plugin is always loaded"),
            }
        }
        self.config = new;
        report.rebound = old_bindings != new_bindings;
        let set = report.rebound.then(|| self.binding_set());
        Ok((report, set))
    }

    /// The bindings of the current config, keeping counters of bindings that stay.
    fn binding_set(&mut self) -> BindingSet {
        let mut specs = Vec::new();
        let mut bindings = Vec::new();
        let mut counters = HashMap::new();
        for p in &self.config.plugins {
            let slot = self.plugins[&p.name].slot.clone();
            for b in &p.bindings {
                let key = BindingKey {
                    plugin: p.name.clone(),
                    subject: b.subject.clone(),
                    queue: b.queue.clone(),
                    consumer: b
                        .jetstream
                        .as_ref()
                        .map(|j| (j.stream.clone(), j.consumer.clone())),
                };
                let c = self.counters.get(&key).cloned().unwrap_or_default();
                counters.insert(key, c.clone());
                specs.push(BindingSpec {
                    plugin: p.name.clone(),
                    subject: b.subject.clone(),
                    queue: b.queue.clone(),
                    stream: b.jetstream.as_ref().map(|j| j.stream.clone()),
                    consumer: b.jetstream.as_ref().map(|j| j.consumer.clone()),
                });
                bindings.push(Binding {
                    plugin: slot.clone(),
                    subject: b.subject.clone(),
                    queue: b.queue.clone(),
                    jetstream: b.jetstream.as_ref().map(|j| {
                        Arc::new(JsBinding {
                            subject: b.subject.clone(),
                            config: j.clone(),
                        })
                    }),
                    counters: c,
                    workers: p.concurrency,
                });
            }
        }
        self.counters = counters;
        BindingSet { specs, bindings }
    }
}

fn without_bindings(p: &PluginConfig) -> PluginConfig {
    PluginConfig {
        bindings: Vec::new(),
        ..p.clone()
    }
}

/// What decides the binding set: each plugin's bindings and worker count.
fn binding_defs(c: &Config) -> Vec<(String, usize, Vec<BindingConfig>)> {
    c.plugins
        .iter()
        .map(|p| (p.name.clone(), p.concurrency, p.bindings.clone()))
        .collect()
}

/// What applies reloads: shared by the embedding API, SIGHUP and the watcher.
#[derive(Clone)]
pub struct Reloader {
    pub catalog: Arc<tokio::sync::Mutex<Catalog>>,
    pub commands: tokio::sync::mpsc::UnboundedSender<Command>,
    pub status: StatusHub,
}

impl Reloader {
    /// Record a reload's outcome in the status and hand a new binding set to
    /// the supervisor, waiting until it has re-bound.
    pub async fn finish(
        &self,
        catalog: &Catalog,
        result: anyhow::Result<(ReloadReport, Option<BindingSet>)>,
    ) -> anyhow::Result<ReloadReport> {
        match result {
            Ok((report, set)) => {
                if let Some(set) = set {
                    let (done, applied) = tokio::sync::oneshot::channel();
                    if self.commands.send(Command::Rebind(set, done)).is_ok() {
                        // The supervisor may be reconnecting; it re-binds once connected.
                        let _ =
                            tokio::time::timeout(std::time::Duration::from_secs(30), applied).await;
                    }
                }
                if !report.needs_restart.is_empty() {
                    tracing::warn!(sections = ?report.needs_restart, "these config sections changed but apply only after a restart");
                }
                tracing::info!(?report, "reload applied");
                self.status.set_plugins(catalog.slots());
                self.status.update(|s| {
                    s.config_reloads += 1;
                    s.last_reload_error = None;
                });
                Ok(report)
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reload refused; the running version stays");
                self.status
                    .update(|s| s.last_reload_error = Some(format!("{e:#}")));
                Err(e)
            }
        }
    }

    /// Reload the config file at `path` (what SIGHUP does).
    pub async fn reload_file(&self, path: &std::path::Path) -> anyhow::Result<ReloadReport> {
        let mut catalog = self.catalog.lock().await;
        let result = Config::load(path)
            .map_err(anyhow::Error::from)
            .and_then(|c| catalog.reload(c));
        self.finish(&catalog, result).await
    }

    async fn on_change(&self, config_path: &std::path::Path, changed: &[PathBuf]) {
        let config_changed = changed.iter().any(|p| same_file(p, config_path));
        let mut catalog = self.catalog.lock().await;
        if config_changed {
            let result = Config::load(config_path)
                .map_err(anyhow::Error::from)
                .and_then(|c| catalog.reload(c));
            let _ = self.finish(&catalog, result).await;
            return;
        }
        let mut names: Vec<String> = changed.iter().flat_map(|p| catalog.plugins_at(p)).collect();
        names.sort();
        names.dedup();
        for name in names {
            let result = catalog.reload_plugin(&name).map(|_| {
                (
                    ReloadReport {
                        swapped: vec![name.clone()],
                        ..Default::default()
                    },
                    None,
                )
            });
            let _ = self.finish(&catalog, result).await;
        }
    }
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    a == b || (a.canonicalize().ok().is_some() && a.canonicalize().ok() == b.canonicalize().ok())
}

/// Watch the folders of the config file and of every plugin (editors and
/// build tools replace files by renaming, which a watch on the file itself
/// would miss) and reload after changes settle for 200 ms.
pub fn watch(
    reloader: Reloader,
    config_path: PathBuf,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use notify::{RecursiveMode, Watcher};

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && matches!(
                event.kind,
                notify::EventKind::Create(_) | notify::EventKind::Modify(_)
            )
        {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })?;
    let config_path = config_path.canonicalize().unwrap_or(config_path);
    let mut dirs: Vec<PathBuf> = vec![config_path.parent().map(PathBuf::from).unwrap_or_default()];
    {
        let catalog = reloader
            .catalog
            .try_lock()
            .map_err(|_| anyhow::anyhow!("catalog busy"))?;
        for p in &catalog.config().plugins {
            let path = p.path.canonicalize().unwrap_or_else(|_| p.path.clone());
            if let Some(dir) = path.parent() {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tracing::info!(?dirs, "watching for config and plugin changes");

    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                p = rx.recv() => match p { Some(p) => p, None => return },
            };
            let mut changed = vec![first];
            // Let a write (or a build writing several files) finish.
            loop {
                match tokio::time::timeout(std::time::Duration::from_millis(200), rx.recv()).await {
                    Ok(Some(p)) => changed.push(p),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            changed.sort();
            changed.dedup();
            reloader.on_change(&config_path, &changed).await;
        }
    });
    Ok(())
}
