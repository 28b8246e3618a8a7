//! `wasmgate:plugin/config`: the plugin's own key/values from the TOML file.

use crate::runtime::HostState;
use crate::runtime::bindings::wasmgate::plugin::config::Host;

impl Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.plugin.config.get(&key).cloned()
    }

    fn get_all(&mut self) -> Vec<(String, String)> {
        self.plugin
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
