//! End-to-end at-least-once: a plugin's publishes to subjects a stream
//! captures are JetStream publishes, and the input is settled (or its
//! requester answered) only after their PubAcks. A stream that refuses the
//! output (full, `discard = new`) gets the input nak'd and counted, and once
//! it takes messages again every output arrives, each once, with a
//! `Nats-Msg-Id` derived from its input. `publish_ack = "never"` keeps the
//! plain core publishes.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use wasmgate::config::{PluginConfig, PublishAck};
use wasmgate_tests::*;

/// An output stream on `out.>` that takes `room` messages and refuses the rest.
async fn output_stream(js: &jetstream::Context, room: i64) {
    js.create_stream(stream::Config {
        name: "OUT".into(),
        subjects: vec!["out.>".into()],
        max_messages: room,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .expect("output stream created");
}

/// Let the output stream take everything.
async fn make_room(js: &jetstream::Context) {
    let mut config = stream_info(js, "OUT").await.config;
    config.max_messages = -1;
    js.update_stream(config)
        .await
        .expect("output stream updated");
}

/// `jsprobe` on `in.>` through stream `IN`, publishing to `out.<subject>`.
fn gateway(server: &NatsServer, ack: PublishAck) -> wasmgate::Config {
    let mut config = test_config(&[server.url()]);
    let mut p: PluginConfig = jetstream_plugin(
        "probe",
        "jsprobe",
        "in.>",
        &[("prefix", "out")],
        js_config("IN", "gw"),
    );
    p.publish_ack = ack;
    config.plugins.push(p);
    config
}

/// Every message of stream `OUT`: its subject and `Nats-Msg-Id`, in order.
async fn outputs(js: &jetstream::Context) -> Vec<(String, Option<String>)> {
    let stream = js.get_stream("OUT").await.unwrap();
    let n = stream_info(js, "OUT").await.state.messages as usize;
    let reader = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = reader.fetch().max_messages(n).messages().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < n {
        let m = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("the stream's messages")
            .unwrap()
            .unwrap();
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string());
        seen.push((m.subject.to_string(), id));
    }
    seen
}

/// Inputs of consumer `gw` not yet acknowledged: delivered and waiting, or
/// not delivered yet.
async fn unsettled(js: &jetstream::Context) -> u64 {
    let info = js
        .get_stream("IN")
        .await
        .unwrap()
        .consumer_info("gw")
        .await
        .unwrap();
    info.num_ack_pending as u64 + info.num_pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_is_acked_only_after_its_outputs_pubacks() {
    init_logs();
    let server = NatsServer::start();
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    output_stream(&js, 5).await;
    let gw = Running::start(gateway(&server, PublishAck::Auto)).await;

    for i in 0..10 {
        js_publish(&js, format!("in.{i}"), &format!("m{i}")).await;
    }
    eventually(WAIT, "the refused outputs counted", || async {
        (gw.status().bindings[0].publish_unconfirmed >= 5).then_some(())
    })
    .await;
    assert_eq!(stream_info(&js, "OUT").await.state.messages, 5);
    assert!(
        unsettled(&js).await >= 5,
        "inputs whose outputs the stream refused are not acked"
    );

    make_room(&js).await;
    eventually(
        WAIT,
        "every input acked once the stream takes them",
        || async {
            (unsettled(&js).await == 0 && stream_info(&js, "OUT").await.state.messages == 10)
                .then_some(())
        },
    )
    .await;
    let outputs = outputs(&js).await;
    let mut by_subject = BTreeMap::new();
    for (subject, id) in &outputs {
        *by_subject.entry(subject.clone()).or_insert(0) += 1;
        let id = id.as_deref().expect("every output carries a Nats-Msg-Id");
        let parts: Vec<&str> = id.split(':').collect();
        assert_eq!(parts.len(), 3, "stream:sequence:index, got {id}");
        assert_eq!(parts[0], "IN");
        assert_eq!(parts[2], "0", "the first (only) publish of its input");
        let seq: u64 = parts[1].parse().unwrap();
        assert_eq!(
            subject,
            &format!("out.in.{}", seq - 1),
            "the id names its input"
        );
    }
    assert_eq!(by_subject.len(), 10, "every input's output: {by_subject:?}");
    assert!(
        by_subject.values().all(|&n| n == 1),
        "each once: {by_subject:?}"
    );
    assert!(
        gw.status().bindings[0].handled >= 15,
        "the refused inputs were handled again"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_keeps_core_publishes_and_acks_at_once() {
    init_logs();
    let server = NatsServer::start();
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    output_stream(&js, 5).await;
    let gw = Running::start(gateway(&server, PublishAck::Never)).await;

    for i in 0..10 {
        js_publish(&js, format!("in.{i}"), &format!("m{i}")).await;
    }
    eventually(WAIT, "every input acked", || async {
        (gw.status().bindings[0].handled == 10 && unsettled(&js).await == 0).then_some(())
    })
    .await;
    // The stream dropped what it had no room for, and nobody noticed: what
    // `never` means.
    assert_eq!(stream_info(&js, "OUT").await.state.messages, 5);
    assert_eq!(gw.status().bindings[0].publish_unconfirmed, 0);
    let ids: Vec<_> = outputs(&js).await.into_iter().map(|(_, id)| id).collect();
    assert!(
        ids.iter().all(Option::is_none),
        "no Nats-Msg-Id with never: {ids:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_is_answered_after_the_stream_has_the_output() {
    init_logs();
    let server = NatsServer::start();
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    output_stream(&js, 1).await;
    let gw = Running::start(upper_config(&[server.url()])).await;

    let reply = nc.request("in.a", "hello".into()).await.unwrap();
    assert_eq!(text(&reply), "HELLO");
    assert_eq!(error_kind(&reply), None);
    assert_eq!(
        stream_info(&js, "OUT").await.state.messages,
        1,
        "the stream had the output before the reply was sent"
    );

    // Full now: the output is refused, and the requester is told.
    let reply = nc.request("in.b", "again".into()).await.unwrap();
    assert_eq!(error_kind(&reply).as_deref(), Some("unavailable"));
    assert!(
        text(&reply).contains("out.in.b"),
        "names the output: {}",
        text(&reply)
    );
    assert_eq!(gw.status().bindings[0].publish_unconfirmed, 1);

    // A subject no stream captures is a plain publish, answered at once.
    let mut plain = nc.subscribe("plain.in.c").await.unwrap();
    nc.flush().await.unwrap();
    let mut config = upper_config(&[server.url()]);
    config.plugins[0].config.insert(
        "prefix".into(),
        wasmgate::config::ConfigValue::String("plain".into()),
    );
    gw.stop().await;
    let gw = Running::start(config).await;
    let reply = nc.request("in.c", "core".into()).await.unwrap();
    assert_eq!(text(&reply), "CORE");
    let out = tokio::time::timeout(WAIT, plain.next())
        .await
        .unwrap()
        .unwrap();
    assert!(out.reply.is_none(), "a core publish, no PubAck asked for");
    gw.stop().await;
}
