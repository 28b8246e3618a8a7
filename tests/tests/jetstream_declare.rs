//! `create = true` creates only what is missing. A stream the gateway did
//! not make keeps every setting (storage, limits, description — and, on a
//! cluster, its replicas: `cluster.rs`); one that does not capture the
//! binding's subject is reported in `/status`, not rewritten; an existing
//! consumer changes only in the fields the binding owns.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use wasmgate::config::{JetStreamConfig, Storage};
use wasmgate_tests::*;

fn gateway(server: &NatsServer, subject: &str, js: JetStreamConfig) -> wasmgate::Config {
    let mut config = test_config(&[server.url()]);
    let p = jetstream_plugin("upper", "uppercase", subject, &[("prefix", "out")], js);
    config.plugins.push(p);
    config
}

/// The stream an operator made: file storage, limits, a description.
async fn operators_stream(js: &jetstream::Context, name: &str, subject: &str) -> stream::Config {
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        description: Some("made by ops".into()),
        max_messages: 1000,
        max_age: Duration::from_secs(3600),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap()
    .cached_info()
    .config
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_keeps_its_settings_and_an_existing_consumer_its_own() {
    init_logs();
    let server = NatsServer::start();
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    let before = operators_stream(&js, "ORDERS", "orders.>").await;
    js.get_stream("ORDERS")
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("gw".into()),
            description: Some("ops consumer".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(10),
            max_deliver: 7,
            ..Default::default()
        })
        .await
        .unwrap();

    // The gateway's idea differs: memory storage, other subjects, other consumer settings.
    let mut want = js_config("ORDERS", "gw");
    want.storage = Storage::Memory;
    want.stream_subjects = vec!["orders.new.>".into()];
    want.ack_wait = Duration::from_secs(3);
    want.max_deliver = 5;
    let gw = Running::start(gateway(&server, "orders.>", want)).await;
    assert_eq!(
        &js_round_trip(&nc, &js, "orders.1", "one").await[..],
        b"ONE"
    );

    let mut stream = js.get_stream("ORDERS").await.unwrap();
    let after = stream.info().await.unwrap().config.clone();
    assert_eq!(after, before, "the operator's stream is not rewritten");
    let consumer = stream.consumer_info("gw").await.unwrap().config;
    assert_eq!(
        (consumer.ack_wait, consumer.max_deliver),
        (Duration::from_secs(3), 5),
        "the fields the binding owns follow it"
    );
    assert_eq!(
        consumer.description.as_deref(),
        Some("ops consumer"),
        "the rest stays"
    );
    assert_eq!(gw.status().bindings[0].warning, None);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_capture_the_binding_is_reported_not_rewritten() {
    init_logs();
    let server = NatsServer::start();
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    let before = operators_stream(&js, "OTHER", "other.>").await;

    let shutdown = tokio_util::sync::CancellationToken::new();
    let gw = wasmgate::Gateway::start(
        gateway(&server, "in.>", js_config("OTHER", "gw")),
        shutdown.clone(),
    )
    .await
    .unwrap();
    // Older servers then refuse the consumer (its filter is outside the
    // stream): the binding's error says why, the mismatch first. Newer ones
    // take it, and the binding's warning says it.
    let note = "stream OTHER does not capture in.> (its subjects: other.>); it was left as it is";
    let shown = eventually(WAIT, "the mismatch in the status", || async {
        let b = &gw.status().bindings[0];
        b.warning
            .clone()
            .or(b.error.clone())
            .filter(|t| t.starts_with(note))
    })
    .await;
    let addr = gw.http_addr().unwrap();
    let (_, status) = http_get(addr, "/status").await;
    let b = &status["bindings"][0];
    assert!(
        b["warning"] == shown.as_str() || b["error"] == shown.as_str(),
        "{b}"
    );
    let after = stream_info(&js, "OTHER").await.config;
    assert_eq!(after, before);
    shutdown.cancel();
    let _ = gw.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_made_with_the_bindings_settings() {
    init_logs();
    let server = NatsServer::start();
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    let mut want = js_config("MADE", "gw");
    want.storage = Storage::Memory;
    let gw = Running::start(gateway(&server, "made.>", want)).await;
    let mut stream = js.get_stream("MADE").await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(config.subjects, ["made.>"]);
    assert_eq!(config.storage, stream::StorageType::Memory);
    assert_eq!(config.num_replicas, 1);
    gw.stop().await;
}
