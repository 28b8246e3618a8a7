//! Dead letters, wherever the dead-letter subject leads: to a plain
//! subscriber (no stream), each rejected message arrives once, as one core
//! message, and nothing waits for a PubAck nobody sends; a stream created on
//! that subject while the gateway runs is noticed and gets the next ones;
//! a dead-letter stream that refuses them (full) makes the gateway nak and
//! count, and the message is kept until the stream takes it.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use wasmgate::config::JetStreamConfig;
use wasmgate_tests::*;

/// How soon a dead-letter stream created while the gateway runs must be
/// noticed. Not the kit's [`WAIT`]: it has to stay well under how long an
/// answer is trusted without an advisory (`STREAM_SNAPSHOT_MAX_AGE`), or the
/// cached answer expiring could pass the test in place of the advisory it is
/// about.
const NOTICED_WITHIN: Duration = Duration::from_secs(10);

/// `jsprobe` (which rejects `reject` and retries `always-retry`) bound to
/// `in.>` through stream `IN`, dead letters to `dead_letter`.
fn gateway(
    server: &NatsServer,
    dead_letter: &str,
    tune: impl FnOnce(&mut JetStreamConfig),
) -> wasmgate::Config {
    let mut js = js_config("IN", "gw");
    js.dead_letter = Some(dead_letter.into());
    tune(&mut js);
    let mut config = test_config(&[server.url()]);
    let p = jetstream_plugin("probe", "jsprobe", "in.>", &[("prefix", "out")], js);
    config.plugins.push(p);
    config
}

/// The input stream's sequence a dead letter came from.
fn sequence(msg: &async_nats::Message) -> u64 {
    let h = msg.headers.as_ref().expect("dead letters carry headers");
    h.get("Wasmgate-Stream-Sequence")
        .unwrap()
        .as_str()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_stream_each_dead_letter_is_one_core_message() {
    init_logs();
    let server = NatsServer::start();
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    let mut plain = nc.subscribe("dlq.plain").await.unwrap();
    nc.flush().await.unwrap();
    let gw = Running::start(gateway(&server, "dlq.plain", |_| {})).await;

    for i in 0..5 {
        js_publish(&js, format!("in.{i}"), "reject").await;
    }
    let mut seen = BTreeSet::new();
    for _ in 0..5 {
        let dead = tokio::time::timeout(WAIT, plain.next())
            .await
            .expect("a dead letter")
            .unwrap();
        assert_eq!(dead.payload.as_ref(), b"reject");
        assert!(
            dead.reply.is_none(),
            "a core message, not a JetStream publish waiting for a PubAck"
        );
        seen.insert(sequence(&dead));
    }
    assert_eq!(seen, (1..=5).collect(), "each rejected message once");
    eventually(WAIT, "five dead letters counted", || async {
        (gw.status().bindings[0].dead_lettered == 5).then_some(())
    })
    .await;
    // Longer than ack_wait (3 s): a message nak'd or left unsettled would be back.
    assert!(
        tokio::time::timeout(Duration::from_secs(4), plain.next())
            .await
            .is_err(),
        "no dead letter twice"
    );
    let b = &gw.status().bindings[0];
    assert_eq!(
        (b.rejected, b.dead_lettered, b.dead_letter_failed),
        (5, 5, 0)
    );
    assert_eq!(ack_pending(&js, "IN", "gw").await, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_created_on_the_dead_letter_subject_is_noticed() {
    init_logs();
    let server = NatsServer::start();
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    let mut plain = nc.subscribe("dlq.late").await.unwrap();
    nc.flush().await.unwrap();
    let gw = Running::start(gateway(&server, "dlq.late", |_| {})).await;

    js_publish(&js, "in.before".into(), "reject").await;
    let first = tokio::time::timeout(WAIT, plain.next())
        .await
        .unwrap()
        .unwrap();
    assert!(first.reply.is_none(), "no stream yet: a core message");

    // Within NOTICED_WITHIN, far less than how long an answer is trusted
    // without an advisory: the gateway learns of the stream from JetStream's
    // advisory. The advisory arrives a moment after the stream exists, so
    // rejected messages go on until one is dead-lettered through JetStream.
    assert!(NOTICED_WITHIN < wasmgate::internals::STREAM_SNAPSHOT_MAX_AGE);
    dead_letter_stream(&js).await;
    let deadline = tokio::time::Instant::now() + NOTICED_WITHIN;
    let mut sent = 1;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new stream was not noticed"
        );
        sent += 1;
        js_publish(&js, format!("in.after.{sent}"), "reject").await;
        let dead = tokio::time::timeout(NOTICED_WITHIN, plain.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sequence(&dead), sent);
        if dead.reply.is_some() {
            break; // a JetStream publish now
        }
    }
    // The stream captures every dead letter sent after it was made, the
    // core ones before the gateway noticed it as well as the JetStream one
    // (how many were core depends on when the advisory came): all but the
    // first.
    let stored = sent - 1;
    eventually(WAIT, "the dead letters stored", || {
        let js = js.clone();
        async move {
            let info = js.get_stream("DLQ").await.ok()?.info().await.ok()?.clone();
            (info.state.messages == stored).then_some(())
        }
    })
    .await;
    eventually(WAIT, "every dead letter counted", || async {
        (gw.status().bindings[0].dead_lettered == sent).then_some(())
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_stream_that_refuses_keeps_the_message() {
    init_logs();
    let server = NatsServer::start();
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    // Full, and refusing more: its PubAcks are errors.
    js.create_stream(stream::Config {
        name: "DLQ".into(),
        subjects: vec!["dlq.>".into()],
        max_messages: 1,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .unwrap();
    js_publish(&js, "dlq.filler".into(), "filler").await;
    let gw = Running::start(gateway(&server, "dlq.full", |js| js.max_deliver = 0)).await;

    js_publish(&js, "in.poison".into(), "reject").await;
    eventually(WAIT, "refused dead letters counted", || async {
        (gw.status().bindings[0].dead_letter_failed >= 2).then_some(())
    })
    .await;
    let b = &gw.status().bindings[0];
    assert_eq!(b.dead_lettered, 0, "{b:?}");
    assert_eq!(
        stream_info(&js, "IN").await.state.messages,
        1,
        "the input is kept"
    );

    // Room in the stream: the kept message is dead-lettered at its next delivery.
    js.get_stream("DLQ").await.unwrap().purge().await.unwrap();
    eventually(WAIT, "the kept message dead-lettered", || async {
        (gw.status().bindings[0].dead_lettered == 1).then_some(())
    })
    .await;
    assert_eq!(stream_info(&js, "DLQ").await.state.messages, 1);
    let dlq = js.get_stream("DLQ").await.unwrap();
    let stored = dlq
        .get_last_raw_message_by_subject("dlq.full")
        .await
        .unwrap();
    assert_eq!(stored.payload.as_ref(), b"reject");
    gw.stop().await;
}
