//! `jsprobe` on the Rust SDK: it republishes each payload to
//! `<prefix>.<subject>` with headers `Js-Stream`, `Js-Stream-Seq` and
//! `Js-Delivered` from [`jetstream()`], and the same payloads select the
//! same misbehaviour (`retry-once`, `always-retry`, `reject`, `trap`).
//!
//! Unlike `jsprobe` (raw bindings, one `handle` per message) it exports
//! `batch-handler@0.1.4`, so a JetStream binding hands it batches whose
//! encoding carries each message's metadata: the tests use it to check that
//! every message of a batch sees its own delivery count.

use wasmgate_plugin::{Error, Handler, Message, Reply, config, jetstream, publish};

struct JsProbe;

impl Handler for JsProbe {
    fn handle(msg: &Message) -> Result<Reply, Error> {
        let info = jetstream();
        let delivered = info.as_ref().map_or(0, |i| i.delivered);
        match msg.payload {
            b"retry-once" if delivered < 2 => {
                return Err(Error::retry(format!("delivery {delivered}: try again")));
            }
            b"always-retry" => {
                return Err(Error::retry(format!("delivery {delivered}: still failing")));
            }
            b"reject" => return Err(Error::reject("poison message")),
            b"trap" => panic!("asked to trap"),
            _ => {}
        }
        let prefix = config::str("prefix").unwrap_or("out");
        let target = format!("{prefix}.{}", msg.subject);
        match &info {
            Some(i) => {
                let (seq, delivered) = (i.stream_sequence.to_string(), i.delivered.to_string());
                let headers = [
                    ("Js-Stream", i.stream.as_str()),
                    ("Js-Stream-Seq", seq.as_str()),
                    ("Js-Delivered", delivered.as_str()),
                ];
                publish(&target, msg.payload, &headers)?;
            }
            None => publish(&target, msg.payload, &[])?,
        }
        Ok(Reply::none())
    }
}

wasmgate_plugin::export!(JsProbe);
