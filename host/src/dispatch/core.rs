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
use crate::plugin::{Batch, CallError, Handled, Instance, Outcome};

/// How many messages go into one `handle-batch` call. It starts at
/// [`BATCH`]; a batch that runs out of time halves it (down to one message),
/// and batches that take less than a quarter of the deadline double it back.
pub(super) struct BatchLimit {
    current: usize,
    timeout: Duration,
}

impl BatchLimit {
    pub(super) fn new(timeout: Duration) -> BatchLimit {
        BatchLimit {
            current: BATCH,
            timeout,
        }
    }

    pub(super) fn get(&self) -> usize {
        self.current
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
        let result = self.call(instance, &input, None);
        self.core_outcome(input.reply_to, result, out);
    }

    /// Handle a batch of core messages with one `handle-batch` call;
    /// `encoded` is the worker's reusable buffer.
    pub(super) fn process_core_batch(
        &self,
        instance: &mut Option<Instance>,
        batch: &mut Vec<Incoming>,
        encoded: &mut Batch,
        limit: &mut BatchLimit,
        out: &mut Vec<Send>,
    ) {
        let msgs: Vec<async_nats::Message> = batch
            .drain(..)
            .map(|msg| match msg {
                Incoming::Core(m) => m,
                Incoming::Js(_) => unreachable!("JetStream messages are handled one by one"),
            })
            .collect();
        if msgs.is_empty() {
            return;
        }
        encoded.clear();
        for m in &msgs {
            encoded.push_nats(m);
        }
        let started = Instant::now();
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        let result = match instance {
            Some(inst) => Ok(inst),
            None => self.plugin.instantiate().map(|i| instance.insert(i)),
        }
        .and_then(|inst| inst.handle_batch(encoded));
        limit.record(
            started.elapsed(),
            matches!(result, Err(CallError::Timeout(_))),
        );
        match result {
            Ok(handled) => {
                for (msg, handled) in msgs.into_iter().zip(handled) {
                    let span = self.message_span(&msg.subject, msg.payload.len());
                    let _entered = span.enter();
                    let reply_to = msg.reply.map(|r| r.to_string());
                    self.core_outcome(reply_to, Ok(handled), out);
                }
            }
            Err(e) => {
                *instance = None;
                self.counters.batches_rerun.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    plugin = self.plugin.name(),
                    messages = msgs.len(),
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

    /// Count what `handle` decided for one message and queue what it sends.
    fn core_outcome(
        &self,
        reply_to: Option<String>,
        result: Result<Handled, CallError>,
        out: &mut Vec<Send>,
    ) {
        let error = |out: &mut Vec<Send>, kind: &'static str, reason: String| {
            if let Some(to) = reply_to.clone() {
                out.push(Send::Error { to, kind, reason });
            }
        };
        match result {
            Ok(Handled {
                outcome: Outcome::Ok(reply),
                outbox,
            }) => {
                self.counters.handled.fetch_add(1, Ordering::Relaxed);
                out.extend(outbox.into_iter().map(Send::Publish));
                if let (Some(to), Some(payload)) = (reply_to, reply) {
                    out.push(Send::Reply { to, payload });
                }
            }
            Ok(Handled {
                outcome: Outcome::Retry(reason),
                ..
            }) => {
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, "handler asked for a retry");
                error(out, "retry", reason);
            }
            Ok(Handled {
                outcome: Outcome::Reject(reason),
                ..
            }) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, "handler rejected the message");
                error(out, "reject", reason);
            }
            Err(e) => {
                self.counters.trapped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "handler failed; instance discarded");
                error(out, e.kind(), e.to_string());
            }
        }
    }
}
