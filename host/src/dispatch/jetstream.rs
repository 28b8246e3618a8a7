//! JetStream messages on a worker-pool thread: one `handle` call per message
//! (the guest can read the delivery metadata of the message in hand) or
//! their share of a `handle-batch` call ([`super::batch`]), keeping
//! deliveries alive while they wait or run long, and settling each by the
//! rules in [`crate::jetstream`].

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::Subject;
use async_nats::jetstream::AckKind;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::output::Origin;
use super::{Carried, Dispatch, Send, Source};
use crate::jetstream::{JsMessage, Settle};
use crate::plugin::{CallError, Instance, Message, Outcome};
use crate::runtime::Outgoing;

impl Dispatch {
    // The message, the worker's state, its timing, its trace and where its
    // output goes: a struct for this one caller would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn process_js(
        &self,
        rt: &Handle,
        instance: &mut Option<Instance>,
        msg: Box<JsMessage>,
        batch_started: Instant,
        arrived: Option<Instant>,
        trace: Option<&Carried>,
        out: &mut Vec<Send>,
    ) {
        // Messages queued behind slow ones in this batch, and calls that may
        // outlast half the ack wait, keep their deliveries alive.
        if let Some(ack_wait) = self.ack_wait()
            && batch_started.elapsed() > ack_wait / 2
        {
            let _ = rt.block_on(msg.ack_with(AckKind::Progress));
        }
        let ticker = self.keep_alive(rt, || msg.reply.clone().into_iter().collect());

        let delivery = match &self.source {
            Source::JetStream(s) => {
                let c = &s.binding.config;
                msg.meta.map(|m| m.to_wit(&c.stream, &c.consumer))
            }
            Source::Core(_) => None,
        };
        let delivered = msg.delivered();
        let mut input = Message::from(msg.msg.message.clone());
        // The reply subject of a JetStream message is its ack subject, not a requester.
        input.reply_to = None;
        let result = self.call(instance, &input, delivery, arrived);
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        let result = result.map(|h| (h.outcome, h.outbox.into_iter()));
        self.js_outcome(msg, delivered, result, trace, out);
    }

    /// The binding's ack wait (a JetStream binding's only).
    fn ack_wait(&self) -> Option<Duration> {
        match &self.source {
            Source::JetStream(source) => Some(source.binding.config.ack_wait),
            Source::Core(_) => None,
        }
    }

    /// When a call may outlast half the ack wait, a task that tells the
    /// server every half ack wait that these messages are still in progress
    /// (`+WPI` to each reply subject), until aborted after the call.
    /// `replies` is asked for only then.
    pub(super) fn keep_alive(
        &self,
        rt: &Handle,
        replies: impl FnOnce() -> Vec<Subject>,
    ) -> Option<JoinHandle<()>> {
        let ack_wait = self.ack_wait()?;
        if self.plugin.timeout() <= ack_wait / 2 {
            return None;
        }
        let replies = replies();
        if replies.is_empty() {
            return None;
        }
        let client = self.client.clone();
        Some(rt.spawn(async move {
            loop {
                tokio::time::sleep(ack_wait / 2).await;
                for reply in &replies {
                    let _ = client.publish(reply.clone(), "+WPI".into()).await;
                }
            }
        }))
    }

    /// Settle a JetStream message (its `delivered`-th delivery) by what its
    /// call decided: `outbox` (all of it is consumed) is sent only on `ok`,
    /// before the ack.
    pub(super) fn js_outcome(
        &self,
        msg: Box<JsMessage>,
        delivered: u64,
        result: Result<(Outcome, impl Iterator<Item = Outgoing>), CallError>,
        trace: Option<&Carried>,
        out: &mut Vec<Send>,
    ) {
        let Source::JetStream(source) = &self.source else {
            unreachable!("JetStream messages come from a JetStream source")
        };
        let binding = &source.binding;
        let settle = match result {
            Ok((Outcome::Ok(_), outbox)) => {
                self.counters.handled.fetch_add(1, Ordering::Relaxed);
                let seq = msg.meta.map(|m| m.stream_sequence);
                out.extend(outbox.enumerate().map(|(index, o)| {
                    let o = match trace {
                        Some(t) => t.stamp(o),
                        None => o,
                    };
                    Send::Publish(o, seq.map(|seq| Origin { seq, index }))
                }));
                Settle::Ack
            }
            Ok((Outcome::Retry(reason), outbox)) => {
                outbox.for_each(drop);
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, delivered, "handler asked for a retry");
                Settle::failed(binding, delivered, &reason)
            }
            Ok((Outcome::Reject(reason), outbox)) => {
                outbox.for_each(drop);
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, "handler rejected the message");
                Settle::rejected(&reason)
            }
            Err(e) => {
                self.counters.trapped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, delivered, "handler failed; instance discarded");
                Settle::failed(binding, delivered, &e.to_string())
            }
        };
        out.push(Send::Settle { msg, settle });
    }
}
