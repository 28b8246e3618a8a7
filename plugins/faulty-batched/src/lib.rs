//! Test plugin built with the SDK, so the gateway hands it whole batches
//! (`handle-batch`). It misbehaves on request, chosen by the payload, to show
//! that one bad message in a batch fails alone:
//!
//! - `slow:<ms>` spins for that long first (so that what is published
//!   meanwhile queues up and arrives as one batch), then is echoed;
//! - `trap` panics (a trap: the whole call fails);
//! - `loop` never returns (the deadline stops the whole call);
//! - `retry` and `reject` return those errors;
//! - `forbidden` publishes to `secret.<subject>` (refused by `publish_allow`
//!   when the batch returns) and replies `sent`;
//! - `bad-subject` publishes to `out.*` (an invalid subject, refused the same
//!   way);
//! - anything else is published to `<prefix>.<subject>` and replied.

use std::time::{Duration, Instant};

use wasmgate_plugin::{Error, Handler, Message, Reply, config, publish};

struct FaultyBatched;

impl Handler for FaultyBatched {
    fn handle(msg: &Message) -> Result<Reply, Error> {
        let prefix: String = config::get_or("prefix", "out".to_string())?;
        let text = msg.text()?.to_string();
        if let Some(ms) = text.strip_prefix("slow:") {
            let ms: u64 = ms.parse().map_err(Error::reject)?;
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        match text.as_str() {
            "trap" => panic!("asked to trap"),
            "loop" => loop {
                std::hint::black_box(&text);
            },
            "retry" => Err(Error::retry("asked to retry")),
            "reject" => Err(Error::reject("asked to reject")),
            "forbidden" => {
                publish(&format!("secret.{}", msg.subject), msg.payload, &[])?;
                Ok(msg.reply("sent"))
            }
            "bad-subject" => {
                publish("out.*", msg.payload, &[])?;
                Ok(msg.reply("sent"))
            }
            _ => {
                publish(
                    &format!("{prefix}.{}", msg.subject),
                    msg.payload,
                    msg.headers,
                )?;
                Ok(msg.reply(msg.payload))
            }
        }
    }
}

wasmgate_plugin::export!(FaultyBatched);
