//! The byte encoding of `wasmgate:plugin/batch-handler` (specified in
//! `wit/batch-handler.wit`): [`Batch`] writes the messages of a batch into one
//! reusable buffer, straight from the NATS messages; [`decode`] reads the
//! guest's results without copying payloads (they are slices of the one
//! buffer the call returned). The Rust SDK holds the guest's side.

use bytes::{Buf, Bytes};

use super::Outcome;
use crate::jetstream::Meta;
use crate::runtime::Outgoing;
use crate::runtime::bindings::Message;

const NONE: u32 = u32::MAX;
const OK: u8 = 0;
const RETRY: u8 = 1;
const REJECT: u8 = 2;

/// Messages encoded for one `handle-batch` call.
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    /// Per message: whether it has a reply-to (a reply is sent only then).
    asks_reply: Vec<bool>,
    /// Each message ends with its JetStream metadata (the 0.1.4 encoding);
    /// not for plugins built against 0.1.2 or 0.1.3.
    jetstream: bool,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::new()
    }
}

impl Batch {
    /// A batch in the current encoding (0.1.4 on), for plugins built
    /// against this WIT; [`Plugin::new_batch`](super::Plugin::new_batch)
    /// picks the encoding a loaded plugin reads.
    pub fn new() -> Batch {
        Batch::with_encoding(true)
    }

    /// A batch in the encoding of 0.1.2 and 0.1.3: no JetStream metadata.
    pub(crate) fn without_jetstream() -> Batch {
        Batch::with_encoding(false)
    }

    fn with_encoding(jetstream: bool) -> Batch {
        // Grown by the first batches and kept: reserved up front (64 KiB)
        // it cost every binding that much before its first message, 625 MiB
        // of reservations at 10,000 bindings.
        let mut buf = Vec::new();
        buf.extend_from_slice(&0u32.to_le_bytes());
        Batch {
            buf,
            asks_reply: Vec::new(),
            jetstream,
        }
    }

    /// Whether its messages carry their JetStream metadata.
    pub fn carries_jetstream(&self) -> bool {
        self.jetstream
    }

    /// Empty it, keeping its buffers.
    pub fn clear(&mut self) {
        self.buf.truncate(4);
        self.asks_reply.clear();
    }

    pub fn len(&self) -> usize {
        self.asks_reply.len()
    }

    pub fn is_empty(&self) -> bool {
        self.asks_reply.is_empty()
    }

    pub(crate) fn asks_reply(&self, i: usize) -> bool {
        self.asks_reply[i]
    }

    /// Add one core NATS message.
    pub fn push<'a>(
        &mut self,
        subject: &str,
        reply_to: Option<&str>,
        headers: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
        payload: &[u8],
    ) {
        self.push_message(subject, reply_to, headers, payload);
        if self.jetstream {
            self.u32(NONE);
        }
    }

    fn push_message<'a>(
        &mut self,
        subject: &str,
        reply_to: Option<&str>,
        headers: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
        payload: &[u8],
    ) {
        self.str(subject);
        match reply_to {
            Some(r) => self.str(r),
            None => self.u32(NONE),
        }
        self.u32(headers.len() as u32);
        for (name, value) in headers {
            self.str(name);
            self.str(value);
        }
        self.bytes(payload);
        self.asks_reply.push(reply_to.is_some());
    }

    /// Add a core NATS message.
    pub fn push_nats(&mut self, msg: &async_nats::Message) {
        self.push_nats_as(msg, msg.reply.as_deref());
        if self.jetstream {
            self.u32(NONE);
        }
    }

    /// Add a JetStream message with its metadata (`info`, parsed from its
    /// ack subject; written only in the 0.1.4 encoding). Its reply subject
    /// is its ack subject, not a requester: the guest sees none, as with
    /// `handle`.
    pub(crate) fn push_jetstream(
        &mut self,
        msg: &async_nats::Message,
        meta: Option<&Meta>,
        stream: &str,
        consumer: &str,
    ) {
        self.push_nats_as(msg, None);
        if !self.jetstream {
            return;
        }
        match meta {
            None => self.u32(NONE),
            Some(m) => {
                self.str(stream);
                self.str(consumer);
                self.u64(m.stream_sequence);
                self.u64(m.consumer_sequence);
                self.u64(m.delivered);
                self.u64(m.pending);
                self.u64(m.published_ms);
            }
        }
    }

    fn push_nats_as(&mut self, msg: &async_nats::Message, reply_to: Option<&str>) {
        let headers: Vec<(&str, &str)> = match &msg.headers {
            None => Vec::new(),
            Some(h) => h
                .iter()
                .flat_map(|(name, values)| {
                    let name: &str = name.as_ref();
                    values.iter().map(move |v| (name, v.as_str()))
                })
                .collect(),
        };
        self.push_message(&msg.subject, reply_to, headers.into_iter(), &msg.payload);
    }

    /// Add a message in its WIT form.
    pub fn push_wit(&mut self, msg: &Message) {
        self.push(
            &msg.subject,
            msg.reply_to.as_deref(),
            msg.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &msg.payload,
        );
    }

    /// The encoded batch (its count written in).
    pub(crate) fn encoded(&mut self) -> &[u8] {
        let n = self.asks_reply.len() as u32;
        self.buf[..4].copy_from_slice(&n.to_le_bytes());
        &self.buf
    }

    fn u32(&mut self, n: u32) {
        self.buf.extend_from_slice(&n.to_le_bytes());
    }

    fn u64(&mut self, n: u64) {
        self.buf.extend_from_slice(&n.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.buf.extend_from_slice(b);
    }
}

/// The results of one `handle-batch` call. Kept by the caller between
/// calls, so that its two buffers are reused: decoding a batch allocates
/// nothing per message (payloads and subjects are slices of the one buffer
/// the call returned).
#[derive(Debug, Default)]
pub struct BatchResults {
    /// One per message, in order.
    pub results: Vec<BatchResult>,
    /// Every message's publishes, one after another, in order.
    pub publishes: Vec<Outgoing>,
}

/// One message's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResult {
    pub outcome: Outcome,
    /// How many of [`BatchResults::publishes`] are this message's, from
    /// where the message before left off. They are sent only on `Ok`.
    pub publishes: usize,
}

impl BatchResults {
    /// Empty both lists, keeping their buffers.
    pub fn clear(&mut self) {
        self.results.clear();
        self.publishes.clear();
    }
}

/// Read the results of a batch of `expected` messages into `into` (cleared
/// first), unchecked: publishes are checked by the caller as the
/// `publisher` import would check them.
pub(crate) fn decode(out: Bytes, expected: usize, into: &mut BatchResults) -> Result<(), String> {
    into.clear();
    let mut r = Reader(out);
    let count = r.u32()? as usize;
    if count != expected {
        return Err(format!("{count} results for {expected} messages"));
    }
    for i in 0..count {
        let result = match r.u8()? {
            OK => {
                let n = r.u32()? as usize;
                for _ in 0..n {
                    let subject = async_nats::Subject::from_utf8(r.bytes()?)
                        .map_err(|e| format!("a publish subject is not UTF-8: {e}"))?;
                    let headers = r.headers()?;
                    let payload = r.bytes()?;
                    into.publishes.push(Outgoing {
                        subject,
                        payload,
                        headers,
                    });
                }
                let reply = r.opt_bytes()?;
                BatchResult {
                    outcome: Outcome::Ok(reply.map(|r| r.to_vec())),
                    publishes: n,
                }
            }
            RETRY => BatchResult {
                outcome: Outcome::Retry(r.string()?),
                publishes: 0,
            },
            REJECT => BatchResult {
                outcome: Outcome::Reject(r.string()?),
                publishes: 0,
            },
            tag => return Err(format!("result {i}: unknown tag {tag}")),
        };
        into.results.push(result);
    }
    if r.0.has_remaining() {
        return Err(format!("{} bytes after the last result", r.0.remaining()));
    }
    Ok(())
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), String> {
        if self.0.remaining() < n {
            return Err(format!(
                "truncated: {n} bytes needed, {} left",
                self.0.remaining()
            ));
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, String> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.0.split_to(n))
    }

    fn opt_bytes(&mut self) -> Result<Option<Bytes>, String> {
        self.need(4)?;
        if self.0[..4] == NONE.to_le_bytes() {
            self.0.advance(4);
            return Ok(None);
        }
        self.bytes().map(Some)
    }

    fn string(&mut self) -> Result<String, String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|e| format!("a string is not UTF-8: {e}"))
    }

    fn headers(&mut self) -> Result<Vec<(String, String)>, String> {
        let n = self.u32()? as usize;
        let mut headers = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            headers.push((self.string()?, self.string()?));
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The results encoding, written the way the SDK writes it.
    /// A publish: subject, headers, payload.
    type Publish<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [u8]);

    fn ok(out: &mut Vec<u8>, reply: Option<&[u8]>, publishes: &[Publish]) {
        out.push(OK);
        out.extend_from_slice(&(publishes.len() as u32).to_le_bytes());
        for (subject, headers, payload) in publishes {
            put(out, subject.as_bytes());
            out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
            for (k, v) in *headers {
                put(out, k.as_bytes());
                put(out, v.as_bytes());
            }
            put(out, payload);
        }
        match reply {
            None => out.extend_from_slice(&NONE.to_le_bytes()),
            Some(r) => put(out, r),
        }
    }

    fn put(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }

    #[test]
    fn encodes_messages_in_the_documented_layout() {
        // 0.1.4 ends each message with its JetStream metadata (none here);
        // 0.1.2 and 0.1.3 do not.
        for jetstream in [true, false] {
            let mut b = Batch::with_encoding(jetstream);
            b.push("in.a", Some("r.1"), [("k", "v")].into_iter(), b"hi");
            b.push("in.b", None, std::iter::empty(), b"");
            let mut want = Vec::new();
            want.extend_from_slice(&2u32.to_le_bytes());
            put(&mut want, b"in.a");
            put(&mut want, b"r.1");
            want.extend_from_slice(&1u32.to_le_bytes());
            put(&mut want, b"k");
            put(&mut want, b"v");
            put(&mut want, b"hi");
            if jetstream {
                want.extend_from_slice(&NONE.to_le_bytes());
            }
            put(&mut want, b"in.b");
            want.extend_from_slice(&NONE.to_le_bytes());
            want.extend_from_slice(&0u32.to_le_bytes());
            put(&mut want, b"");
            if jetstream {
                want.extend_from_slice(&NONE.to_le_bytes());
            }
            assert_eq!(b.encoded(), &want[..], "jetstream: {jetstream}");
            assert!(b.asks_reply(0) && !b.asks_reply(1));
            b.clear();
            assert_eq!(b.encoded(), &0u32.to_le_bytes());
        }
    }

    #[test]
    fn a_jetstream_message_carries_its_metadata_from_0_1_4() {
        let msg = async_nats::Message {
            subject: "in.a".into(),
            reply: Some("$JS.ACK.S.c.3.41.42.1700000000123456789.9".into()),
            payload: Bytes::from_static(b"hi"),
            headers: None,
            status: None,
            description: None,
            length: 0,
        };
        let meta = Meta {
            stream_sequence: 41,
            consumer_sequence: 42,
            delivered: 3,
            pending: 9,
            published_ms: 1_700_000_000_123,
        };
        let mut message = Vec::new();
        put(&mut message, b"in.a");
        // The ack subject is not a reply-to the guest may answer.
        message.extend_from_slice(&NONE.to_le_bytes());
        message.extend_from_slice(&0u32.to_le_bytes());
        put(&mut message, b"hi");

        let mut old = Batch::without_jetstream();
        old.push_jetstream(&msg, Some(&meta), "S", "c");
        assert_eq!(old.encoded()[4..], message[..]);
        assert!(!old.asks_reply(0));

        let mut b = Batch::new();
        b.push_jetstream(&msg, Some(&meta), "S", "c");
        b.push_jetstream(&msg, None, "S", "c");
        let mut want = 2u32.to_le_bytes().to_vec();
        want.extend_from_slice(&message);
        put(&mut want, b"S");
        put(&mut want, b"c");
        for n in [41u64, 42, 3, 9, 1_700_000_000_123] {
            want.extend_from_slice(&n.to_le_bytes());
        }
        want.extend_from_slice(&message);
        want.extend_from_slice(&NONE.to_le_bytes());
        assert_eq!(b.encoded(), &want[..]);
    }

    #[test]
    fn decodes_every_result_kind() {
        let mut out = 3u32.to_le_bytes().to_vec();
        ok(
            &mut out,
            Some(b"R"),
            &[("out.a", &[("h", "1")], b"A"), ("out.b", &[], b"B")],
        );
        out.push(RETRY);
        put(&mut out, b"later");
        out.push(REJECT);
        put(&mut out, b"never");
        let mut got = BatchResults::default();
        // What a previous batch left is cleared.
        got.results.push(BatchResult {
            outcome: Outcome::Ok(None),
            publishes: 0,
        });
        super::decode(Bytes::from(out), 3, &mut got).unwrap();
        let result = |outcome, publishes| BatchResult { outcome, publishes };
        assert_eq!(
            got.results,
            [
                result(Outcome::Ok(Some(b"R".to_vec())), 2),
                result(Outcome::Retry("later".into()), 0),
                result(Outcome::Reject("never".into()), 0),
            ]
        );
        let publishes = &got.publishes;
        assert_eq!(publishes.len(), 2);
        assert_eq!(publishes[0].subject.as_str(), "out.a");
        assert_eq!(publishes[0].headers, [("h".to_string(), "1".to_string())]);
        assert_eq!(&publishes[1].payload[..], b"B");
    }

    fn decode(out: Bytes, expected: usize) -> Result<(), String> {
        super::decode(out, expected, &mut BatchResults::default())
    }

    #[test]
    fn malformed_results_are_errors_not_panics() {
        let mut good = 1u32.to_le_bytes().to_vec();
        ok(&mut good, None, &[("out.a", &[], b"A")]);
        assert!(decode(Bytes::from(good.clone()), 1).is_ok());
        assert_eq!(
            decode(Bytes::from(good.clone()), 2).unwrap_err(),
            "1 results for 2 messages"
        );
        // Every truncation of a good encoding is refused.
        for n in 0..good.len() {
            assert!(
                decode(Bytes::copy_from_slice(&good[..n]), 1).is_err(),
                "{n}"
            );
        }
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(
            decode(Bytes::from(extra), 1).unwrap_err(),
            "1 bytes after the last result"
        );
        let mut bad_tag = 1u32.to_le_bytes().to_vec();
        bad_tag.push(9);
        assert_eq!(
            decode(Bytes::from(bad_tag), 1).unwrap_err(),
            "result 0: unknown tag 9"
        );
        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.push(OK);
        huge.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
        assert!(
            decode(Bytes::from(huge), 1)
                .unwrap_err()
                .starts_with("truncated")
        );
        let mut not_utf8 = 1u32.to_le_bytes().to_vec();
        not_utf8.push(OK);
        not_utf8.extend_from_slice(&1u32.to_le_bytes());
        put(&mut not_utf8, &[0xff]);
        not_utf8.extend_from_slice(&0u32.to_le_bytes());
        put(&mut not_utf8, b"");
        not_utf8.extend_from_slice(&NONE.to_le_bytes());
        assert!(
            decode(Bytes::from(not_utf8), 1)
                .unwrap_err()
                .contains("UTF-8")
        );
    }
}
