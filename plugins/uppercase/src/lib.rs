//! The example wasmgate plugin: upper-cases each payload, publishes it to
//! `<prefix>.<subject>` (`prefix` from the plugin's config, default `out`) and
//! replies with the same bytes when the message has a reply-to subject.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use exports::wasmgate::plugin::handler::Guest;
use wasmgate::plugin::types::{HandleError, Message};
use wasmgate::plugin::{config, log, publisher};

struct Uppercase;

impl Guest for Uppercase {
    fn handle(msg: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let prefix = config::get("prefix").unwrap_or_else(|| "out".to_string());
        let upper = msg.payload.to_ascii_uppercase();
        let target = format!("{prefix}.{}", msg.subject);
        log::log(
            log::Level::Debug,
            &format!("{} -> {target} ({} bytes)", msg.subject, upper.len()),
        );
        publisher::publish(&target, &upper, &msg.headers)
            .map_err(|e| HandleError::Retry(format!("publish to {target} failed: {e:?}")))?;
        Ok(msg.reply_to.map(|_| upper))
    }
}

export!(Uppercase);
