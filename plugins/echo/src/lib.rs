//! Benchmark plugin: republishes each payload unchanged to `<prefix>.<subject>`,
//! the same work a native republisher does, so the two can be compared.
//! Replies with the payload when asked; a refused publish rejects the message.
//!
//! The subject is built with one allocation of the exact size, as the
//! bench's native republisher builds it (`tests/src/bin/bench/core.rs`):
//! `format!` would cost two allocations and a grow, about 100 ns per message
//! in WebAssembly against 30 natively.

use wasmgate_plugin::{Error, Handler, Message, Reply, config, publish};

struct Echo;

impl Handler for Echo {
    fn handle(msg: &Message) -> Result<Reply, Error> {
        let prefix = config::str("prefix").unwrap_or("out");
        let mut subject = String::with_capacity(prefix.len() + 1 + msg.subject.len());
        subject.push_str(prefix);
        subject.push('.');
        subject.push_str(msg.subject);
        publish(&subject, msg.payload, msg.headers)?;
        Ok(msg.reply(msg.payload))
    }
}

wasmgate_plugin::export!(Echo);
