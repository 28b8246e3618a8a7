//! Test plugin for JetStream bindings. It republishes each payload to
//! `<prefix>.<subject>` with headers `Js-Stream`, `Js-Stream-Seq` and
//! `Js-Delivered` from the `delivery` interface. Payloads select misbehaviour:
//! `retry-once` asks for a retry on the first delivery, `always-retry` on
//! every delivery, `reject` rejects, `trap` panics.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use exports::wasmgate::plugin::handler::Guest;
use wasmgate::plugin::types::{HandleError, Message};
use wasmgate::plugin::{config, delivery, publisher};

struct JsProbe;

impl Guest for JsProbe {
    fn handle(msg: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let info = delivery::jetstream();
        let delivered = info.as_ref().map_or(0, |i| i.delivered);
        match msg.payload.as_slice() {
            b"retry-once" if delivered < 2 => {
                return Err(HandleError::Retry(format!(
                    "delivery {delivered}: try again"
                )));
            }
            b"always-retry" => {
                return Err(HandleError::Retry(format!(
                    "delivery {delivered}: still failing"
                )));
            }
            b"reject" => return Err(HandleError::Reject("poison message".into())),
            b"trap" => panic!("asked to trap"),
            _ => {}
        }
        let mut headers = Vec::new();
        if let Some(i) = &info {
            headers.push(("Js-Stream".to_string(), i.stream.clone()));
            headers.push(("Js-Stream-Seq".to_string(), i.stream_sequence.to_string()));
            headers.push(("Js-Delivered".to_string(), i.delivered.to_string()));
        }
        let prefix = config::get("prefix").unwrap_or_else(|| "out".to_string());
        publisher::publish(&format!("{prefix}.{}", msg.subject), &msg.payload, &headers)
            .map_err(|e| HandleError::Retry(format!("publish failed: {e:?}")))?;
        Ok(None)
    }
}

export!(JsProbe);
