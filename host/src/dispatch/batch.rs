//! Batches on a worker-pool thread: the messages a worker took at once, run
//! through one `handle-batch` call when the plugin exports it, each
//! message's result then treated as its own `handle` would be (core rules
//! in [`super::core`], JetStream ones in [`super::jetstream`]).
//!
//! Core bindings are batched whenever the plugin exports `batch-handler`;
//! JetStream bindings too, with each message's metadata in the batch
//! encoding (0.1.4 on), except for a plugin built against 0.1.2 or 0.1.3
//! that imports `delivery`: what it reads there belongs to "the message
//! being handled", which a batch does not have, so it gets one `handle` per
//! message.
//!
//! A batch call that traps, runs out of time or breaks the batch contract is
//! not charged to every message in it: nothing of it is sent, and its
//! messages are handled again one at a time, so only the one at fault fails.
//! (Handlers have no side effects but their publishes, which are held until
//! the call returns, so running a message again repeats nothing; a JetStream
//! message is settled only after that.)

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use super::{BATCH, Dispatch, Incoming, Send, Source};
use crate::plugin::{Batch, BatchResults, CallError, Instance, Plugin};

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
    pub(super) fn new(plugin: &Plugin) -> Batching {
        Batching {
            encoded: plugin.new_batch(),
            results: BatchResults::default(),
            limit: BatchLimit::new(plugin.timeout()),
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
    /// Whether this worker's batches go through `handle-batch`.
    pub(super) fn batches(&self) -> bool {
        self.plugin.batched()
            && match self.source {
                Source::Core(_) => true,
                Source::JetStream(_) => self.plugin.batches_jetstream(),
            }
    }

    /// Handle a batch with one `handle-batch` call.
    pub(super) fn process_batch(
        &self,
        rt: &Handle,
        instance: &mut Option<Instance>,
        batch: &mut Vec<Incoming>,
        arrivals: &[Instant],
        state: &mut Batching,
        out: &mut Vec<Send>,
    ) {
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        state.encoded.clear();
        let names = match &self.source {
            Source::JetStream(s) => Some((&s.binding.config.stream, &s.binding.config.consumer)),
            Source::Core(_) => None,
        };
        for msg in batch.iter() {
            match msg {
                Incoming::Core(m) => state.encoded.push_nats(m),
                Incoming::Js(m) => {
                    let (stream, consumer) =
                        names.expect("JetStream messages come from a JetStream source");
                    let meta = m.meta.as_ref();
                    state
                        .encoded
                        .push_jetstream(&m.msg.message, meta, stream, consumer);
                }
            }
        }
        let keep_alive = self.keep_alive(rt, || {
            batch
                .iter()
                .filter_map(|m| match m {
                    Incoming::Js(m) => m.reply.clone(),
                    Incoming::Core(_) => None,
                })
                .collect()
        });
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        let times = self.counters.times.as_deref();
        let call_start = times.map(|t| {
            let now = Instant::now();
            for &arrived in arrivals {
                t.waited(arrived, now, 1);
            }
            now
        });
        let result = match instance {
            Some(inst) => Ok(inst),
            None => self.plugin.instantiate().map(|i| instance.insert(i)),
        }
        .and_then(|inst| inst.handle_batch(&mut state.encoded, &mut state.results));
        if let (Some(t), Some(start)) = (times, call_start) {
            t.handler.record(start.elapsed());
        }
        if let Some(ticker) = keep_alive {
            ticker.abort();
        }
        state.limit.record(
            started.elapsed(),
            matches!(result, Err(CallError::Timeout(_))),
        );
        match result {
            Ok(()) => {
                // Each message's publishes come next in `publishes`, whether
                // or not they are sent; its outcome consumes them.
                let mut publishes = state.results.publishes.drain(..);
                let results = state.results.results.drain(..);
                if let Source::Core(_) = self.source {
                    // Read in place and dropped in place: moving each 184-byte
                    // message out of the batch was a tenth of this thread's
                    // time (profiled).
                    for (msg, result) in batch.iter().zip(results) {
                        let outbox = (&mut publishes).take(result.publishes);
                        let Incoming::Core(msg) = msg else {
                            unreachable!("a core binding's batch holds core messages")
                        };
                        let (span, trace) = self.message_span(msg);
                        let _entered = span.enter();
                        let reply_to = msg.reply.as_ref().map(|r| r.to_string());
                        self.core_outcome(reply_to, result.outcome, outbox, trace.as_ref(), out);
                    }
                    batch.clear();
                } else {
                    // Owned: each is settled after the batch's output is sent.
                    for (msg, result) in batch.drain(..).zip(results) {
                        let outbox = (&mut publishes).take(result.publishes);
                        let Incoming::Js(msg) = msg else {
                            unreachable!("a JetStream binding's batch holds JetStream messages")
                        };
                        let (span, trace) = self.message_span(&msg.msg.message);
                        let _entered = span.enter();
                        let delivered = msg.delivered();
                        let result = Ok((result.outcome, outbox));
                        self.js_outcome(msg, delivered, result, trace.as_ref(), out);
                    }
                }
            }
            Err(e) => {
                *instance = None;
                self.counters.batches_rerun.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    plugin = self.plugin.name(),
                    messages = batch.len(),
                    error = %e,
                    "batch failed; handling its messages one at a time"
                );
                // Their queue wait is already counted, from this call.
                for msg in batch.drain(..) {
                    self.process(rt, instance, msg, started, None, out);
                }
            }
        }
    }
}
