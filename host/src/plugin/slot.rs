//! Where the current version of one plugin lives. Every binding reaches its
//! plugin through a slot; a hot reload ([`crate::reload`]) swaps a new,
//! checked version in and bumps the slot's version, which dispatch workers
//! read between batches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::Plugin;

/// The current version of one plugin.
#[derive(Debug)]
pub struct PluginSlot {
    current: RwLock<Arc<Plugin>>,
    version: AtomicU64,
}

impl PluginSlot {
    pub fn new(plugin: Arc<Plugin>) -> Arc<PluginSlot> {
        Arc::new(PluginSlot {
            current: RwLock::new(plugin),
            version: AtomicU64::new(1),
        })
    }

    /// The version number, cheap enough to read before every batch.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The plugin and its version.
    pub fn current(&self) -> (Arc<Plugin>, u64) {
        let plugin = self.current.read().expect("plugin slot lock").clone();
        (plugin, self.version())
    }

    pub fn name(&self) -> String {
        self.current
            .read()
            .expect("plugin slot lock")
            .name()
            .to_string()
    }

    /// Put a loaded, checked plugin in place; returns the new version.
    pub fn swap(&self, plugin: Arc<Plugin>) -> u64 {
        *self.current.write().expect("plugin slot lock") = plugin;
        self.version.fetch_add(1, Ordering::AcqRel) + 1
    }
}
