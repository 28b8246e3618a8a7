//! What a handler's result means for a JetStream message, and carrying it
//! out — the ack rules in one place:
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
//! Which way is asked of [`Streams`] first: when a stream captures
//! that subject, as a JetStream publish whose PubAck is awaited at most
//! [`DEAD_LETTER_ACK_WAIT`]; when none does, as one core publish (a plain
//! subscriber gets it once, and nothing waits for an ack nobody sends). If
//! the stream does not acknowledge in time, or the server cannot say which
//! stream captures the subject, the message is nak'd, not terminated, so
//! nothing is lost (`dead_letter_failed` counts it).

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, Context};

use super::{Capture, JsBinding, JsMessage, Streams};
use crate::status::BindingCounters;

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

/// What to do with a JetStream message once its handler is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    Ack,
    Nak(Option<Duration>),
    /// Dead-letter (when configured) with this reason, then terminate.
    DeadLetter(String),
}

impl Settle {
    /// A failed delivery `delivered` (retry, trap, deadline): nak with the
    /// backoff, or on the last allowed delivery dead-letter.
    pub fn failed(binding: &JsBinding, delivered: u64, reason: &str) -> Settle {
        if binding.is_last_delivery(delivered) {
            Settle::DeadLetter(format!("max deliveries ({delivered}) reached: {reason}"))
        } else {
            Settle::Nak(binding.nak_delay(delivered))
        }
    }

    /// A rejected message: dead-lettered at once.
    pub fn rejected(reason: &str) -> Settle {
        Settle::DeadLetter(format!("rejected: {reason}"))
    }
}

/// async-nats's boxed error, its source kept, in the context of `what`.
fn boxed(what: &'static str) -> impl FnOnce(async_nats::Error) -> anyhow::Error {
    move |e| anyhow::Error::from_boxed(e).context(what)
}

/// Carry out `settle` for `msg`, counting dead letters and failures in
/// `counters`. An error is a settlement the server did not take (the
/// message comes back after `ack_wait`).
pub async fn execute(
    streams: &Streams,
    js: &Context,
    binding: &JsBinding,
    msg: JsMessage,
    settle: Settle,
    counters: &BindingCounters,
) -> anyhow::Result<()> {
    match settle {
        Settle::Ack => msg.ack().await.map_err(boxed("ack")),
        Settle::Nak(delay) => msg
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(boxed("nak")),
        Settle::DeadLetter(reason) => {
            match dead_letter(streams, js, binding, &msg, &reason).await {
                Ok(()) => {
                    counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => {
                    // Keep the message: it comes back after the delay.
                    counters.dead_letter_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %crate::errors::anyhow_chain(&e), "dead-lettering failed; nak instead");
                    msg.ack_with(AckKind::Nak(binding.nak_delay(msg.delivered())))
                        .await
                        .map_err(boxed("nak"))
                }
            }
        }
    }
}

/// Dead-letter `msg` (if the binding has a dead-letter subject) and terminate
/// it; nak instead if the dead-letter publish fails.
async fn dead_letter(
    streams: &Streams,
    js: &Context,
    b: &JsBinding,
    msg: &JsMessage,
    reason: &str,
) -> anyhow::Result<()> {
    if let Some(subject) = &b.config.dead_letter {
        let mut headers = dead_letter_headers(msg.headers.as_ref());
        headers.insert(DL_SUBJECT, msg.subject.as_str());
        if let Some(meta) = msg.meta {
            headers.insert(DL_STREAM, b.config.stream.as_str());
            headers.insert(DL_SEQUENCE, meta.stream_sequence.to_string().as_str());
            headers.insert(DL_DELIVERIES, meta.delivered.to_string().as_str());
        }
        headers.insert(DL_REASON, reason.replace(['\r', '\n'], " ").as_str());
        publish_dead_letter(streams, js, subject, headers, msg.payload.clone()).await?;
    }
    msg.ack_with(AckKind::Term).await.map_err(boxed("term"))
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
    match streams.capturing_subject(subject).await? {
        Capture::None => js
            .client()
            .publish_with_headers(subject.to_string(), headers, payload)
            .await
            .with_context(|| format!("dead-letter publish to {subject}")),
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
