//! What a batch produced, sent in order once the batch is done: publishes,
//! replies, error replies and JetStream settlements.
//!
//! Each dispatch worker hands its batches' output to its own [`Output`]
//! task on the async runtime, one hand-off per batch, and goes on with the
//! next batch while the task sends: the publishes (each a channel send that
//! may wake the connection's task) leave the dispatch thread, and the task
//! wakes the connection from the runtime's own threads. One task per worker
//! and a FIFO channel keep the output in order; a JetStream message is still
//! settled only after the output of its handling.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::jetstream::Context;
use async_nats::{Client, HeaderMap};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Dispatch, ERROR_HEADER, Source};
use crate::jetstream::{JsBinding, JsMessage, Settle, Streams};
use crate::runtime::Outgoing;
use crate::status::BindingCounters;

/// Batches of output a worker may have queued before it waits for its task.
pub(super) const DEPTH: usize = 4;

/// Output of a batch, sent in order once the batch is done.
pub(super) enum Send {
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
    /// Boxed: a JetStream message is several times the size of the rest,
    /// and every publish of a batch moves through this type.
    Settle {
        msg: Box<JsMessage>,
        settle: Settle,
    },
}

/// A worker's output task: sends each batch's output in order, until its
/// channel closes (after the last batch) or the connection is retired.
pub(super) struct Output {
    client: Client,
    counters: Arc<BindingCounters>,
    plugin: String,
    /// For settling JetStream messages.
    js: Option<(Context, Arc<Streams>, Arc<JsBinding>)>,
    stop: CancellationToken,
}

impl Output {
    pub(super) fn new(d: &Dispatch) -> Output {
        Output {
            client: d.client.clone(),
            counters: d.counters.clone(),
            plugin: d.plugin.name().to_string(),
            js: match &d.source {
                Source::JetStream(s) => Some((s.js.clone(), s.streams.clone(), s.binding.clone())),
                Source::Core(_) => None,
            },
            stop: d.stop.clone(),
        }
    }

    /// Send every batch that arrives; abandon the rest if the connection is
    /// retired: a hung connection must not pin this task (and the old
    /// client) for ever. What is not sent is lost for core NATS and
    /// redelivered for JetStream.
    pub(super) async fn run(self, mut batches: mpsc::Receiver<Vec<Send>>) {
        while let Some(mut out) = batches.recv().await {
            tokio::select! {
                biased;
                _ = self.send(&mut out) => {}
                _ = self.stop.cancelled() => {
                    let mut unsent = out.len();
                    batches.close();
                    while let Some(more) = batches.recv().await {
                        unsent += more.len();
                    }
                    tracing::warn!(plugin = self.plugin.as_str(), unsent, "connection retired with output unsent");
                    return;
                }
            }
        }
    }

    /// Send a batch's output in order.
    async fn send(&self, out: &mut Vec<Send>) {
        for item in out.drain(..) {
            if let Send::Reply { to, .. } | Send::Error { to, .. } = &item
                && !crate::grants::may_reply(to.as_str())
            {
                // The sender chose this reply subject; the gateway's
                // credentials must not carry a reply into the server's API.
                self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = self.plugin.as_str(), reply_to = %to, "reply not sent: a reply subject in a $ namespace is refused");
                continue;
            }
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
                    self.settle(*msg, settle).await;
                    continue;
                }
            };
            if let Err(e) = result {
                self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = self.plugin.as_str(), error = %e, "publish failed");
            }
        }
    }

    async fn settle(&self, msg: JsMessage, settle: Settle) {
        let Some((js, streams, binding)) = &self.js else {
            return;
        };
        let result =
            crate::jetstream::settle::execute(streams, js, binding, msg, settle, &self.counters)
                .await;
        if let Err(e) = result {
            self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(plugin = self.plugin.as_str(), error = %crate::errors::anyhow_chain(&e), "settling a JetStream message failed");
        }
    }
}

impl Dispatch {
    /// Queue a batch's output for the worker's [`Output`] task, waiting while
    /// it is [`DEPTH`] batches behind. `false` when the connection is retired
    /// (or the task is gone): stop.
    pub(super) async fn hand_off(&self, tx: &mpsc::Sender<Vec<Send>>, out: &mut Vec<Send>) -> bool {
        if out.is_empty() {
            return true;
        }
        let batch = std::mem::replace(out, Vec::with_capacity(out.capacity()));
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => false,
            sent = tx.send(batch) => sent.is_ok(),
        }
    }
}
