//! Core NATS messages on the dispatch thread: one `handle` call per message,
//! or one `handle-batch` call per batch when the plugin exports it, then the
//! same rules for each message's outcome:
//!
//! - `ok(reply)`: send the message's publishes in order, then the reply to
//!   reply-to.
//! - `retry` / `reject`: count it; a requester gets an error reply (header
//!   `Wasmgate-Error`) instead of a timeout. Core NATS has no redelivery.
//! - trap or deadline: count it, drop the instance (a trapped component
//!   cannot be re-entered) and take a fresh one for the next message.
//!
//! A batch call that traps, runs out of time or breaks the batch contract is
//! not charged to every message in it: nothing of it is sent, and its
//! messages are handled again one at a time, so only the one at fault fails.
//! (Handlers have no side effects but their publishes, which are held until
//! the call returns, so running a message again repeats nothing.)

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{BATCH, Dispatch, Incoming, Send, to_wit};
use crate::plugin::{Batch, BatchResults, CallError, Handled, Instance, Outcome};
use crate::runtime::Outgoing;

/// How many messages go into one `handle-batch` call. It starts at
/// [`BATCH`]; a batch that runs out of time halves it (down to one message),
/// and batches that take less than a quarter of the deadline double it back.
struct BatchLimit {
    current: usize,
    timeout: Duration,
}

/// A worker's batch state, kept between batches so that its buffers are
/// reused: the encoded messages, the decoded results, the batch limit.
pub(super) struct Batching {
    encoded: Batch,
    results: BatchResults,
    limit: BatchLimit,
}

impl Batching {
    pub(super) fn new(timeout: Duration) -> Batching {
        Batching {
            encoded: Batch::new(),
            results: BatchResults::default(),
            limit: BatchLimit::new(timeout),
        }
    }

    /// How many messages the next batch may take.
    pub(super) fn limit(&self) -> usize {
        self.limit.current
    }
}

impl BatchLimit {
    fn new(timeout: Duration) -> BatchLimit {
        BatchLimit {
            current: BATCH,
            timeout,
        }
    }

    fn record(&mut self, elapsed: Duration, timed_out: bool) {
        if timed_out {
            self.current = (self.current / 2).max(1);
        } else if elapsed < self.timeout / 4 {
            self.current = (self.current * 2).min(BATCH);
        }
    }
}

impl Dispatch {
    pub(super) fn process_core(
        &self,
        instance: &mut Option<Instance>,
        msg: async_nats::Message,
        out: &mut Vec<Send>,
    ) {
        let input = to_wit(msg);
        match self.call(instance, &input, None) {
            Ok(Handled { outcome, outbox }) => {
                self.core_outcome(input.reply_to, outcome, outbox.into_iter(), out)
            }
            Err(e) => self.core_failed(input.reply_to, e, out),
        }
    }

    /// Handle a batch of core messages with one `handle-batch` call.
    pub(super) fn process_core_batch(
        &self,
        instance: &mut Option<Instance>,
        batch: &mut Vec<Incoming>,
        state: &mut Batching,
        out: &mut Vec<Send>,
    ) {
        if batch.is_empty() {
            return;
        }
        state.encoded.clear();
        for msg in batch.iter() {
            match msg {
                Incoming::Core(m) => state.encoded.push_nats(m),
                Incoming::Js(_) => unreachable!("JetStream messages are handled one by one"),
            }
        }
        let started = Instant::now();
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        let result = match instance {
            Some(inst) => Ok(inst),
            None => self.plugin.instantiate().map(|i| instance.insert(i)),
        }
        .and_then(|inst| inst.handle_batch(&mut state.encoded, &mut state.results));
        state.limit.record(
            started.elapsed(),
            matches!(result, Err(CallError::Timeout(_))),
        );
        let msgs = batch.drain(..).map(|msg| match msg {
            Incoming::Core(m) => m,
            Incoming::Js(_) => unreachable!("checked above"),
        });
        match result {
            Ok(()) => {
                let mut publishes = state.results.publishes.drain(..);
                for (msg, result) in msgs.zip(state.results.results.drain(..)) {
                    let span = self.message_span(&msg.subject, msg.payload.len());
                    let _entered = span.enter();
                    // Its publishes come next, whether or not they are sent.
                    let outbox = (&mut publishes).take(result.publishes);
                    let reply_to = msg.reply.map(|r| r.to_string());
                    self.core_outcome(reply_to, result.outcome, outbox, out);
                }
            }
            Err(e) => {
                *instance = None;
                self.counters.batches_rerun.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    plugin = self.plugin.name(),
                    messages = state.encoded.len(),
                    error = %e,
                    "batch failed; handling its messages one at a time"
                );
                for msg in msgs {
                    let span = self.message_span(&msg.subject, msg.payload.len());
                    let _entered = span.enter();
                    self.process_core(instance, msg, out);
                }
            }
        }
    }

    /// Count a call that did not return (trap or deadline); a requester
    /// gets an error reply.
    fn core_failed(&self, reply_to: Option<String>, e: CallError, out: &mut Vec<Send>) {
        self.counters.trapped.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, "handler failed; instance discarded");
        if let Some(to) = reply_to {
            out.push(Send::Error {
                to,
                kind: e.kind(),
                reason: e.to_string(),
            });
        }
    }

    /// Count what `handle` decided for one message and queue what it sends:
    /// `outbox` (all of it is consumed) only on `ok`.
    fn core_outcome(
        &self,
        reply_to: Option<String>,
        outcome: Outcome,
        outbox: impl Iterator<Item = Outgoing>,
        out: &mut Vec<Send>,
    ) {
        let error = |out: &mut Vec<Send>, kind: &'static str, reason: String| {
            if let Some(to) = reply_to.clone() {
                out.push(Send::Error { to, kind, reason });
            }
        };
        match outcome {
            Outcome::Ok(reply) => {
                self.counters.handled.fetch_add(1, Ordering::Relaxed);
                out.extend(outbox.map(Send::Publish));
                if let (Some(to), Some(payload)) = (reply_to, reply) {
                    out.push(Send::Reply { to, payload });
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
