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
//! Each binding gets one thread from tokio's blocking pool per connection,
//! with one instance, handling messages in order. Wasm calls are synchronous
//! with an epoch deadline, so they run off the async workers: a slow guest
//! never stalls the connection or the health probe, and WASI's own blocking
//! bridges work. The thread takes every message that is already buffered (up
//! to a batch), runs them, then sends all their output in one go, so the
//! async hand-off is paid per batch, not per message.
//!
//! `stop` retires the thread with its connection; `shutdown` drains a core
//! subscription and finishes what the server already sent (a JetStream
//! binding naks what it prefetched, so it is redelivered at once elsewhere).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, HeaderMap, Subscriber};
use futures::FutureExt;
use futures::StreamExt;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::config::{Overload, RuntimeConfig};
use crate::jetstream::{JsSource, Settle};
use crate::plugin::{CallError, Handled, Instance, Outcome, Plugin};
use crate::reload::PluginSlot;
use crate::runtime::Outgoing;
use crate::runtime::bindings::Message;
use crate::status::BindingCounters;

/// Header carried by an error reply: `retry`, `reject`, `trap`, `timeout` or `overloaded`.
pub const ERROR_HEADER: &str = "Wasmgate-Error";

/// Where a binding's messages come from.
pub enum Source {
    Core(Subscriber),
    JetStream(JsSource),
}

/// Everything one dispatch thread needs.
pub struct Dispatch {
    /// Where the plugin's current version lives (hot reload swaps it).
    pub slot: Arc<PluginSlot>,
    /// The version this worker runs; refreshed between batches.
    pub plugin: Arc<Plugin>,
    pub version: u64,
    pub counters: Arc<BindingCounters>,
    pub client: Client,
    pub source: Source,
    /// Retire with the connection: stop after the message in hand.
    pub stop: CancellationToken,
    /// Gateway shutdown: drain, finish what arrived, then stop.
    pub shutdown: CancellationToken,
    pub drain_timeout: Duration,
    /// The host-wide cap on batches in flight, when configured.
    pub admission: Option<Arc<Admission>>,
}

/// The host-wide cap on batches handled at once, and what to do when it is reached.
pub struct Admission {
    slots: Arc<tokio::sync::Semaphore>,
    overload: Overload,
    wait: Duration,
}

enum Admit {
    Granted(tokio::sync::OwnedSemaphorePermit),
    Shed,
    Stopped,
}

impl Admission {
    /// `None` when the config sets no cap.
    pub fn from_config(c: &RuntimeConfig) -> Option<Arc<Admission>> {
        (c.max_concurrent_calls > 0).then(|| {
            Arc::new(Admission {
                slots: Arc::new(tokio::sync::Semaphore::new(c.max_concurrent_calls)),
                overload: c.overload,
                wait: c.admission_wait,
            })
        })
    }

    async fn admit(&self, stop: &CancellationToken) -> Admit {
        let acquire = self.slots.clone().acquire_owned();
        let bounded = async {
            match self.overload {
                Overload::Wait => acquire.await.ok(),
                Overload::Shed => tokio::time::timeout(self.wait, acquire)
                    .await
                    .ok()
                    .and_then(Result::ok),
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => Admit::Stopped,
            permit = bounded => match permit {
                Some(p) => Admit::Granted(p),
                None => Admit::Shed,
            },
        }
    }
}

/// Most messages taken from the source before their output is sent.
const BATCH: usize = 128;

enum Step {
    Batch,
    Stop,
    Shutdown,
}

enum Incoming {
    Core(async_nats::Message),
    Js(jetstream::Message),
}

/// Output of a batch, sent in order once the batch is done.
enum Send {
    Publish(Outgoing),
    Reply {
        to: String,
        payload: Vec<u8>,
    },
    Error {
        to: String,
        kind: &'static str,
        reason: String,
    },
    Settle {
        msg: jetstream::Message,
        settle: Settle,
    },
}

impl Dispatch {
    /// Run on a blocking-pool thread until retired or drained.
    pub fn run(mut self) {
        let rt = Handle::current();
        let mut instance: Option<Instance> = None;
        let mut batch = Vec::with_capacity(BATCH);
        let mut out = Vec::with_capacity(BATCH);
        loop {
            match rt.block_on(self.next_batch(&mut batch)) {
                Step::Batch => {}
                Step::Stop => return,
                Step::Shutdown => break,
            }
            // A reloaded plugin takes over between batches: the batch in hand
            // finished on the old instance, the next starts on the new one.
            if self.slot.version() != self.version {
                (self.plugin, self.version) = self.slot.current();
                instance = None;
                tracing::info!(
                    plugin = self.plugin.name(),
                    version = self.version,
                    "worker switched to the reloaded plugin"
                );
            }
            // Held for the whole batch: one acquisition per batch, not per message.
            let _slot = match &self.admission {
                None => None,
                Some(a) => match rt.block_on(a.admit(&self.stop)) {
                    Admit::Granted(permit) => Some(permit),
                    Admit::Stopped => return,
                    Admit::Shed => {
                        self.shed(&mut batch, &mut out);
                        rt.block_on(self.send_or_stop(&mut out));
                        continue;
                    }
                },
            };
            let started = Instant::now();
            for msg in batch.drain(..) {
                self.process(&rt, &mut instance, msg, started, &mut out);
            }
            rt.block_on(self.send_or_stop(&mut out));
        }

        let rest = rt.block_on(self.drain());
        for msg in rest {
            self.process(
                &rt,
                &mut instance,
                Incoming::Core(msg),
                Instant::now(),
                &mut out,
            );
        }
        rt.block_on(self.send(&mut out));
    }

    async fn next_batch(&mut self, batch: &mut Vec<Incoming>) -> Step {
        match &mut self.source {
            Source::Core(sub) => {
                let first = tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return Step::Stop,
                    _ = self.shutdown.cancelled() => return Step::Shutdown,
                    msg = sub.next() => match msg {
                        Some(msg) => msg,
                        None => return Step::Stop,
                    },
                };
                batch.push(Incoming::Core(first));
                while batch.len() < BATCH {
                    match sub.next().now_or_never() {
                        Some(Some(msg)) => batch.push(Incoming::Core(msg)),
                        _ => break,
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
                batch.push(Incoming::Js(first));
                while batch.len() < BATCH {
                    match js.try_next() {
                        Some(msg) => batch.push(Incoming::Js(msg)),
                        None => break,
                    }
                }
            }
        }
        Step::Batch
    }

    /// Shutdown: a core subscription is drained (the server stops sending and
    /// what it sent is returned for handling); prefetched JetStream messages
    /// are nak'd so they are redelivered at once.
    async fn drain(&mut self) -> Vec<async_nats::Message> {
        let mut rest = Vec::new();
        match &mut self.source {
            Source::Core(sub) => {
                if let Err(e) = sub.drain().await {
                    tracing::warn!(plugin = self.plugin.name(), error = %e, "drain request failed");
                }
                let deadline = tokio::time::Instant::now() + self.drain_timeout;
                while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
                    rest.push(msg);
                }
            }
            Source::JetStream(js) => {
                let naks = async {
                    while let Some(msg) = js.try_next() {
                        let _ = msg.ack_with(AckKind::Nak(None)).await;
                    }
                };
                let _ = tokio::time::timeout(self.drain_timeout, naks).await;
            }
        }
        rest
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
                        });
                    }
                }
                Incoming::Js(m) => {
                    let delay = match &self.source {
                        Source::JetStream(js) => {
                            let delivered =
                                crate::jetstream::delivery_info(&m).map_or(1, |d| d.delivered);
                            js.binding.nak_delay(delivered)
                        }
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
        out: &mut Vec<Send>,
    ) {
        let (subject, size) = match &msg {
            Incoming::Core(m) => (m.subject.as_str(), m.payload.len()),
            Incoming::Js(m) => (m.subject.as_str(), m.payload.len()),
        };
        let span = tracing::debug_span!(
            "message",
            messaging.system = "nats",
            messaging.operation = "process",
            messaging.destination.name = %subject,
            messaging.message.body.size = size,
            wasmgate.plugin = self.plugin.name(),
        );
        let _entered = span.enter();
        match msg {
            Incoming::Core(msg) => self.process_core(instance, msg, out),
            Incoming::Js(msg) => self.process_js(rt, instance, msg, batch_started, out),
        }
    }

    /// Run `handle`, replacing a trapped instance. `Err` is a trap or deadline.
    fn call(
        &self,
        instance: &mut Option<Instance>,
        input: &Message,
        delivery: Option<crate::runtime::bindings::wasmgate::plugin::delivery::JetstreamInfo>,
    ) -> Result<Handled, CallError> {
        let inst = match instance {
            Some(inst) => inst,
            None => instance.insert(self.plugin.instantiate()?),
        };
        let result = inst.handle_with(input, delivery);
        if result.is_err() {
            *instance = None;
        }
        result
    }

    fn process_core(
        &self,
        instance: &mut Option<Instance>,
        msg: async_nats::Message,
        out: &mut Vec<Send>,
    ) {
        let reply_to = msg.reply.as_ref().map(|r| r.to_string());
        let input = to_wit(msg);
        let error = |out: &mut Vec<Send>, kind: &'static str, reason: String| {
            if let Some(to) = reply_to.clone() {
                out.push(Send::Error { to, kind, reason });
            }
        };
        match self.call(instance, &input, None) {
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

    fn process_js(
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
        out.push(Send::Settle { msg, settle });
    }

    /// [`send`](Self::send), abandoned if the connection is retired: a hung
    /// connection must not pin this thread (and the old client) for ever. What
    /// is not sent is lost for core NATS and redelivered for JetStream.
    async fn send_or_stop(&self, out: &mut Vec<Send>) {
        tokio::select! {
            biased;
            _ = self.send(out) => {}
            _ = self.stop.cancelled() => {
                tracing::warn!(plugin = self.plugin.name(), unsent = out.len(), "connection retired with output unsent");
                out.clear();
            }
        }
    }

    /// Send a batch's output in order.
    async fn send(&self, out: &mut Vec<Send>) {
        for item in out.drain(..) {
            let result = match item {
                Send::Publish(o) if o.headers.is_empty() => {
                    self.client.publish(o.subject, o.payload).await
                }
                Send::Publish(o) => {
                    let mut headers = HeaderMap::new();
                    for (k, v) in &o.headers {
                        headers.append(k.as_str(), v.as_str());
                    }
                    self.client
                        .publish_with_headers(o.subject, headers, o.payload)
                        .await
                }
                Send::Reply { to, payload } => self.client.publish(to, payload.into()).await,
                Send::Error { to, kind, reason } => {
                    let mut headers = HeaderMap::new();
                    headers.insert(ERROR_HEADER, kind);
                    self.client
                        .publish_with_headers(to, headers, reason.into())
                        .await
                }
                Send::Settle { msg, settle } => {
                    self.settle(msg, settle).await;
                    continue;
                }
            };
            if let Err(e) = result {
                self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = self.plugin.name(), error = %e, "publish failed");
            }
        }
    }

    async fn settle(&self, msg: jetstream::Message, settle: Settle) {
        let Source::JetStream(source) = &self.source else {
            return;
        };
        let result = match settle {
            Settle::Ack => msg.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}")),
            Settle::Nak(delay) => msg
                .ack_with(AckKind::Nak(delay))
                .await
                .map_err(|e| anyhow::anyhow!("nak: {e}")),
            Settle::DeadLetter(reason) => {
                match crate::jetstream::dead_letter(&source.js, &source.binding, &msg, &reason)
                    .await
                {
                    Ok(()) => {
                        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => {
                        // Keep the message: it comes back after the delay.
                        tracing::error!(error = %format!("{e:#}"), "dead-lettering failed; nak instead");
                        let delivered =
                            crate::jetstream::delivery_info(&msg).map_or(1, |d| d.delivered);
                        msg.ack_with(AckKind::Nak(source.binding.nak_delay(delivered)))
                            .await
                            .map_err(|e| anyhow::anyhow!("nak: {e}"))
                    }
                }
            }
        };
        if let Err(e) = result {
            self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(plugin = self.plugin.name(), error = %format!("{e:#}"), "settling a JetStream message failed");
        }
    }
}

/// The WIT view of a NATS message.
pub fn to_wit(msg: async_nats::Message) -> Message {
    let headers = msg
        .headers
        .as_ref()
        .map(|h| {
            h.iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.to_string(), v.as_str().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    Message {
        subject: msg.subject.to_string(),
        payload: msg.payload.to_vec(),
        headers,
        reply_to: msg.reply.map(|r| r.to_string()),
    }
}
