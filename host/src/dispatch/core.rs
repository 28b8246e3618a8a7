//! Core NATS messages on a worker-pool thread: one `handle` call per message
//! (or their share of a `handle-batch` call, [`super::batch`]), then the
//! same rules for each message's outcome:
//!
//! - `ok(reply)`: send the message's publishes in order, then the reply to
//!   reply-to, each carrying the message's trace context ([`super::trace`]).
//! - `retry` / `reject`: count it; a requester gets an error reply (header
//!   `Wasmgate-Error`) instead of a timeout. Core NATS has no redelivery.
//! - trap or deadline: count it, drop the instance (a trapped component
//!   cannot be re-entered) and take a fresh one for the next message.

use std::sync::atomic::Ordering;

use super::{Carried, Dispatch, Send};
use crate::plugin::{CallError, Handled, Instance, Message, Outcome};
use crate::runtime::Outgoing;

impl Dispatch {
    pub(super) fn process_core(
        &self,
        instance: &mut Option<Instance>,
        msg: async_nats::Message,
        arrived: Option<std::time::Instant>,
        trace: Option<&Carried>,
        out: &mut Vec<Send>,
    ) {
        let input = Message::from(msg);
        match self.call(instance, &input, None, arrived) {
            Ok(Handled { outcome, outbox }) => {
                self.core_outcome(input.reply_to, outcome, outbox.into_iter(), trace, out)
            }
            Err(e) => self.core_failed(input.reply_to, e, trace, out),
        }
    }

    /// Count a call that did not return (trap or deadline); a requester
    /// gets an error reply.
    pub(super) fn core_failed(
        &self,
        reply_to: Option<String>,
        e: CallError,
        trace: Option<&Carried>,
        out: &mut Vec<Send>,
    ) {
        self.counters.trapped.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, "handler failed; instance discarded");
        if let Some(to) = reply_to {
            out.push(Send::Error {
                to,
                kind: e.kind(),
                reason: e.to_string(),
                trace: trace.map(|t| Box::new(t.clone())),
            });
        }
    }

    /// Count what `handle` decided for one message and queue what it sends:
    /// `outbox` (all of it is consumed) only on `ok`.
    pub(super) fn core_outcome(
        &self,
        reply_to: Option<String>,
        outcome: Outcome,
        outbox: impl Iterator<Item = Outgoing>,
        trace: Option<&Carried>,
        out: &mut Vec<Send>,
    ) {
        let error = |out: &mut Vec<Send>, kind: &'static str, reason: String| {
            if let Some(to) = reply_to.clone() {
                let trace = trace.map(|t| Box::new(t.clone()));
                out.push(Send::Error {
                    to,
                    kind,
                    reason,
                    trace,
                });
            }
        };
        match outcome {
            Outcome::Ok(reply) => {
                self.counters.handled.fetch_add(1, Ordering::Relaxed);
                match trace {
                    None => out.extend(outbox.map(|o| Send::Publish(o, None))),
                    Some(t) => out.extend(outbox.map(|o| Send::Publish(t.stamp(o), None))),
                }
                if let (Some(to), Some(payload)) = (reply_to, reply) {
                    let trace = trace.map(|t| Box::new(t.clone()));
                    out.push(Send::Reply { to, payload, trace });
                }
                return;
            }
            Outcome::Retry(reason) => {
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, "handler asked for a retry");
                error(out, "retry", reason);
            }
            Outcome::Reject(reason) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, "handler rejected the message");
                error(out, "reject", reason);
            }
        }
        outbox.for_each(drop);
    }
}
