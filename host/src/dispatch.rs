//! The hot path: take messages from one binding's subscription, run each
//! through the plugin, and act on what `handle` decided.
//!
//! - `ok(reply)`: send the call's outbox in order, then the reply to reply-to.
//! - `retry` / `reject`: count it; a requester gets an error reply (header
//!   `Wasmgate-Error`) instead of a timeout. Core NATS has no redelivery.
//! - trap or deadline: count it, drop the instance (a trapped component cannot
//!   be re-entered) and take a fresh one for the next message.
//!
//! One task per binding per connection handles messages in order with one
//! instance. `stop` retires the task with its connection; `shutdown` drains
//! the subscription and finishes what the server already sent.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{Client, HeaderMap, Subscriber};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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

impl Dispatch {
    pub async fn run(mut self) {
        let mut instance: Option<Instance> = None;
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                _ = self.shutdown.cancelled() => break,
                msg = self.subscriber.next() => match msg {
                    Some(msg) => msg,
                    None => return,
                },
            };
            self.handle(&mut instance, msg).await;
        }

        // Shutdown: ask the server to stop sending, then handle what is buffered.
        if let Err(e) = self.subscriber.drain().await {
            tracing::warn!(plugin = self.plugin.name(), error = %e, "drain request failed");
        }
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, self.subscriber.next()).await {
            self.handle(&mut instance, msg).await;
        }
    }

    async fn handle(&self, instance: &mut Option<Instance>, msg: async_nats::Message) {
        let span = tracing::debug_span!(
            "message",
            messaging.system = "nats",
            messaging.operation = "process",
            messaging.destination.name = %msg.subject,
            messaging.message.body.size = msg.payload.len(),
            wasmgate.plugin = self.plugin.name(),
        );
        self.process(instance, msg).instrument(span).await
    }

    async fn process(&self, instance: &mut Option<Instance>, msg: async_nats::Message) {
        let reply_to = msg.reply.as_ref().map(|r| r.to_string());
        let input = to_wit(msg);

        let inst = match instance {
            Some(inst) => inst,
            None => match self.plugin.instantiate() {
                Ok(inst) => instance.insert(inst),
                Err(e) => {
                    self.counters.trapped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "cannot instantiate plugin");
                    self.error_reply(reply_to, "trap", &e.to_string()).await;
                    return;
                }
            },
        };

        match inst.handle(&input) {
            Ok(Handled {
                outcome: Outcome::Ok(reply),
                outbox,
            }) => {
                let mut ok = self.send_outbox(outbox).await;
                if let (Some(to), Some(reply)) = (reply_to, reply) {
                    if let Err(e) = self.client.publish(to, reply.into()).await {
                        tracing::warn!(error = %e, "reply failed");
                        ok = false;
                    }
                }
                if ok {
                    self.counters.handled.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Handled {
                outcome: Outcome::Retry(reason),
                ..
            }) => {
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, "handler asked for a retry");
                self.error_reply(reply_to, "retry", &reason).await;
            }
            Ok(Handled {
                outcome: Outcome::Reject(reason),
                ..
            }) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, "handler rejected the message");
                self.error_reply(reply_to, "reject", &reason).await;
            }
            Err(e) => {
                *instance = None;
                self.counters.trapped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "handler failed; instance discarded");
                let kind = match e {
                    CallError::Timeout(_) => "timeout",
                    _ => "trap",
                };
                self.error_reply(reply_to, kind, &e.to_string()).await;
            }
        }
    }

    async fn send_outbox(&self, outbox: Vec<Outgoing>) -> bool {
        let mut ok = true;
        for out in outbox {
            let result = if out.headers.is_empty() {
                self.client.publish(out.subject, out.payload).await
            } else {
                let mut headers = HeaderMap::new();
                for (k, v) in &out.headers {
                    headers.append(k.as_str(), v.as_str());
                }
                self.client
                    .publish_with_headers(out.subject, headers, out.payload)
                    .await
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "publish failed");
                ok = false;
            }
        }
        ok
    }

    async fn error_reply(&self, reply_to: Option<String>, kind: &str, reason: &str) {
        let Some(to) = reply_to else { return };
        let mut headers = HeaderMap::new();
        headers.insert(ERROR_HEADER, kind);
        if let Err(e) = self
            .client
            .publish_with_headers(to, headers, reason.to_string().into())
            .await
        {
            tracing::warn!(error = %e, "error reply failed");
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
