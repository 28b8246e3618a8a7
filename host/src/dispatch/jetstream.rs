//! JetStream messages on the dispatch thread: one `handle` call per message
//! (the guest can read the delivery metadata of the message in hand), keeping
//! deliveries alive while they wait or run long, and settling each by the
//! rules in [`crate::jetstream`].

use std::sync::atomic::Ordering;
use std::time::Instant;

use async_nats::jetstream::{self, AckKind};
use tokio::runtime::Handle;

use super::{Dispatch, Send, Source, to_wit};
use crate::jetstream::Settle;
use crate::plugin::{Handled, Instance, Outcome};

impl Dispatch {
    pub(super) fn process_js(
        &self,
        rt: &Handle,
        instance: &mut Option<Instance>,
        msg: jetstream::Message,
        batch_started: Instant,
        out: &mut Vec<Send>,
    ) {
        let Source::JetStream(source) = &self.source else {
            unreachable!("JetStream messages come from a JetStream source")
        };
        let binding = &source.binding;
        let ack_wait = binding.config.ack_wait;
        let delivery = crate::jetstream::delivery_info(&msg);
        let delivered = delivery.as_ref().map_or(1, |d| d.delivered);

        // Messages queued behind slow ones in this batch, and calls that may
        // outlast half the ack wait, keep their deliveries alive.
        if batch_started.elapsed() > ack_wait / 2 {
            let _ = rt.block_on(msg.ack_with(AckKind::Progress));
        }
        let ticker = (self.plugin.timeout() > ack_wait / 2).then(|| {
            let client = self.client.clone();
            let reply = msg.reply.clone();
            rt.spawn(async move {
                let Some(reply) = reply else { return };
                loop {
                    tokio::time::sleep(ack_wait / 2).await;
                    let _ = client.publish(reply.clone(), "+WPI".into()).await;
                }
            })
        });

        let mut input = to_wit(msg.message.clone());
        // The reply subject of a JetStream message is its ack subject, not a requester.
        input.reply_to = None;
        let result = self.call(instance, &input, delivery);
        if let Some(ticker) = ticker {
            ticker.abort();
        }

        let fail = |reason: String| {
            if binding.is_last_delivery(delivered) {
                Settle::DeadLetter(format!("max deliveries ({delivered}) reached: {reason}"))
            } else {
                Settle::Nak(binding.nak_delay(delivered))
            }
        };
        let settle = match result {
            Ok(Handled {
                outcome: Outcome::Ok(_),
                outbox,
            }) => {
                self.counters.handled.fetch_add(1, Ordering::Relaxed);
                out.extend(outbox.into_iter().map(Send::Publish));
                Settle::Ack
            }
            Ok(Handled {
                outcome: Outcome::Retry(reason),
                ..
            }) => {
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, delivered, "handler asked for a retry");
                fail(reason)
            }
            Ok(Handled {
                outcome: Outcome::Reject(reason),
                ..
            }) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, "handler rejected the message");
                Settle::DeadLetter(format!("rejected: {reason}"))
            }
            Err(e) => {
                self.counters.trapped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, delivered, "handler failed; instance discarded");
                fail(e.to_string())
            }
        };
        out.push(Send::Settle {
            msg: Box::new(msg),
            settle,
        });
    }
}
