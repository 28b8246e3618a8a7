//! A JetStream message's delivery metadata (sequences, delivery count,
//! pending, publish time), read once from its ack subject when the message
//! arrives, and the forms the rest of the gateway needs: the delivery count
//! for settling, the `delivery.jetstream` record a handler reads, and the
//! fields the batch encoding carries.

use async_nats::jetstream;

use crate::runtime::bindings::wasmgate::plugin::delivery::JetstreamInfo;

/// What the ack subject of one delivery says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub stream_sequence: u64,
    pub consumer_sequence: u64,
    /// This delivery's number, 1 for the first.
    pub delivered: u64,
    /// Messages left for the consumer after this one.
    pub pending: u64,
    /// When the stream stored the message, in ms since the Unix epoch.
    pub published_ms: u64,
}

impl Meta {
    /// Parse `msg`'s ack subject; `None` when it is not one.
    pub fn of(msg: &jetstream::Message) -> Option<Meta> {
        let info = msg.info().ok()?;
        Some(Meta {
            stream_sequence: info.stream_sequence,
            consumer_sequence: info.consumer_sequence,
            delivered: info.delivered.max(0) as u64,
            pending: info.pending,
            published_ms: unix_ms(info.published.unix_timestamp_nanos()),
        })
    }

    /// The record a handler reads through `delivery.jetstream`; the names
    /// are the binding's (the ack subject carries the same).
    pub fn to_wit(self, stream: &str, consumer: &str) -> JetstreamInfo {
        JetstreamInfo {
            stream: stream.to_string(),
            consumer: consumer.to_string(),
            stream_sequence: self.stream_sequence,
            consumer_sequence: self.consumer_sequence,
            delivered: self.delivered,
            pending: self.pending,
            published_ms: self.published_ms,
        }
    }
}

/// A JetStream message with its metadata, read once.
#[derive(Debug)]
pub struct JsMessage {
    pub msg: jetstream::Message,
    pub meta: Option<Meta>,
}

impl JsMessage {
    pub fn new(msg: jetstream::Message) -> JsMessage {
        let meta = Meta::of(&msg);
        JsMessage { msg, meta }
    }

    /// This delivery's number; 1 when the ack subject could not be read.
    pub fn delivered(&self) -> u64 {
        self.meta.map_or(1, |m| m.delivered)
    }
}

impl std::ops::Deref for JsMessage {
    type Target = jetstream::Message;

    fn deref(&self) -> &jetstream::Message {
        &self.msg
    }
}

/// A server timestamp (nanoseconds since the Unix epoch) in milliseconds,
/// 0 before the epoch.
pub fn unix_ms(nanos: i128) -> u64 {
    (nanos / 1_000_000).max(0) as u64
}
