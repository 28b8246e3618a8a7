//! Running a handler: on one message (the `handler` export) or on every
//! message of an encoded batch (`batch-handler`, the layout in
//! `wit/batch-handler.wit`; the host's side is `host/src/plugin/batch.rs`).
//! While a batch runs, two thread-locals let [`publish`](crate::publish) and
//! [`jetstream`](crate::jetstream) answer from the batch instead of calling
//! the host.

use std::cell::RefCell;

use crate::bindings::wasmgate::plugin::types::{HandleError, Message as WitMessage};
use crate::codec;

thread_local! {
    /// While a batch runs: the encoded results so far, and the number of
    /// publishes of the message in hand, which [`collect`] appends to it.
    static BATCH: RefCell<Option<(Vec<u8>, u32)>> = const { RefCell::new(None) };
    /// While a batch runs: the JetStream metadata of the message in hand.
    static JETSTREAM: RefCell<Option<crate::JetstreamInfo>> = const { RefCell::new(None) };
}

/// Run a handler on one message and translate its result to the WIT types.
pub fn call<H: crate::Handler>(msg: WitMessage) -> Result<Option<Vec<u8>>, HandleError> {
    let headers: Vec<crate::Header<'_>> = msg
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let view = crate::Message {
        subject: &msg.subject,
        payload: &msg.payload,
        headers: &headers,
        reply_to: msg.reply_to.as_deref(),
    };
    match H::handle(&view) {
        Ok(reply) => Ok(reply.0),
        Err(e) => Err(e.into()),
    }
}

/// Run a handler on each message of an encoded batch (see
/// `wit/batch-handler.wit`) and encode the results. Each message
/// borrows the batch and publishes are written straight into the
/// results, so a message costs no copy or allocation of the SDK's own.
/// A malformed batch panics, which traps: the host then sends each
/// message alone.
pub fn call_batch<H: crate::Handler>(batch: &[u8]) -> Vec<u8> {
    let mut input = codec::Reader::new(batch);
    let count = input.u32();
    // Room for an echo of every message to a longer subject, so that
    // the usual handler never makes the results grow and move.
    let mut out = Vec::with_capacity(batch.len() + batch.len() / 4 + 64);
    codec::put_u32(&mut out, count);
    let mut headers = Vec::new();
    for _ in 0..count {
        let msg = input.message(&mut headers);
        JETSTREAM.with(|j| input.jetstream_into(&mut j.borrow_mut()));
        let start = out.len();
        codec::begin_ok(&mut out);
        BATCH.with(|b| *b.borrow_mut() = Some((out, 0)));
        let result = H::handle(&msg);
        let (taken, publishes) = BATCH
            .with(|b| b.borrow_mut().take())
            .expect("the batch buffer is put back");
        out = taken;
        match result {
            Ok(reply) => codec::end_ok(&mut out, start, publishes, reply.payload()),
            Err(e) => {
                // Discard its publishes: only a success sends anything.
                out.truncate(start);
                let (tag, reason) = match &e {
                    crate::Error::Retry(r) => (codec::RETRY, r),
                    crate::Error::Reject(r) => (codec::REJECT, r),
                };
                codec::put_error(&mut out, tag, reason);
            }
        }
    }
    assert!(input.is_empty(), "bytes after the last message of a batch");
    out
}

/// Inside a batch: the metadata the batch carried for the message in
/// hand. `None` outside a batch.
pub(crate) fn batch_jetstream() -> Option<Option<crate::JetstreamInfo>> {
    let in_batch = BATCH.with(|b| b.borrow().is_some());
    in_batch.then(|| JETSTREAM.with(|j| j.borrow().clone()))
}

/// Inside a batch: append the publish to the results (the host checks
/// it when the batch returns). `None` outside a batch.
pub(crate) fn collect(
    subject: &str,
    payload: &[u8],
    headers: &[crate::Header<'_>],
) -> Option<Result<(), crate::PublishError>> {
    BATCH.with(|b| {
        let mut b = b.borrow_mut();
        let (out, n) = b.as_mut()?;
        codec::put_publish(out, subject, headers, payload);
        *n += 1;
        Some(Ok(()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::msg;
    use crate::{Error, Handler, JetstreamInfo, Message, Reply, jetstream, publish};

    struct Fanout;

    impl Handler for Fanout {
        fn handle(msg: &Message) -> Result<Reply, Error> {
            match msg.text()? {
                "fail" => {
                    publish("out.discarded", b"x", &[])?;
                    Err(Error::retry("asked to fail"))
                }
                "bad" => {
                    publish("out.*", b"x", &[])?;
                    Ok(Reply::none())
                }
                text => {
                    publish("out.a", text, msg.headers)?;
                    publish("out.b", text, &[])?;
                    Ok(msg.reply(text.to_uppercase()))
                }
            }
        }
    }

    fn text_msg<'a>(text: &'a str, reply_to: Option<&'a str>) -> Message<'a> {
        Message {
            payload: text.as_bytes(),
            ..msg(reply_to)
        }
    }

    /// The host's encoding of a batch (`host/src/plugin/batch.rs`), core
    /// NATS messages.
    fn encode(msgs: &[Message]) -> Vec<u8> {
        let none: Vec<_> = msgs.iter().map(|m| (*m, None)).collect();
        encode_js(&none)
    }

    /// The same with each message's JetStream metadata.
    fn encode_js(msgs: &[(Message, Option<JetstreamInfo>)]) -> Vec<u8> {
        let mut out = Vec::new();
        codec::put_u32(&mut out, msgs.len() as u32);
        for (m, js) in msgs {
            codec::put_bytes(&mut out, m.subject.as_bytes());
            match m.reply_to {
                None => codec::put_u32(&mut out, u32::MAX),
                Some(r) => codec::put_bytes(&mut out, r.as_bytes()),
            }
            codec::put_u32(&mut out, m.headers.len() as u32);
            for (k, v) in m.headers {
                codec::put_bytes(&mut out, k.as_bytes());
                codec::put_bytes(&mut out, v.as_bytes());
            }
            codec::put_bytes(&mut out, m.payload);
            match js {
                None => codec::put_u32(&mut out, u32::MAX),
                Some(i) => {
                    codec::put_bytes(&mut out, i.stream.as_bytes());
                    codec::put_bytes(&mut out, i.consumer.as_bytes());
                    for n in [
                        i.stream_sequence,
                        i.consumer_sequence,
                        i.delivered,
                        i.pending,
                        i.published_ms,
                    ] {
                        out.extend_from_slice(&n.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    fn info(stream: &str, seq: u64, delivered: u64) -> JetstreamInfo {
        JetstreamInfo {
            stream: stream.into(),
            consumer: "c".into(),
            stream_sequence: seq,
            consumer_sequence: seq + 100,
            delivered,
            pending: 7,
            published_ms: 1_700_000_000_000 + seq,
        }
    }

    /// Publishes, for each message, what `jetstream()` said about it.
    struct Metadata;

    impl Handler for Metadata {
        fn handle(_msg: &Message) -> Result<Reply, Error> {
            let said = match jetstream() {
                None => "core".to_string(),
                Some(i) => format!(
                    "{} {} {} {} {} {} {}",
                    i.stream,
                    i.consumer,
                    i.stream_sequence,
                    i.consumer_sequence,
                    i.delivered,
                    i.pending,
                    i.published_ms
                ),
            };
            publish("out.meta", said, &[])?;
            Ok(Reply::none())
        }
    }

    #[test]
    fn inside_a_batch_jetstream_metadata_is_each_messages_own() {
        let msgs = [
            (msg(None), Some(info("orders", 1, 1))),
            (msg(None), Some(info("a-longer-stream-name", 2, 3))),
            (msg(None), None),
            (msg(None), Some(info("s", 3, 1))),
        ];
        let out = call_batch::<Metadata>(&encode_js(&msgs));
        let mut want = Vec::new();
        codec::put_u32(&mut want, 4);
        for said in [
            "orders c 1 101 1 7 1700000000001",
            "a-longer-stream-name c 2 102 3 7 1700000000002",
            "core",
            "s c 3 103 1 7 1700000000003",
        ] {
            let start = want.len();
            codec::begin_ok(&mut want);
            codec::put_publish(&mut want, "out.meta", &[], said.as_bytes());
            codec::end_ok(&mut want, start, 1, None);
        }
        assert_eq!(out, want);
        // Outside a batch `jetstream()` asks the host instead.
        assert!(batch_jetstream().is_none());
    }

    #[test]
    fn a_batch_keeps_each_messages_publishes_apart_and_in_order() {
        let out = call_batch::<Fanout>(&encode(&[
            text_msg("one", Some("r")),
            text_msg("fail", None),
            text_msg("two", None),
        ]));
        let mut want = Vec::new();
        codec::put_u32(&mut want, 3);
        let h = msg(None).headers;
        let start = want.len();
        codec::begin_ok(&mut want);
        codec::put_publish(&mut want, "out.a", h, b"one");
        codec::put_publish(&mut want, "out.b", &[], b"one");
        codec::end_ok(&mut want, start, 2, Some(b"ONE"));
        // A failed message's publishes are dropped, not carried to the next.
        codec::put_error(&mut want, codec::RETRY, "asked to fail");
        let start = want.len();
        codec::begin_ok(&mut want);
        codec::put_publish(&mut want, "out.a", h, b"two");
        codec::put_publish(&mut want, "out.b", &[], b"two");
        codec::end_ok(&mut want, start, 2, None);
        assert_eq!(out, want);
    }

    #[test]
    fn inside_a_batch_publish_defers_every_check_to_the_host() {
        let out = call_batch::<Fanout>(&encode(&[text_msg("bad", None)]));
        let mut want = Vec::new();
        codec::put_u32(&mut want, 1);
        codec::begin_ok(&mut want);
        codec::put_publish(&mut want, "out.*", &[], b"x");
        codec::end_ok(&mut want, 4, 1, None);
        assert_eq!(out, want);
        // Outside a batch nothing is collected.
        assert!(collect("out.x", b"", &[]).is_none());
    }

    #[test]
    fn messages_decode_as_encoded_borrowing_the_batch() {
        let two_headers = Message {
            headers: &[("x", "1"), ("y", "2")],
            ..text_msg("a longer payload than the next", None)
        };
        let msgs = [
            msg(Some("r.1")),
            text_msg("", None),
            two_headers,
            text_msg("short", Some("r.2")),
            msg(None),
        ];
        let encoded = encode(&msgs);
        let mut r = codec::Reader::new(&encoded);
        assert_eq!(r.u32(), msgs.len() as u32);
        let mut headers = Vec::new();
        let mut js = Some(info("left over", 1, 1));
        for want in &msgs {
            let got = r.message(&mut headers);
            assert_eq!(&got, want);
            r.jetstream_into(&mut js);
            assert!(js.is_none());
        }
        assert!(r.is_empty());
    }
}
