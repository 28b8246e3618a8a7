//! JetStream, owned in one place: declaring (or finding) a binding's stream
//! and durable pull consumer and pulling from it ([`source`]), each
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

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy as JsDeliver, PullConsumer, pull};
use async_nats::jetstream::stream::{self, StorageType};

use crate::config::{DeliverPolicy, JetStreamConfig, Storage};

pub mod meta;
pub mod settle;
mod source;
pub mod streams;

pub use meta::{JsMessage, Meta};
pub use settle::{DEAD_LETTER_ACK_WAIT, Settle};
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
