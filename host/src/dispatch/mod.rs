//! The hot path: take messages from one binding, run each through the
//! plugin, and act on what `handle` decided.
//!
//! Core NATS bindings:
//! - `ok(reply)`: send the call's outbox in order, then the reply to reply-to.
//! - `retry` / `reject`: count it; a requester gets an error reply (header
//!   `Wasmgate-Error`) instead of a timeout. Core NATS has no redelivery.
//! - trap or deadline: count it, drop the instance (a trapped component cannot
//!   be re-entered) and take a fresh one for the next message.
//!
//! JetStream bindings follow the ack rules in [`crate::jetstream`]: ack after
//! `ok` and its output, nak with a delay on `retry`/trap, dead-letter and term
//! on `reject` or the last allowed delivery.
//!
//! Each binding has one worker per connection (more with `concurrency`),
//! with one instance, handling messages in order. A worker is an async task:
//! it waits for messages without holding a thread, takes every message that
//! is already buffered (up to a batch), and hands the batch to the shared
//! worker pool (`dispatch/pool.rs`), whose fixed number of call slots bounds
//! the calls in progress. Wasm calls are synchronous with an epoch deadline,
//! so they never run as plain async code: a slow guest never stalls the
//! connection or the health probe, and WASI's own blocking bridges work.
//! A batch of a few messages (a lone request, a trickle) runs at once on
//! the worker's thread when the pool is quiet (the thread hands its other
//! tasks to another thread for the call), so it waits for no hand-off; a
//! full batch, or any batch when every slot is taken, queues for the pool's
//! threads, which keeps the runtime's threads for the connection under load
//! (running full batches at once cost 12 % of the throughput of
//! `batch = false` plugins). The batch's output then goes out in one go, so
//! the hand-offs are paid per batch, not per message. A core binding's
//! messages reach its worker through the binding's inbox
//! (`dispatch/inbox.rs`), which bounds what waits by bytes and counts what
//! it has to drop.
//!
//! A plugin that exports `batch-handler` gets a binding's batch in one
//! `handle-batch` call (`dispatch/batch.rs`; on a JetStream binding not when
//! a plugin built against 0.1.2/0.1.3 reads `delivery`): crossing into
//! wasm and back costs about as much as a plugin's whole work on a small
//! message, so paying it once per batch is what brings a plugin close to
//! native throughput. A batch that
//! traps or runs out of time is re-run one message at a time on fresh
//! instances, so only the message at fault fails; batches that keep running
//! out of time are made smaller.
//!
//! `stop` retires the thread with its connection; `shutdown` drains a core
//! subscription and finishes what the server already sent (a JetStream
//! binding naks what it prefetched, so it is redelivered at once elsewhere).

mod admission;
mod batch;
mod core;
mod inbox;
mod jetstream;
mod output;
pub(crate) mod pool;
mod trace;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream::AckKind;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

pub use self::admission::Admission;
use self::admission::Admit;
pub use self::inbox::{Budget, Budgets, Inbox, Reader};
use self::output::Send;
pub use self::pool::Pool;
use self::trace::Carried;
use crate::jetstream::{JsSource, Settle};
use crate::plugin::{CallError, Handled, Instance, Plugin, PluginSlot};
use crate::runtime::bindings::Message;
use crate::runtime::bindings::wasmgate::plugin::delivery::JetstreamInfo;
use crate::status::BindingCounters;

/// Header carried by an error reply: `retry`, `reject`, `trap`, `timeout` or `overloaded`.
pub const ERROR_HEADER: &str = "Wasmgate-Error";

/// Where a binding's messages come from.
pub enum Source {
    Core(Inbox),
    JetStream(Box<JsSource>),
}

/// Everything one binding worker needs.
pub struct Dispatch {
    /// Where the plugin's current version lives (hot reload swaps it).
    pub slot: Arc<PluginSlot>,
    /// The version this worker runs; refreshed between batches.
    pub plugin: Arc<Plugin>,
    pub version: u64,
    pub counters: Arc<BindingCounters>,
    pub client: Client,
    /// The connection's JetStream context and stream snapshot, for the
    /// publishes a stream must confirm.
    pub js: async_nats::jetstream::Context,
    pub streams: Arc<crate::jetstream::Streams>,
    pub source: Source,
    /// Retire with the connection: stop after the message in hand.
    pub stop: CancellationToken,
    /// Gateway shutdown: drain, finish what arrived, then stop.
    pub shutdown: CancellationToken,
    pub drain_timeout: Duration,
    /// The host-wide cap on batches in flight, when configured.
    pub admission: Option<Arc<Admission>>,
    /// The threads the calls run on, shared by every binding.
    pub pool: Arc<Pool>,
}

/// Most messages taken from the source before their output is sent.
const BATCH: usize = 128;

/// Batches of at most this many messages run at once on the worker's
/// thread when a call slot is free (`Pool::call`); larger ones on the pool.
const AT_ONCE: usize = 4;

enum Step {
    Batch,
    Stop,
    Shutdown,
}

/// A message taken from the source. A JetStream message (a core message and
/// its context) is boxed: unboxed it made every core message 408 bytes
/// instead of 184, copied into the batch and out again, and the copies were
/// a tenth of the dispatch thread's time.
enum Incoming {
    Core(async_nats::Message),
    Js(Box<crate::jetstream::JsMessage>),
}

/// What the calls of one worker carry from batch to batch: its instance,
/// the batch in hand and its output, and how big batches may be.
struct Work {
    instance: Option<Instance>,
    batch: Vec<Incoming>,
    /// When each message of `batch` arrived, while latency is measured.
    arrivals: Vec<Instant>,
    out: Vec<Send>,
    batching: batch::Batching,
}

impl Dispatch {
    /// Run until retired or drained: wait for messages on the async runtime
    /// (no thread held while a binding is idle), run each batch's calls on
    /// the pool, hand their output to this worker's output task.
    pub async fn run(self) {
        let (tx, rx) = tokio::sync::mpsc::channel(output::DEPTH);
        let output = tokio::spawn(output::Output::new(&self).run(rx));
        let drained = self.handle(&tx).await;
        tracing::debug!(drained, "dispatch worker done");
        drop(tx);
        // Everything handed off is sent before this worker counts as done
        // (the supervisor flushes the connection after a drain); when the
        // connection is retired the task gives up at once instead.
        let _ = output.await;
    }

    /// The worker's loop, until drained or retired; `false` when retired.
    async fn handle(mut self, tx: &tokio::sync::mpsc::Sender<output::Handed>) -> bool {
        let mut work = Work {
            instance: None,
            // Grown on first use: reserved up front, the two cost about
            // 50 KB per binding, 500 MB idle at 10,000 bindings.
            batch: Vec::new(),
            arrivals: Vec::new(),
            out: Vec::new(),
            batching: batch::Batching::new(&self.plugin),
        };
        loop {
            let limit = work.batching.limit();
            match self
                .next_batch(&mut work.batch, &mut work.arrivals, limit)
                .await
            {
                Step::Batch => {}
                Step::Stop => return false,
                Step::Shutdown => break,
            }
            // A reloaded plugin takes over between batches: the batch in hand
            // finished on the old instance, the next starts on the new one.
            if self.slot.version() != self.version {
                (self.plugin, self.version) = self.slot.current();
                work.instance = None;
                work.batching = batch::Batching::new(&self.plugin);
                tracing::info!(
                    plugin = self.plugin.name(),
                    version = self.version,
                    "worker switched to the reloaded plugin"
                );
            }
            // Held for the whole batch: one acquisition per batch, not per message.
            let _slot = match &self.admission {
                None => None,
                Some(a) => match Box::pin(a.admit(&self.stop)).await {
                    Admit::Granted(permit) => Some(permit),
                    Admit::Stopped => return false,
                    Admit::Shed => {
                        self.shed(&mut work.batch, &mut work.out);
                        work.arrivals.clear();
                        if !Box::pin(self.hand_off(tx, &mut work.out)).await {
                            return false;
                        }
                        continue;
                    }
                },
            };
            let pool = self.pool.clone();
            let rt = Handle::current();
            // The awaits past the wait for messages are boxed: inlined, their
            // state machines made every idle binding's task about 13 KB.
            // A few messages run at once where they are when a slot is
            // free; a full batch goes to the pool, which keeps the runtime's
            // threads for the connection while it runs and costs one
            // hand-off spread over the whole batch.
            let few = work.batch.len() <= AT_ONCE;
            let job = move || {
                self.run_batch(&rt, &mut work);
                (self, work)
            };
            let ran = if few {
                Box::pin(pool.call(job)).await.map(|(back, _)| back)
            } else {
                Box::pin(pool.run(job)).await
            };
            let Ok(back) = ran else {
                tracing::error!("a dispatch job failed on the worker pool; this worker stops");
                return false;
            };
            (self, work) = back;
            if !Box::pin(self.hand_off(tx, &mut work.out)).await {
                return false;
            }
        }

        Box::pin(self.drain()).await;
        Box::pin(self.hand_off(tx, &mut work.out)).await
    }

    /// The batch in hand through the plugin (on a pool thread).
    fn run_batch(&self, rt: &Handle, w: &mut Work) {
        let started = Instant::now();
        if self.batches() {
            self.process_batch(
                rt,
                &mut w.instance,
                &mut w.batch,
                &w.arrivals,
                &mut w.batching,
                &mut w.out,
            );
        } else {
            let mut arrivals = w.arrivals.iter().copied();
            for msg in w.batch.drain(..) {
                let arrived = arrivals.next();
                self.process(rt, &mut w.instance, msg, started, arrived, &mut w.out);
            }
        }
        w.arrivals.clear();
    }

    /// Wait for a message, then take up to `limit` in all of those already
    /// buffered (with their arrival times while latency is measured).
    async fn next_batch(
        &mut self,
        batch: &mut Vec<Incoming>,
        arrivals: &mut Vec<Instant>,
        limit: usize,
    ) -> Step {
        let timed = self.counters.times.is_some();
        match &mut self.source {
            Source::Core(inbox) => {
                // A drain ends the inbox once what the server sent is in it,
                // so shutdown is seen here as its end.
                let first = tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return Step::Stop,
                    msg = inbox.recv() => match msg {
                        Some(msg) => msg,
                        None if self.shutdown.is_cancelled() => return Step::Shutdown,
                        None => return Step::Stop,
                    },
                };
                batch.push(Incoming::Core(first));
                if timed {
                    arrivals.push(inbox.arrived());
                }
                while batch.len() < limit {
                    match inbox.try_recv() {
                        Some(msg) => batch.push(Incoming::Core(msg)),
                        None => break,
                    }
                    if timed {
                        arrivals.push(inbox.arrived());
                    }
                }
            }
            Source::JetStream(js) => {
                let first = tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return Step::Stop,
                    _ = self.shutdown.cancelled() => return Step::Shutdown,
                    msg = js.next(&self.stop) => match msg {
                        Some(msg) => msg,
                        None => return Step::Stop,
                    },
                };
                // Stamped as the worker takes them: the pull's own buffer
                // is the client's.
                let now = timed.then(Instant::now);
                batch.push(Incoming::Js(Box::new(first)));
                while batch.len() < limit {
                    match js.try_next() {
                        Some(msg) => batch.push(Incoming::Js(Box::new(msg))),
                        None => break,
                    }
                }
                if let Some(now) = now {
                    arrivals.resize(batch.len(), now);
                }
            }
        }
        Step::Batch
    }

    /// Shutdown: prefetched JetStream messages are nak'd so they are
    /// redelivered at once. (A core binding's inbox drained itself: it ends
    /// once what the server sent has been handled.)
    async fn drain(&mut self) {
        match &mut self.source {
            Source::Core(_) => {}
            Source::JetStream(js) => {
                let naks = async {
                    while let Some(msg) = js.try_next() {
                        let _ = msg.ack_with(AckKind::Nak(None)).await;
                    }
                };
                let _ = tokio::time::timeout(self.drain_timeout, naks).await;
            }
        }
    }

    /// The host is saturated: drop core messages (telling requesters) and
    /// nak JetStream ones with their backoff delay.
    fn shed(&self, batch: &mut Vec<Incoming>, out: &mut Vec<Send>) {
        self.counters
            .shed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        tracing::warn!(
            plugin = self.plugin.name(),
            messages = batch.len(),
            "host saturated: shedding"
        );
        for msg in batch.drain(..) {
            match msg {
                Incoming::Core(m) => {
                    if let Some(to) = m.reply {
                        out.push(Send::Error {
                            to: to.to_string(),
                            kind: "overloaded",
                            reason: "the gateway is saturated; try again".into(),
                            trace: None,
                        });
                    }
                }
                Incoming::Js(m) => {
                    let delay = match &self.source {
                        Source::JetStream(js) => js.binding.nak_delay(m.delivered()),
                        Source::Core(_) => None,
                    };
                    out.push(Send::Settle {
                        msg: m,
                        settle: Settle::Nak(delay),
                    });
                }
            }
        }
    }

    fn process(
        &self,
        rt: &Handle,
        instance: &mut Option<Instance>,
        msg: Incoming,
        batch_started: Instant,
        arrived: Option<Instant>,
        out: &mut Vec<Send>,
    ) {
        let (span, trace) = match &msg {
            Incoming::Core(m) => self.message_span(m),
            Incoming::Js(m) => self.message_span(&m.msg.message),
        };
        let _entered = span.enter();
        let trace = trace.as_ref();
        match msg {
            Incoming::Core(msg) => self.process_core(instance, msg, arrived, trace, out),
            Incoming::Js(msg) => {
                self.process_js(rt, instance, msg, batch_started, arrived, trace, out)
            }
        }
    }

    /// The span of one message, with the `messaging.*` fields, continuing
    /// the trace in its headers; and the context its outputs carry. Enter
    /// the span after this (entering fixes its parent).
    fn message_span(&self, msg: &async_nats::Message) -> (tracing::Span, Option<Carried>) {
        let span = tracing::debug_span!(
            "message",
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation = "process",
            messaging.destination.name = %msg.subject,
            messaging.message.body.size = msg.payload.len(),
            wasmgate.plugin = self.plugin.name(),
        );
        let trace = Carried::start(&span, msg.headers.as_ref());
        (span, trace)
    }

    /// Run `handle`, replacing a trapped instance. `Err` is a trap or
    /// deadline. `arrived`: when the message arrived, for its queue wait.
    fn call(
        &self,
        instance: &mut Option<Instance>,
        input: &Message,
        delivery: Option<JetstreamInfo>,
        arrived: Option<Instant>,
    ) -> Result<Handled, CallError> {
        let times = self.counters.times.as_deref();
        let start = times.map(|t| {
            let now = Instant::now();
            if let Some(arrived) = arrived {
                t.waited(arrived, now, 1);
            }
            now
        });
        let inst = match instance {
            Some(inst) => inst,
            None => instance.insert(self.plugin.instantiate()?),
        };
        let result = inst.handle_with(input, delivery);
        if let (Some(t), Some(start)) = (times, start) {
            t.handler.record(start.elapsed());
        }
        if result.is_err() {
            *instance = None;
        }
        result
    }
}
