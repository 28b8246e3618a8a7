//! JetStream, owned in one place: declaring (or finding) a binding's stream
//! and durable pull consumer and pulling from it (`source`, [`JsSource`]), each
//! message's delivery metadata, read once when it arrives ([`meta`]), what
//! a handler's result means for the message and carrying it out
//! ([`settle`]: ack, nak with delay, dead letter then term), and which
//! stream captures a subject ([`streams`]).
//!
//! async-nats recreates nothing when the server loses a durable consumer
//! (nats.rs#1584): [`JsSource`] treats "consumer deleted", missed heartbeats
//! and failed pulls as a lost binding and re-declares (with `create`) or
//! re-attaches, with backoff, until it works.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{
    self, AckPolicy, DeliverPolicy as JsDeliver, PullConsumer, pull,
};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, Context};

use crate::config::{DeliverPolicy, JetStreamConfig, Storage};

pub mod meta;
pub mod settle;
mod source;
pub mod streams;

pub use meta::{JsMessage, Meta};
pub use settle::Settle;
pub use source::JsSource;
pub use streams::{Capture, Streams};

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

    /// Whether an existing consumer's config differs from the binding in a
    /// field the binding owns.
    fn owns_differently(&self, existing: &consumer::Config) -> bool {
        let mut owned = existing.clone();
        self.apply_owned(&mut owned);
        owned.ack_wait != existing.ack_wait
            || owned.max_deliver != existing.max_deliver
            || owned.max_ack_pending != existing.max_ack_pending
    }

    /// Set the fields the binding owns (those the server lets a consumer
    /// change) in `config`, leaving the rest as they are.
    fn apply_owned(&self, config: &mut consumer::Config) {
        let want = self.consumer_config();
        config.ack_wait = want.ack_wait;
        config.max_deliver = want.max_deliver;
        config.max_ack_pending = want.max_ack_pending;
    }

    fn stream_config(&self) -> stream::Config {
        let c = &self.config;
        stream::Config {
            num_replicas: c.replicas,
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
    declare_noting(js, b).await.map(|(consumer, _)| consumer)
}

/// [`declare`], and what an operator should know about the stream found
/// (it is logged too).
///
/// With `create`, only what is missing is made. An existing stream is
/// another's to manage (replicas, storage, retention, limits: an operator's
/// R3 stream must not become R1 because the gateway has its own idea of
/// it), so it is left as it is and only checked to capture the binding's
/// subject. An existing consumer is updated in the fields the binding owns.
pub async fn declare_noting(
    js: &Context,
    b: &JsBinding,
) -> anyhow::Result<(PullConsumer, Option<String>)> {
    let c = &b.config;
    if c.create {
        let mut warning = None;
        let mut stream = match js.get_stream(&c.stream).await {
            Ok(stream) => stream,
            Err(e)
                if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                js.create_stream(b.stream_config())
                    .await
                    .with_context(|| format!("creating stream {}", c.stream))?
            }
            Err(e) => return Err(stream_error(e, b, "")),
        };
        let info = stream
            .info()
            .await
            .with_context(|| format!("stream {}", c.stream))?;
        let subjects = &info.config.subjects;
        if !subjects
            .iter()
            .any(|s| crate::subject::covers(s, &b.subject))
        {
            let note = format!(
                "stream {} does not capture {} (its subjects: {}); it was left as it is",
                c.stream,
                b.subject,
                subjects.join(", ")
            );
            tracing::warn!(stream = %c.stream, subject = %b.subject, "{note}");
            warning = Some(note);
        }
        let consumer = match stream.get_consumer::<pull::Config>(&c.consumer).await {
            Ok(existing) => {
                let mut config = existing.cached_info().config.clone();
                if b.owns_differently(&config) {
                    b.apply_owned(&mut config);
                    let config =
                        <pull::Config as consumer::FromConsumer>::try_from_consumer_config(config)
                            .map_err(anyhow::Error::from_boxed)
                            .with_context(|| format!("consumer {}", c.consumer))?;
                    stream
                        .update_consumer(config)
                        .await
                        .with_context(|| format!("updating consumer {}", c.consumer))?
                } else {
                    existing
                }
            }
            Err(_) => stream
                .create_consumer(b.consumer_config())
                .await
                .with_context(|| {
                    // Most likely because of the mismatch: say so first.
                    let why = warning
                        .as_deref()
                        .map(|w| format!("{w}: "))
                        .unwrap_or_default();
                    format!("{why}creating consumer {}", c.consumer)
                })?,
        };
        Ok((consumer, warning))
    } else {
        let stream = js
            .get_stream(&c.stream)
            .await
            .map_err(|e| stream_error(e, b, " (create = false)"))?;
        let consumer = stream
            .get_consumer(&c.consumer)
            .await
            .map_err(anyhow::Error::from_boxed)
            .with_context(|| format!("consumer {} on {} (create = false)", c.consumer, c.stream))?;
        Ok((consumer, None))
    }
}

/// The first JetStream request of a binding failed. When nothing answered
/// it (a server started without JetStream) or the server said JetStream is
/// not enabled (for the account), say that, not what async-nats says of a
/// request nobody answers ("requested JetStream resource does not exist").
fn stream_error(e: jetstream::context::GetStreamError, b: &JsBinding, note: &str) -> anyhow::Error {
    use jetstream::context::GetStreamErrorKind as Kind;
    use std::error::Error as _;
    let not_enabled = match e.kind() {
        Kind::Request => e
            .source()
            .and_then(|s| s.downcast_ref::<jetstream::context::RequestError>())
            .is_some_and(|r| r.kind() == jetstream::context::RequestErrorKind::NoResponders),
        // A server with JetStream answers for an account without it.
        Kind::JetStream(j) => matches!(
            j.error_code(),
            jetstream::ErrorCode::JETSTREAM_NOT_ENABLED
                | jetstream::ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT
        ),
        _ => false,
    };
    if not_enabled {
        anyhow::anyhow!(
            "JetStream is not enabled for the gateway's account on this server (nothing answers $JS.API requests): enable it (nats-server -js, or the account's jetstream limits), or bind {} without a [jetstream] table",
            b.subject
        )
    } else {
        anyhow::Error::new(e).context(format!("stream {}{note}", b.config.stream))
    }
}
