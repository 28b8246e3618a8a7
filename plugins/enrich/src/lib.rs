//! Example plugin: an enricher. For each message it sends a request to the
//! `lookup` subject (config, default `lookup`) with the message's payload and
//! answers `<payload>+<the lookup's reply>`: as the reply when the message
//! asks for one, and published to `<prefix>.<subject>` when `prefix` is set.
//!
//! Config: `lookup`, `timeout_ms` (default 1000), `prefix`, and `repeat`
//! (send the payload this many times over, default 1: a way to make a
//! request larger than the message).
//!
//! No responder, no answer in time: the message is retried (`?` on the
//! request error); a subject `request_allow` does not grant: rejected. The
//! plugin's `request_allow` must grant the lookup subject.

use std::time::Duration;

use wasmgate_plugin::{Error, Handler, Message, Reply, config, publish, request};

struct Enrich;

impl Handler for Enrich {
    fn handle(msg: &Message) -> Result<Reply, Error> {
        let lookup = config::str("lookup").unwrap_or("lookup");
        let timeout: u64 = config::get_or("timeout_ms", 1000)?;
        let repeat: usize = config::get_or("repeat", 1)?;
        let asked = msg.payload.repeat(repeat);
        let answer = request(lookup, &asked, &[], Duration::from_millis(timeout))?;
        let mut both = msg.payload.to_vec();
        both.push(b'+');
        both.extend_from_slice(&answer.payload);
        if let Some(prefix) = config::str("prefix") {
            publish(&format!("{prefix}.{}", msg.subject), &both, &[])?;
        }
        Ok(msg.reply(both))
    }
}

wasmgate_plugin::export!(Enrich);
