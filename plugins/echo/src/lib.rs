//! Benchmark plugin: republishes each payload unchanged to `<prefix>.<subject>`,
//! the same work a native republisher does, so the two can be compared.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use exports::wasmgate::plugin::handler::Guest;
use wasmgate::plugin::types::{HandleError, Message};
use wasmgate::plugin::{config, publisher};

struct Echo;

impl Guest for Echo {
    fn handle(msg: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let prefix = config::get("prefix").unwrap_or_else(|| "out".to_string());
        let target = format!("{prefix}.{}", msg.subject);
        publisher::publish(&target, &msg.payload, &msg.headers)
            .map_err(|e| HandleError::Retry(format!("{e:?}")))?;
        Ok(msg.reply_to.map(|_| msg.payload))
    }
}

export!(Echo);
