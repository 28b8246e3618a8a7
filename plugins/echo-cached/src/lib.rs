//! Benchmark plugin: `echo` with its `prefix` read once (first message) and
//! kept, so each `handle` makes one import call (`publish`) instead of two.
//! Compared with `echo`, it shows what a per-message `config.get` costs.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use std::sync::OnceLock;

use exports::wasmgate::plugin::handler::Guest;
use wasmgate::plugin::types::{HandleError, Message};
use wasmgate::plugin::{config, publisher};

static PREFIX: OnceLock<String> = OnceLock::new();

struct EchoCached;

impl Guest for EchoCached {
    fn handle(msg: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let prefix = PREFIX.get_or_init(|| config::get("prefix").unwrap_or_else(|| "out".into()));
        let target = format!("{prefix}.{}", msg.subject);
        publisher::publish(&target, &msg.payload, &msg.headers)
            .map_err(|e| HandleError::Retry(format!("{e:?}")))?;
        Ok(msg.reply_to.map(|_| msg.payload))
    }
}

export!(EchoCached);
