//! The hot path: take messages from one binding's subscription, run each
//! through the plugin, and act on what `handle` decided.
//!
//! - `ok(reply)`: send the call's outbox in order, then the reply to reply-to.
//! - `retry` / `reject`: count it; a requester gets an error reply (header
//!   `Wasmgate-Error`) instead of a timeout. Core NATS has no redelivery.
//! - trap or deadline: count it, drop the instance (a trapped component cannot
//!   be re-entered) and take a fresh one for the next message.
//!
//! Each binding gets one thread from tokio's blocking pool per connection,
//! with one instance, handling messages in order. Wasm calls are synchronous
//! with an epoch deadline, so they run off the async workers: a slow guest
//! never stalls the connection or the health probe, and WASI's own blocking
//! bridges work. The thread takes every message that is already buffered (up
//! to a batch), runs them, then publishes all their output in one go, so the
//! async hand-off is paid per batch, not per message.
//!
//! `stop` retires the thread with its connection; `shutdown` drains the
//! subscription and finishes what the server already sent.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{Client, HeaderMap, Subscriber};
use futures::FutureExt;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::plugin::{CallError, Handled, Instance, Outcome, Plugin};
use crate::runtime::Outgoing;
use crate::runtime::bindings::Message;
use crate::status::BindingCounters;

/// Header carried by an error reply: `retry`, `reject`, `trap` or `timeout`.
pub const ERROR_HEADER: &str = "Wasmgate-Error";

/// Everything one dispatch task needs.
pub struct Dispatch {
    pub plugin: Arc<Plugin>,
    pub counters: Arc<BindingCounters>,
    pub client: Client,
    pub subscriber: Subscriber,
    /// Retire with the connection: stop after the message in hand.
    pub stop: CancellationToken,
    /// Gateway shutdown: drain, finish what arrived, then stop.
    pub shutdown: CancellationToken,
    pub drain_timeout: Duration,
}

/// Most messages taken from the subscription before their output is sent.
const BATCH: usize = 128;

enum Step {
    Batch,
    Stop,
    Shutdown,
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
}

impl Dispatch {
    /// Run on a blocking-pool thread until retired or drained.
    pub fn run(mut self) {
        let rt = tokio::runtime::Handle::current();
        let mut instance: Option<Instance> = None;
        let mut batch = Vec::with_capacity(BATCH);
        let mut out = Vec::with_capacity(BATCH);
        loop {
            match rt.block_on(self.next_batch(&mut batch)) {
                Step::Batch => {}
                Step::Stop => return,
                Step::Shutdown => break,
            }
            for msg in batch.drain(..) {
                self.process(&mut instance, msg, &mut out);
            }
            rt.block_on(self.send(&mut out));
        }

        // Shutdown: ask the server to stop sending, then handle what is buffered.
        let drained = rt.block_on(async {
            if let Err(e) = self.subscriber.drain().await {
                tracing::warn!(plugin = self.plugin.name(), error = %e, "drain request failed");
            }
            let deadline = tokio::time::Instant::now() + self.drain_timeout;
            let mut rest = Vec::new();
            while let Ok(Some(msg)) =
                tokio::time::timeout_at(deadline, self.subscriber.next()).await
            {
                rest.push(msg);
            }
            rest
        });
        for msg in drained {
            self.process(&mut instance, msg, &mut out);
        }
        rt.block_on(self.send(&mut out));
    }

    async fn next_batch(&mut self, batch: &mut Vec<async_nats::Message>) -> Step {
        let first = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Step::Stop,
            _ = self.shutdown.cancelled() => return Step::Shutdown,
            msg = self.subscriber.next() => match msg {
                Some(msg) => msg,
                None => return Step::Stop,
            },
        };
        batch.push(first);
        while batch.len() < BATCH {
            match self.subscriber.next().now_or_never() {
                Some(Some(msg)) => batch.push(msg),
                _ => break,
            }
        }
        Step::Batch
    }

    fn process(
        &self,
        instance: &mut Option<Instance>,
        msg: async_nats::Message,
        out: &mut Vec<Send>,
    ) {
        let span = tracing::debug_span!(
            "message",
            messaging.system = "nats",
            messaging.operation = "process",
            messaging.destination.name = %msg.subject,
            messaging.message.body.size = msg.payload.len(),
            wasmgate.plugin = self.plugin.name(),
        );
        let _entered = span.enter();
        let reply_to = msg.reply.as_ref().map(|r| r.to_string());
        let input = to_wit(msg);
        let error = |out: &mut Vec<Send>, kind: &'static str, reason: String| {
            if let Some(to) = reply_to.clone() {
                out.push(Send::Error { to, kind, reason });
            }
        };

        let inst = match instance {
            Some(inst) => inst,
            None => match self.plugin.instantiate() {
                Ok(inst) => instance.insert(inst),
                Err(e) => {
                    self.counters.trapped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "cannot instantiate plugin");
                    error(out, "trap", e.to_string());
                    return;
                }
            },
        };

        match inst.handle(&input) {
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
                *instance = None;
                self.counters.trapped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "handler failed; instance discarded");
                let kind = match e {
                    CallError::Timeout(_) => "timeout",
                    _ => "trap",
                };
                error(out, kind, e.to_string());
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
            };
            if let Err(e) = result {
                self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = self.plugin.name(), error = %e, "publish failed");
            }
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
