//! What a batch produced, sent in order once the batch is done: publishes,
//! replies, error replies and JetStream settlements.
//!
//! Each dispatch worker hands its batches' output to its own [`Output`]
//! task on the async runtime, one hand-off per batch, and goes on with the
//! next batch while the task sends: the publishes (each a channel send that
//! may wake the connection's task) leave the worker-pool thread, and the task
//! wakes the connection from the runtime's own threads. One task per worker
//! and a FIFO channel keep the output in order.
//!
//! End-to-end at-least-once: a publish to a subject a stream captures
//! (`publish_ack = "auto"`, asked of [`Streams`] once per subject; every publish with
//! `"always"`) is a JetStream publish, and what follows it for the same
//! input — the ack of a JetStream message, the reply to a requester — waits
//! for its PubAck. A batch's publishes are all in flight together, and the
//! next batches' go out while a second task awaits them; the settlements
//! and replies then go out in order as their PubAcks arrive. A
//! PubAck that fails or does not come turns the ack into a nak with the
//! binding's backoff (the input comes back) and a reply into an error reply
//! (`unavailable`), counted in `publish_unconfirmed`. Such outputs of a
//! JetStream input carry `Nats-Msg-Id: <stream>:<sequence>:<index>` (unless
//! the plugin set one), so an input handled again adds nothing to the output
//! stream within its duplicate window.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::jetstream::Context;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::{Client, HeaderMap};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Carried, Dispatch, ERROR_HEADER, Source};
use crate::config::PublishAck;
use crate::jetstream::{Capture, JsBinding, JsMessage, Settle, Streams};
use crate::runtime::Outgoing;
use crate::status::BindingCounters;
use crate::throttle::Throttle;

/// The "not confirmed" warning is logged at most this often per binding.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Batches of output a worker may have queued before it waits for its task.
pub(super) const DEPTH: usize = 4;

/// The header that makes a stream drop a message it already stored.
const MSG_ID: &str = "Nats-Msg-Id";

/// Output of a batch, sent in order once the batch is done.
pub(super) enum Send {
    /// A publish of the plugin's; `Origin` when its input is a JetStream message.
    Publish(Outgoing, Option<Origin>),
    Reply {
        to: String,
        payload: Vec<u8>,
        /// The trace context it carries; boxed, as [`Send::Settle`].
        trace: Option<Box<Carried>>,
    },
    Error {
        to: String,
        kind: &'static str,
        reason: String,
        /// The trace context it carries, as a reply's.
        trace: Option<Box<Carried>>,
    },
    /// Boxed: a JetStream message is several times the size of the rest,
    /// and every publish of a batch moves through this type.
    Settle { msg: Box<JsMessage>, settle: Settle },
}

/// Which JetStream input a publish came from: its stream sequence and the
/// publish's index among that input's publishes (its `Nats-Msg-Id`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    pub seq: u64,
    pub index: usize,
}

/// A batch's output and the plugin's `publish_ack` when it was handled.
pub(super) type Handed = (PublishAck, Vec<Send>);

/// Batches whose PubAcks are awaited while the next batches' publishes go out.
const CONFIRMING: usize = 16;

/// A worker's output task: sends each batch's output in order, until its
/// channel closes (after the last batch) or the connection is retired.
#[derive(Clone)]
pub(super) struct Output {
    client: Client,
    js: Context,
    streams: Arc<Streams>,
    counters: Arc<BindingCounters>,
    plugin: String,
    /// For settling JetStream messages.
    binding: Option<Arc<JsBinding>>,
    stop: CancellationToken,
    /// The "not confirmed" warning, at most once per [`WARN_EVERY`].
    unconfirmed_warnings: Arc<std::sync::Mutex<Throttle>>,
}

/// A PubAck on its way for a publish to `subject`, or why there will be none.
struct Pending {
    subject: async_nats::Subject,
    ack: Result<PublishAckFuture, String>,
}

/// What waits for the PubAcks of one input's publishes: its settlement or
/// reply (`None` when nothing does; the PubAcks are still counted).
struct Held {
    acks: Vec<Pending>,
    then: Option<Send>,
}

/// A batch's settlements and replies, in order, and the first failure of
/// each one's PubAcks, being awaited.
struct Confirming {
    thens: Vec<Option<Send>>,
    failures: tokio::task::JoinHandle<Vec<Option<String>>>,
}

impl Output {
    pub(super) fn new(d: &Dispatch) -> Output {
        Output {
            client: d.client.clone(),
            js: d.js.clone(),
            streams: d.streams.clone(),
            counters: d.counters.clone(),
            plugin: d.plugin.name().to_string(),
            binding: match &d.source {
                Source::JetStream(s) => Some(s.binding.clone()),
                Source::Core(_) => None,
            },
            stop: d.stop.clone(),
            unconfirmed_warnings: Arc::new(std::sync::Mutex::new(Throttle::new(WARN_EVERY))),
        }
    }

    /// Send every batch that arrives; abandon the rest if the connection is
    /// retired: a hung connection must not pin this task (and the old
    /// client) for ever. What is not sent is lost for core NATS and
    /// redelivered for JetStream.
    ///
    /// Publishes and what waits for their PubAcks are pipelined: while a
    /// second task awaits one batch's PubAcks and then settles its inputs
    /// (in order), this one sends the next batches' publishes, up to
    /// [`CONFIRMING`] batches ahead.
    pub(super) async fn run(self, mut batches: mpsc::Receiver<Handed>) {
        // The confirming task starts with the first batch that holds
        // PubAcks: most bindings never have one, and at 10,000 bindings a
        // task and a channel each cost megabytes idle.
        let mut confirming: Option<(mpsc::Sender<Confirming>, tokio::task::JoinHandle<()>)> = None;
        while let Some((ack, mut out)) = batches.recv().await {
            // Boxed: held across the await, the publishing state machine
            // made every idle output task several kilobytes.
            let sent = tokio::select! {
                biased;
                held = Box::pin(self.send(ack, &mut out)) => Some(held),
                _ = self.stop.cancelled() => None,
            };
            let Some(held) = sent else {
                let mut unsent = out.len();
                batches.close();
                while let Some((_, more)) = batches.recv().await {
                    unsent += more.len();
                }
                tracing::warn!(
                    plugin = self.plugin.as_str(),
                    unsent,
                    "connection retired with output unsent"
                );
                break;
            };
            if held.is_empty() {
                continue;
            }
            let (tx, _) = confirming.get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(CONFIRMING);
                (tx, tokio::spawn(self.clone().confirm(rx)))
            });
            if tx.send(self.await_acks(held)).await.is_err() {
                break;
            }
        }
        if let Some((tx, confirmer)) = confirming {
            drop(tx);
            let _ = confirmer.await;
        }
    }

    /// Await each batch's PubAcks, then settle its inputs and send its
    /// replies, in order, until the batches end or the connection is retired.
    async fn confirm(self, mut batches: mpsc::Receiver<Confirming>) {
        while let Some(c) = batches.recv().await {
            tokio::select! {
                biased;
                _ = Box::pin(self.finish_confirmed(c)) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// Start awaiting every PubAck of a batch at once, now: a PubAck's
    /// timeout runs from when it is first awaited, and awaiting one input's
    /// after another's made a server that went away cost each of them the
    /// whole timeout in turn.
    fn await_acks(&self, held: Vec<Held>) -> Confirming {
        let (acks, thens): (Vec<_>, Vec<_>) = held.into_iter().map(|h| (h.acks, h.then)).unzip();
        let output = self.clone();
        let failures = tokio::spawn(async move {
            futures::future::join_all(acks.into_iter().map(|a| output.confirmed(a))).await
        });
        Confirming { thens, failures }
    }

    async fn finish_confirmed(&self, c: Confirming) {
        let failures = match c.failures.await {
            Ok(failures) => failures,
            Err(e) => vec![Some(format!("awaiting the PubAcks failed: {e}")); c.thens.len()],
        };
        for (then, failure) in c.thens.into_iter().zip(failures) {
            if let Some(then) = then {
                self.finish(then, failure).await;
            }
        }
    }

    /// Send a batch's output in order: every publish at once, and what
    /// needs no PubAck; what waits for PubAcks is returned, in order.
    async fn send(&self, mode: PublishAck, out: &mut Vec<Send>) -> Vec<Held> {
        // One look at the snapshot per batch, not per publish.
        let snapshot = match mode {
            PublishAck::Auto if out.iter().any(|s| matches!(s, Send::Publish(..))) => {
                Some(self.streams.snapshot().await)
            }
            _ => None,
        };
        let mut acks: Vec<Pending> = Vec::new();
        let mut held: Vec<Held> = Vec::new();
        for item in out.drain(..) {
            match item {
                Send::Publish(o, origin) => {
                    let capture = match (&mode, &snapshot) {
                        (PublishAck::Never, _) => Ok(Capture::None),
                        (PublishAck::Always, _) => Ok(Capture::Stream(String::new())),
                        (_, Some(s)) => match s.capture(&o.subject) {
                            Some(known) => Ok(known),
                            None => self.streams.capturing_subject(&o.subject).await,
                        },
                        (_, None) => self.streams.capturing(&o.subject).await,
                    };
                    let confirm = match capture {
                        Ok(Capture::Stream(_)) => Confirm::Yes,
                        Ok(Capture::None) => Confirm::No,
                        Err(e) => Confirm::Unknown(format!(
                            "cannot tell whether a stream captures it: {}",
                            crate::errors::anyhow_chain(&e)
                        )),
                    };
                    if let Some(pending) = self.publish(o, origin, confirm).await {
                        acks.push(pending);
                    }
                }
                then if acks.is_empty() && held.is_empty() => self.finish(then, None).await,
                then => held.push(Held {
                    acks: std::mem::take(&mut acks),
                    then: Some(then),
                }),
            }
        }
        if !acks.is_empty() {
            held.push(Held { acks, then: None });
        }
        held
    }

    /// Send one publish; the PubAck to wait for when it is a JetStream one.
    async fn publish(
        &self,
        o: Outgoing,
        origin: Option<Origin>,
        confirm: Confirm,
    ) -> Option<Pending> {
        // Only a publish a stream may store needs the id (a plain subscriber
        // has no use for it).
        let origin = origin.filter(|_| !matches!(confirm, Confirm::No));
        let mut headers = (!o.headers.is_empty() || origin.is_some()).then(HeaderMap::new);
        if let Some(h) = &mut headers {
            for (k, v) in &o.headers {
                h.append(k.as_str(), v.as_str());
            }
            if let (Some(origin), Some(b)) = (origin, &self.binding)
                && h.get(MSG_ID).is_none()
            {
                let id = format!("{}:{}:{}", b.config.stream, origin.seq, origin.index);
                h.insert(MSG_ID, id.as_str());
            }
        }
        let subject = o.subject.clone();
        let unknown = match confirm {
            Confirm::Yes => {
                let sent = self
                    .js
                    .publish_with_headers(o.subject, headers.unwrap_or_default(), o.payload)
                    .await;
                let ack = sent.map_err(|e| {
                    self.stale_if_no_stream(&subject, e.kind());
                    crate::errors::chain(&e)
                });
                return Some(Pending { subject, ack });
            }
            Confirm::No => None,
            Confirm::Unknown(why) => Some(why),
        };
        // A core publish; when whether a stream stores it is unknown, it is
        // still sent (its Nats-Msg-Id keeps a stream that does single) and
        // the input is not settled as if it were confirmed.
        let result = match headers {
            None => self.client.publish(o.subject, o.payload).await,
            Some(h) => {
                self.client
                    .publish_with_headers(o.subject, h, o.payload)
                    .await
            }
        };
        if let Err(e) = result {
            self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(plugin = self.plugin.as_str(), %subject, error = %e, "publish failed");
        }
        unknown.map(|why| Pending {
            subject,
            ack: Err(why),
        })
    }

    /// Wait for `acks` (all in flight already); the first failure, counted.
    async fn confirmed(&self, acks: Vec<Pending>) -> Option<String> {
        let results = futures::future::join_all(acks.into_iter().map(|p| async move {
            let acked = match p.ack {
                Ok(fut) => fut.await.map(drop).map_err(|e| {
                    self.stale_if_no_stream(&p.subject, e.kind());
                    crate::errors::chain(&e)
                }),
                Err(why) => Err(why),
            };
            acked.map_err(|why| format!("output to {} not confirmed: {why}", p.subject))
        }))
        .await;
        let mut failure = None;
        for why in results.into_iter().filter_map(Result::err) {
            self.counters
                .publish_unconfirmed
                .fetch_add(1, Ordering::Relaxed);
            failure.get_or_insert(why);
        }
        if let Some(why) = &failure {
            // A stream that is down fails every input's outputs: one line
            // per period (counted) instead of one per input.
            let due = self
                .unconfirmed_warnings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .hit();
            if let Some(inputs) = due {
                tracing::warn!(plugin = self.plugin.as_str(), reason = %why, inputs, "inputs not settled as handled: an output was not confirmed (inputs: how many since the last such line)");
            }
        }
        failure
    }

    /// The stream went away since we asked: ask again next time.
    fn stale_if_no_stream(&self, subject: &str, kind: PublishErrorKind) {
        if kind == PublishErrorKind::StreamNotFound {
            self.streams.forget(subject);
        }
    }

    /// Send a reply or settle a message; `failure` when an output of its
    /// input was not confirmed.
    async fn finish(&self, item: Send, failure: Option<String>) {
        if let Send::Reply { to, .. } | Send::Error { to, .. } = &item
            && !crate::grants::may_reply(to.as_str())
        {
            // The sender chose this reply subject; the gateway's
            // credentials must not carry a reply into the server's API.
            self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(plugin = self.plugin.as_str(), reply_to = %to, "reply not sent: a reply subject in a $ namespace is refused");
            return;
        }
        let result = match (item, failure) {
            (Send::Reply { to, payload, trace }, None) => match trace {
                None => self.client.publish(to, payload.into()).await,
                Some(t) => {
                    self.client
                        .publish_with_headers(to, t.headers(), payload.into())
                        .await
                }
            },
            (Send::Reply { to, trace, .. }, Some(reason)) => {
                self.error_reply(to, "unavailable", reason, trace).await
            }
            (
                Send::Error {
                    to,
                    kind,
                    reason,
                    trace,
                },
                _,
            ) => self.error_reply(to, kind, reason, trace).await,
            (Send::Settle { msg, settle }, failure) => {
                let settle = match (settle, &self.binding, failure) {
                    (Settle::Ack, Some(b), Some(why)) => Settle::failed(b, msg.delivered(), &why),
                    (settle, _, _) => settle,
                };
                self.settle(*msg, settle).await;
                return;
            }
            (Send::Publish(..), _) => unreachable!("publishes are sent by `publish`"),
        };
        if let Err(e) = result {
            self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(plugin = self.plugin.as_str(), error = %e, "reply failed");
        }
    }

    async fn error_reply(
        &self,
        to: String,
        kind: &'static str,
        reason: String,
        trace: Option<Box<Carried>>,
    ) -> Result<(), async_nats::PublishError> {
        let mut headers = trace.map(|t| t.headers()).unwrap_or_default();
        headers.insert(ERROR_HEADER, kind);
        self.client
            .publish_with_headers(to, headers, reason.into())
            .await
    }

    async fn settle(&self, msg: JsMessage, settle: Settle) {
        let Some(binding) = &self.binding else {
            return;
        };
        let stored_ms = msg.meta.map(|m| m.published_ms);
        let result = crate::jetstream::settle::execute(
            &self.streams,
            &self.js,
            binding,
            msg,
            settle,
            &self.counters,
        )
        .await;
        match result {
            Ok(()) => {
                if let (Some(t), Some(ms)) = (self.counters.times.as_deref(), stored_ms) {
                    t.settled(ms);
                }
            }
            Err(e) => {
                self.counters.publish_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(plugin = self.plugin.as_str(), error = %crate::errors::anyhow_chain(&e), "settling a JetStream message failed");
            }
        }
    }
}

/// Whether a publish is confirmed by a stream.
enum Confirm {
    Yes,
    No,
    /// The server could not say; the text says why.
    Unknown(String),
}

impl Dispatch {
    /// Queue a batch's output for the worker's [`Output`] task, waiting while
    /// it is [`DEPTH`] batches behind. `false` when the connection is retired
    /// (or the task is gone): stop.
    pub(super) async fn hand_off(&self, tx: &mpsc::Sender<Handed>, out: &mut Vec<Send>) -> bool {
        if out.is_empty() {
            return true;
        }
        let batch = std::mem::replace(out, Vec::with_capacity(out.capacity()));
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => false,
            sent = tx.send((self.plugin.publish_ack(), batch)) => sent.is_ok(),
        }
    }
}
