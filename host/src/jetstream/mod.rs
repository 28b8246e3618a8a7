//! JetStream bindings: declaring (or finding) a binding's stream and durable
//! pull consumer, pulling from it, and the ack rules.
//!
//! - `ok` → the outbox and reply are published, then the message is acked.
//! - `retry`, a trap or a deadline → nak with the binding's backoff delay for
//!   this delivery count; on the last allowed delivery (`max_deliver`) the
//!   message is dead-lettered and terminated instead.
//! - `reject` → dead-lettered and terminated at once.
//!
//! Dead-lettering publishes the original payload and headers to
//! `dead_letter` plus `Wasmgate-Original-Subject`, `Wasmgate-Stream`,
//! `Wasmgate-Stream-Sequence`, `Wasmgate-Delivery-Count` and `Wasmgate-Reason`.
//! Which way is asked of [`streams::Streams`] first: when a stream captures
//! that subject, as a JetStream publish whose PubAck is awaited at most
//! [`DEAD_LETTER_ACK_WAIT`]; when none does, as one core publish (a plain
//! subscriber gets it once, and nothing waits for an ack nobody sends). If
//! the stream does not acknowledge in time, or the server cannot say which
//! stream captures the subject, the message is nak'd, not terminated, so
//! nothing is lost (`dead_letter_failed` counts it).
//!
//! async-nats recreates nothing when the server loses a durable consumer
//! (nats.rs#1584): [`JsSource`] treats "consumer deleted", missed heartbeats
//! and failed pulls as a lost binding and re-declares (with `create`) or
//! re-attaches, with backoff, until it works.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy as JsDeliver, PullConsumer, pull};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, AckKind, Context};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{DeliverPolicy, JetStreamConfig, Storage};
use crate::runtime::bindings::wasmgate::plugin::delivery::JetstreamInfo;
use crate::status::{BindingState, StatusHub};

pub mod streams;

pub use streams::{Capture, Streams};

/// The longest a dead letter's PubAck is awaited. The binding settles its
/// messages in order, so this bounds how long one dead letter can hold the
/// settlement of the messages after it.
pub const DEAD_LETTER_ACK_WAIT: Duration = Duration::from_secs(2);

/// Headers added to a dead-lettered message.
pub const DL_SUBJECT: &str = "Wasmgate-Original-Subject";
pub const DL_STREAM: &str = "Wasmgate-Stream";
pub const DL_SEQUENCE: &str = "Wasmgate-Stream-Sequence";
pub const DL_DELIVERIES: &str = "Wasmgate-Delivery-Count";
pub const DL_REASON: &str = "Wasmgate-Reason";

/// A JetStream binding's settings.
#[derive(Debug, Clone)]
pub struct JsBinding {
    pub subject: String,
    pub config: JetStreamConfig,
}

impl JsBinding {
    /// Nak delay after delivery `n` (1-based): `backoff[n-1]`, the last entry repeating.
    pub fn nak_delay(&self, delivered: u64) -> Option<Duration> {
        let b = &self.config.backoff;
        if b.is_empty() {
            return None;
        }
        let i = (delivered.max(1) - 1).min(b.len() as u64 - 1) as usize;
        Some(b[i])
    }

    /// Whether delivery `n` is the last one the consumer allows.
    pub fn is_last_delivery(&self, delivered: u64) -> bool {
        self.config.max_deliver != 0 && delivered >= u64::from(self.config.max_deliver)
    }

    fn consumer_config(&self) -> pull::Config {
        let c = &self.config;
        pull::Config {
            durable_name: Some(c.consumer.clone()),
            filter_subject: self.subject.clone(),
            deliver_policy: match c.deliver_policy {
                DeliverPolicy::All => JsDeliver::All,
                DeliverPolicy::New => JsDeliver::New,
                DeliverPolicy::Last => JsDeliver::Last,
                DeliverPolicy::LastPerSubject => JsDeliver::LastPerSubject,
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: c.ack_wait,
            max_deliver: if c.max_deliver == 0 {
                -1
            } else {
                i64::from(c.max_deliver)
            },
            max_ack_pending: i64::from(c.max_ack_pending),
            // Not the consumer's `backoff`: the server would use it instead of
            // `ack_wait` as the deadline of every delivery. Our delays go in the naks.
            ..Default::default()
        }
    }

    fn stream_config(&self) -> stream::Config {
        let c = &self.config;
        stream::Config {
            name: c.stream.clone(),
            subjects: if c.stream_subjects.is_empty() {
                vec![self.subject.clone()]
            } else {
                c.stream_subjects.clone()
            },
            storage: match c.storage {
                Storage::File => StorageType::File,
                Storage::Memory => StorageType::Memory,
            },
            ..Default::default()
        }
    }
}

/// Declare (with `create`) or look up the stream and consumer.
pub async fn declare(js: &Context, b: &JsBinding) -> anyhow::Result<PullConsumer> {
    let c = &b.config;
    if c.create {
        js.create_or_update_stream(b.stream_config())
            .await
            .map_err(|e| anyhow::anyhow!("declaring stream {}: {e}", c.stream))?;
        let stream = js
            .get_stream(&c.stream)
            .await
            .map_err(|e| anyhow::anyhow!("stream {}: {e}", c.stream))?;
        match stream.create_consumer(b.consumer_config()).await {
            Ok(consumer) => Ok(consumer),
            // An existing consumer with other settings: update what the server allows.
            Err(create) => stream
                .update_consumer(b.consumer_config())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("declaring consumer {}: {create}; update: {e}", c.consumer)
                }),
        }
    } else {
        let stream = js
            .get_stream(&c.stream)
            .await
            .map_err(|e| anyhow::anyhow!("stream {} (create = false): {e}", c.stream))?;
        stream.get_consumer(&c.consumer).await.map_err(|e| {
            anyhow::anyhow!(
                "consumer {} on {} (create = false): {e}",
                c.consumer,
                c.stream
            )
        })
    }
}

/// Where a JetStream binding's messages come from; re-attaches itself.
pub struct JsSource {
    pub js: Context,
    /// Which streams capture what, for this connection's dead letters.
    pub streams: Arc<Streams>,
    pub binding: Arc<JsBinding>,
    messages: pull::Stream,
    status: StatusHub,
    index: usize,
}

impl JsSource {
    /// Declare the consumer and start pulling.
    pub async fn attach(
        js: Context,
        streams: Arc<Streams>,
        binding: Arc<JsBinding>,
        status: StatusHub,
        index: usize,
    ) -> anyhow::Result<JsSource> {
        let messages = pull_stream(&js, &binding).await?;
        Ok(JsSource {
            js,
            streams,
            binding,
            messages,
            status,
            index,
        })
    }

    /// The next message; on a lost consumer or a broken pull, re-attach
    /// (with backoff) and go on. `None` when `stop` fires first.
    pub async fn next(&mut self, stop: &CancellationToken) -> Option<jetstream::Message> {
        loop {
            let item = tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                item = self.messages.next() => item,
            };
            let error = match item {
                Some(Ok(msg)) => return Some(msg),
                Some(Err(e)) => e.to_string(),
                None => "pull stream ended".to_string(),
            };
            if !self.recover(&error, stop).await {
                return None;
            }
        }
    }

    /// A message only if one is ready now (to fill a batch).
    pub fn try_next(&mut self) -> Option<jetstream::Message> {
        use futures::FutureExt;
        match self.messages.next().now_or_never() {
            Some(Some(Ok(msg))) => Some(msg),
            _ => None,
        }
    }

    async fn recover(&mut self, error: &str, stop: &CancellationToken) -> bool {
        let c = &self.binding.config;
        tracing::warn!(stream = %c.stream, consumer = %c.consumer, %error, "JetStream binding lost; re-attaching");
        self.status.set_binding(
            self.index,
            BindingState::Rebinding,
            Some(format!("{error}; re-attaching consumer {}", c.consumer)),
        );
        let backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            factor: 2.0,
            jitter: 0.2,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = tokio::select! {
                biased;
                _ = stop.cancelled() => return false,
                r = pull_stream(&self.js, &self.binding) => r,
            };
            match result {
                Ok(messages) => {
                    self.messages = messages;
                    let note = if c.create {
                        format!("re-declared consumer {} after: {error}", c.consumer)
                    } else {
                        format!("re-attached to consumer {} after: {error}", c.consumer)
                    };
                    tracing::info!(stream = %c.stream, consumer = %c.consumer, attempt, "JetStream binding restored");
                    self.status
                        .set_binding(self.index, BindingState::Bound, Some(note));
                    return true;
                }
                Err(e) => {
                    self.status.set_binding(
                        self.index,
                        BindingState::Rebinding,
                        Some(format!(
                            "{error}; re-attach attempt {attempt} failed: {}",
                            crate::errors::anyhow_chain(&e)
                        )),
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return false,
                        _ = tokio::time::sleep(backoff.delay(attempt)) => {}
                    }
                }
            }
        }
    }
}

async fn pull_stream(js: &Context, b: &JsBinding) -> anyhow::Result<pull::Stream> {
    let consumer = declare(js, b).await?;
    let c = &b.config;
    let batch = c.pull_batch.min(c.max_ack_pending as usize).max(1);
    consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(c.heartbeat)
        .expires(c.heartbeat * 6)
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("pulling from consumer {}: {e}", c.consumer))
}

/// The metadata a handler sees through `delivery.jetstream`.
pub fn delivery_info(msg: &jetstream::Message) -> Option<JetstreamInfo> {
    let info = msg.info().ok()?;
    Some(JetstreamInfo {
        stream: info.stream.to_string(),
        consumer: info.consumer.to_string(),
        stream_sequence: info.stream_sequence,
        consumer_sequence: info.consumer_sequence,
        delivered: info.delivered.max(0) as u64,
        pending: info.pending,
        published_ms: unix_ms(info.published.unix_timestamp_nanos()),
    })
}

/// A server timestamp (nanoseconds since the Unix epoch) in milliseconds,
/// 0 before the epoch.
pub fn unix_ms(nanos: i128) -> u64 {
    (nanos / 1_000_000).max(0) as u64
}

/// What to do with a JetStream message once its handler is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    Ack,
    Nak(Option<Duration>),
    /// Dead-letter (when configured) with this reason, then terminate.
    DeadLetter(String),
}

/// Dead-letter `msg` (if the binding has a dead-letter subject) and terminate
/// it; nak instead if the dead-letter publish fails.
pub async fn dead_letter(
    streams: &Streams,
    js: &Context,
    b: &JsBinding,
    msg: &jetstream::Message,
    reason: &str,
) -> anyhow::Result<()> {
    if let Some(subject) = &b.config.dead_letter {
        let mut headers = dead_letter_headers(msg.headers.as_ref());
        headers.insert(DL_SUBJECT, msg.subject.as_str());
        if let Ok(info) = msg.info() {
            headers.insert(DL_STREAM, info.stream);
            headers.insert(DL_SEQUENCE, info.stream_sequence.to_string().as_str());
            headers.insert(DL_DELIVERIES, info.delivered.to_string().as_str());
        }
        headers.insert(DL_REASON, reason.replace(['\r', '\n'], " ").as_str());
        publish_dead_letter(streams, js, subject, headers, msg.payload.clone()).await?;
    }
    msg.ack_with(AckKind::Term)
        .await
        .map_err(|e| anyhow::anyhow!("term: {e}"))
}

/// The original headers a dead letter carries: all but the `Nats-*` ones
/// that would make the server act on the republish (`Nats-Expected-*` fails
/// it for ever, `Nats-Rollup` purges the dead-letter stream), except
/// `Nats-Msg-Id`, which keeps a twice dead-lettered message single there.
fn dead_letter_headers(original: Option<&HeaderMap>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, values) in original.into_iter().flat_map(|h| h.iter()) {
        let name: &str = name.as_ref();
        let nats = name
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("nats-"));
        if nats && !name.eq_ignore_ascii_case("Nats-Msg-Id") {
            continue;
        }
        for value in values {
            headers.append(name, value.as_str());
        }
    }
    headers
}

async fn publish_dead_letter(
    streams: &Streams,
    js: &Context,
    subject: &str,
    headers: HeaderMap,
    payload: bytes::Bytes,
) -> anyhow::Result<()> {
    match streams.capturing(subject).await? {
        Capture::None => js
            .client()
            .publish_with_headers(subject.to_string(), headers, payload)
            .await
            .map_err(|e| anyhow::anyhow!("dead-letter publish to {subject}: {e}")),
        Capture::Stream(stream) => {
            let acked = tokio::time::timeout(DEAD_LETTER_ACK_WAIT, async {
                js.publish_with_headers(subject.to_string(), headers, payload)
                    .await?
                    .await
            })
            .await;
            match acked {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => {
                    if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
                        // The stream went away since we asked: ask again next time.
                        streams.forget(subject);
                    }
                    Err(anyhow::anyhow!(
                        "dead-letter publish to {subject} (stream {stream}) failed: {}",
                        crate::errors::chain(&e)
                    ))
                }
                Err(_) => Err(anyhow::anyhow!(
                    "dead-letter publish to {subject}: stream {stream} did not acknowledge \
                     within {DEAD_LETTER_ACK_WAIT:?}"
                )),
            }
        }
    }
}
