//! Test plugin that misbehaves on request, chosen by the payload:
//! `trap` panics (a trap in the host), `loop` spins until the host's deadline
//! interrupts it, `reject` and `retry` return those
//! errors, `bad-publish` publishes to an invalid subject and reports the
//! host's error as a rejection, anything else is echoed to `<prefix>.<subject>`.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use exports::wasmgate::plugin::handler::Guest;
use wasmgate::plugin::types::{HandleError, Message};
use wasmgate::plugin::{config, publisher};

struct Faulty;

impl Guest for Faulty {
    fn handle(msg: Message) -> Result<Option<Vec<u8>>, HandleError> {
        match msg.payload.as_slice() {
            b"trap" => panic!("asked to trap"),
            b"loop" => loop {
                std::hint::spin_loop();
            },
            b"reject" => Err(HandleError::Reject("asked to reject".into())),
            b"retry" => Err(HandleError::Retry("asked to retry".into())),
            b"bad-publish" => match publisher::publish("bad subject", b"x", &[]) {
                Ok(()) => Ok(None),
                Err(e) => Err(HandleError::Reject(format!("{e:?}"))),
            },
            _ => {
                let prefix = config::get("prefix").unwrap_or_else(|| "out".to_string());
                publisher::publish(&format!("{prefix}.{}", msg.subject), &msg.payload, &[])
                    .map_err(|e| HandleError::Retry(format!("{e:?}")))?;
                Ok(msg.reply_to.map(|_| msg.payload))
            }
        }
    }
}

export!(Faulty);
