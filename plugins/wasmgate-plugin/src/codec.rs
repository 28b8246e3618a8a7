//! The byte encoding of `wasmgate:plugin/batch-handler`, the guest's side
//! (the layout is specified in `wit/batch-handler.wit`; the host's side is
//! `host/src/plugin/batch.rs`).

use crate::{Header, JetstreamInfo, Message};

const NONE: u32 = u32::MAX;
pub(crate) const OK: u8 = 0;
pub(crate) const RETRY: u8 = 1;
pub(crate) const REJECT: u8 = 2;

pub(crate) fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_headers(out: &mut Vec<u8>, headers: &[Header<'_>]) {
    put_u32(out, headers.len() as u32);
    for (k, v) in headers {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

pub(crate) fn put_publish(
    out: &mut Vec<u8>,
    subject: &str,
    headers: &[Header<'_>],
    payload: &[u8],
) {
    put_bytes(out, subject.as_bytes());
    put_headers(out, headers);
    put_bytes(out, payload);
}

/// Start an `ok` result whose publishes follow; its count is filled in
/// by [`end_ok`].
pub(crate) fn begin_ok(out: &mut Vec<u8>) {
    out.push(OK);
    put_u32(out, 0);
}

/// Finish the `ok` result begun at `start`: its publish count, its reply.
pub(crate) fn end_ok(out: &mut Vec<u8>, start: usize, publishes: u32, reply: Option<&[u8]>) {
    out[start + 1..start + 5].copy_from_slice(&publishes.to_le_bytes());
    match reply {
        None => put_u32(out, NONE),
        Some(r) => put_bytes(out, r),
    }
}

pub(crate) fn put_error(out: &mut Vec<u8>, tag: u8, reason: &str) {
    out.push(tag);
    put_bytes(out, reason.as_bytes());
}

/// Reads the host's encoding; malformed input panics (a host bug).
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Reader<'a> {
        Reader(b)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn u32(&mut self) -> u32 {
        let (n, rest) = self.0.split_at(4);
        self.0 = rest;
        u32::from_le_bytes(n.try_into().expect("4 bytes"))
    }

    fn bytes(&mut self) -> &'a [u8] {
        let n = self.u32() as usize;
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }

    fn str(&mut self) -> &'a str {
        std::str::from_utf8(self.bytes()).expect("the host sends UTF-8")
    }

    fn u64(&mut self) -> u64 {
        let (n, rest) = self.0.split_at(8);
        self.0 = rest;
        u64::from_le_bytes(n.try_into().expect("8 bytes"))
    }

    /// Whether the next `opt` is none; it is consumed if so.
    fn none(&mut self) -> bool {
        let none = self.0[..4] == NONE.to_le_bytes();
        if none {
            self.0 = &self.0[4..];
        }
        none
    }

    /// Decode the next message. It borrows the batch; its headers are
    /// collected into `headers` (cleared first), whose buffer the messages
    /// of a batch share: decoding a message copies and allocates nothing.
    pub(crate) fn message<'h>(&mut self, headers: &'h mut Vec<Header<'a>>) -> Message<'h> {
        let subject = self.str();
        let reply_to = if self.none() { None } else { Some(self.str()) };
        let n = self.u32() as usize;
        headers.clear();
        for _ in 0..n {
            headers.push((self.str(), self.str()));
        }
        let payload = self.bytes();
        Message {
            subject,
            payload,
            headers,
            reply_to,
        }
    }

    /// Decode the JetStream metadata that ends a message (0.1.4) into
    /// `info`, reusing its strings.
    pub(crate) fn jetstream_into(&mut self, info: &mut Option<JetstreamInfo>) {
        if self.none() {
            *info = None;
            return;
        }
        let (stream, consumer) = (self.str(), self.str());
        let i = info.get_or_insert_with(|| JetstreamInfo {
            stream: String::new(),
            consumer: String::new(),
            stream_sequence: 0,
            consumer_sequence: 0,
            delivered: 0,
            pending: 0,
            published_ms: 0,
        });
        set(&mut i.stream, stream);
        set(&mut i.consumer, consumer);
        i.stream_sequence = self.u64();
        i.consumer_sequence = self.u64();
        i.delivered = self.u64();
        i.pending = self.u64();
        i.published_ms = self.u64();
    }
}

fn set(s: &mut String, value: &str) {
    s.clear();
    s.push_str(value);
}
