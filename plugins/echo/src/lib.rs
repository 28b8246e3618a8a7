//! Benchmark plugin: republishes each payload unchanged to `<prefix>.<subject>`,
//! the same work a native republisher does, so the two can be compared.
//! Replies with the payload when asked; a refused publish rejects the message.

use wasmgate_plugin::{Error, Handler, Message, Reply, config, publish};

struct Echo;

impl Handler for Echo {
    fn handle(msg: &Message) -> Result<Reply, Error> {
        let prefix = config::str("prefix").unwrap_or("out");
        publish(
            &format!("{prefix}.{}", msg.subject),
            &msg.payload,
            &msg.headers,
        )?;
        Ok(msg.reply(msg.payload.as_slice()))
    }
}

wasmgate_plugin::export!(Echo);
