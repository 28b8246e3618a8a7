//! JetStream bindings against real nats-server processes: retries and
//! redelivery, dead-lettering, consumers re-created after the server loses
//! them, work sharing between gateways, and zero loss across server kills.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use wasmgate::config::{JetStreamConfig, Storage};
use wasmgate::{BindingState, Gateway};
use wasmgate_tests::*;

fn gateway_config(server: &NatsServer, js: JetStreamConfig) -> wasmgate::Config {
    gateway_config_with(server, js, "jsprobe")
}

/// The same with another plugin: `jsprobe` (raw bindings, no batch export)
/// gets one `handle` per message and asks the host for its metadata;
/// `jsprobe-batched` (the Rust SDK) gets batches that carry each message's
/// metadata.
fn gateway_config_with(server: &NatsServer, js: JetStreamConfig, wasm: &str) -> wasmgate::Config {
    let mut config = test_config(&[server.url()]);
    let p = jetstream_plugin("probe", wasm, "in.>", &[("prefix", "out")], js);
    config.plugins.push(p);
    config
}

/// A file-storage stream capturing the plugin's output, so nothing the
/// gateway published is missed by the test even across server kills.
async fn output_stream(js: &jetstream::Context) {
    js.create_stream(stream::Config {
        name: "OUT".into(),
        subjects: vec!["out.>".into()],
        ..Default::default()
    })
    .await
    .expect("OUT stream");
}

/// Every message in OUT: how often each subject was handled, and the highest
/// delivery count its handlings saw.
async fn read_outputs(js: &jetstream::Context, expect: usize) -> HashMap<String, (usize, u64)> {
    let stream = js.get_stream("OUT").await.unwrap();
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut counts = HashMap::new();
    let mut total = 0;
    let mut messages = consumer.messages().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let wait = if counts.len() >= expect {
            Duration::from_millis(500)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, messages.next()).await {
            Ok(Some(Ok(m))) => {
                total += 1;
                let delivered = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Js-Delivered"))
                    .and_then(|v| v.as_str().parse().ok())
                    .unwrap_or(0);
                let e = counts.entry(m.subject.to_string()).or_insert((0, 0));
                e.0 += 1;
                e.1 = e.1.max(delivered);
            }
            _ => break,
        }
    }
    assert!(total >= counts.len());
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_naks_and_the_redelivery_sees_its_delivery_count() {
    init_logs();
    let server = NatsServer::start();
    let gw = Running::start(gateway_config(&server, js_config("IN", "gw"))).await;
    let status = gw.status();
    assert_eq!(status.bindings[0].kind, "jetstream");
    assert_eq!(status.bindings[0].stream.as_deref(), Some("IN"));

    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    let mut out = nc.subscribe("out.>").await.unwrap();
    js_publish(&js, "in.retry".into(), "retry-once").await;

    let msg = tokio::time::timeout(WAIT, out.next())
        .await
        .expect("redelivered and handled")
        .unwrap();
    let headers = msg.headers.expect("delivery headers");
    assert_eq!(
        headers.get("Js-Delivered").unwrap().as_str(),
        "2",
        "the handler saw the second delivery"
    );
    assert_eq!(headers.get("Js-Stream").unwrap().as_str(), "IN");
    assert_eq!(headers.get("Js-Stream-Seq").unwrap().as_str(), "1");
    let b = &gw.status().bindings[0];
    assert_eq!((b.retried, b.handled, b.dead_lettered), (1, 1, 0));

    // Acked: nothing more comes.
    assert!(
        tokio::time::timeout(Duration::from_secs(4), out.next())
            .await
            .is_err(),
        "no redelivery after ack"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_and_max_deliver_go_to_the_dead_letter_subject() {
    init_logs();
    let server = NatsServer::start();
    let mut js_cfg = js_config("IN", "gw");
    js_cfg.max_deliver = 3;
    js_cfg.dead_letter = Some("dlq.in".into());
    let gw = Running::start(gateway_config(&server, js_cfg)).await;

    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    dead_letter_stream(&js).await;
    let mut dlq = nc.subscribe("dlq.>").await.unwrap();

    js_publish(&js, "in.poison".into(), "reject").await;
    let dead = tokio::time::timeout(WAIT, dlq.next())
        .await
        .expect("rejected message dead-lettered")
        .unwrap();
    assert_eq!(dead.payload.as_ref(), b"reject");
    let h = dead.headers.clone().unwrap();
    assert_eq!(
        h.get("Wasmgate-Original-Subject").unwrap().as_str(),
        "in.poison"
    );
    assert_eq!(h.get("Wasmgate-Stream").unwrap().as_str(), "IN");
    assert_eq!(h.get("Wasmgate-Stream-Sequence").unwrap().as_str(), "1");
    assert_eq!(h.get("Wasmgate-Delivery-Count").unwrap().as_str(), "1");
    assert!(
        h.get("Wasmgate-Reason")
            .unwrap()
            .as_str()
            .contains("poison message")
    );

    js_publish(&js, "in.flaky".into(), "always-retry").await;
    let dead = tokio::time::timeout(WAIT, dlq.next())
        .await
        .expect("exhausted message dead-lettered")
        .unwrap();
    let h = dead.headers.clone().unwrap();
    assert_eq!(
        h.get("Wasmgate-Original-Subject").unwrap().as_str(),
        "in.flaky"
    );
    assert_eq!(h.get("Wasmgate-Stream-Sequence").unwrap().as_str(), "2");
    assert_eq!(h.get("Wasmgate-Delivery-Count").unwrap().as_str(), "3");
    assert!(
        h.get("Wasmgate-Reason")
            .unwrap()
            .as_str()
            .contains("max deliveries (3)"),
        "{h:?}"
    );

    // The counter moves once the dead letter is acknowledged and the message termed.
    eventually(WAIT, "two dead letters counted", || async {
        (gw.status().bindings[0].dead_lettered == 2).then_some(())
    })
    .await;
    let b = &gw.status().bindings[0];
    assert_eq!((b.rejected, b.retried, b.dead_lettered), (1, 3, 2));
    // Terminated: neither comes back.
    assert!(
        tokio::time::timeout(Duration::from_secs(4), dlq.next())
            .await
            .is_err()
    );
    assert_eq!(
        ack_pending(&js, "IN", "gw").await,
        0,
        "nothing left unacknowledged"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stream_and_consumer_lost_in_a_restart_are_recreated() {
    init_logs();
    let mut server = NatsServer::start();
    let mut js_cfg = js_config("MEM", "gw");
    js_cfg.storage = Storage::Memory;
    let gw = Running::start(gateway_config(&server, js_cfg)).await;

    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    let mut out = nc.subscribe("out.>").await.unwrap();
    js_publish(&js, "in.before".into(), "one").await;
    tokio::time::timeout(WAIT, out.next())
        .await
        .expect("handled before the restart");

    server.restart();
    gw.wait_for(WAIT, |s| s.ready && s.total_reconnects >= 1)
        .await
        .unwrap();
    // The memory stream is gone with the old process; the gateway declared it again.
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    let mut out = nc.subscribe("out.>").await.unwrap();
    let stream = eventually(WAIT, "stream MEM re-created", || {
        let js = js.clone();
        async move { js.get_stream("MEM").await.ok() }
    })
    .await;
    stream
        .get_consumer::<consumer::pull::Config>("gw")
        .await
        .expect("consumer re-created");
    for i in 0..20 {
        js_publish(&js, format!("in.after.{i}"), "two").await;
    }
    let mut seen = HashSet::new();
    while seen.len() < 20 {
        let m = tokio::time::timeout(WAIT, out.next())
            .await
            .expect("consumption resumed")
            .unwrap();
        seen.insert(m.subject.to_string());
    }
    let b = &gw.status().bindings[0];
    assert_eq!(b.state, BindingState::Bound);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_deleted_on_the_server_is_recreated() {
    init_logs();
    let server = NatsServer::start();
    let gw = Running::start(gateway_config(&server, js_config("IN", "gw"))).await;
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    let mut out = nc.subscribe("out.>").await.unwrap();

    // The failure mode of nats.rs#1584: the durable consumer disappears under a running pull.
    js.get_stream("IN")
        .await
        .unwrap()
        .delete_consumer("gw")
        .await
        .unwrap();
    let recovered = gw
        .wait_for(WAIT, |s| {
            s.bindings[0].state == BindingState::Bound
                && s.bindings[0]
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("re-declared consumer gw"))
        })
        .await
        .expect("the binding reports the re-creation");
    println!("binding after recovery: {:?}", recovered.bindings[0].error);
    for i in 0..10 {
        js_publish(&js, format!("in.after-delete.{i}"), "x").await;
    }
    for _ in 0..10 {
        tokio::time::timeout(WAIT, out.next())
            .await
            .expect("consumption resumed")
            .unwrap();
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_durable_consumer() {
    init_logs();
    let server = NatsServer::start();
    let config = gateway_config(&server, js_config("IN", "shared"));
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    output_stream(&js).await;

    let shutdown = CancellationToken::new();
    let a = Gateway::start(config.clone(), shutdown.clone())
        .await
        .unwrap();
    let b = Gateway::start(config, shutdown.clone()).await.unwrap();
    a.ready(WAIT).await.unwrap();
    b.ready(WAIT).await.unwrap();

    let n = 2000;
    for i in 0..n {
        js.publish(format!("in.{i}"), "x".into()).await.unwrap();
    }
    let counts = read_outputs(&js, n).await;
    assert_eq!(counts.len(), n, "every message handled");
    // A message handled twice must have been redelivered (ack wait expired),
    // never handed to both gateways at once.
    let both: Vec<_> = counts
        .iter()
        .filter(|(_, (c, delivered))| *c > 1 && *delivered < 2)
        .collect();
    assert!(
        both.is_empty(),
        "handled by both gateways without a redelivery: {both:?}"
    );
    let redelivered = counts.values().filter(|(c, _)| *c > 1).count();
    println!("shared consumer: {n} messages, {redelivered} redelivered");
    let (ha, hb) = (
        a.status().bindings[0].handled,
        b.status().bindings[0].handled,
    );
    assert_eq!(ha + hb, (n + redelivered) as u64);
    assert!(ha > 0 && hb > 0, "both gateways took work: {ha} / {hb}");
    shutdown.cancel();
    a.wait().await.unwrap();
    b.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_loss_across_server_kills_and_a_gateway_restart() {
    zero_loss("jsprobe").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_loss_in_batches_across_server_kills_and_a_gateway_restart() {
    zero_loss("jsprobe-batched").await;
}

/// Kill and restart the server five times and restart the gateway once
/// while 10,000 messages go through `wasm`: every one is handled.
async fn zero_loss(wasm: &str) {
    init_logs();
    let mut server = NatsServer::start();
    let url = server.url();
    let config = gateway_config_with(&server, js_config("IN", "gw"), wasm);
    {
        let nc = client(&server).await;
        let js = jetstream::new(nc);
        output_stream(&js).await;
        js.create_stream(stream::Config {
            name: "IN".into(),
            subjects: vec!["in.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut shutdown = CancellationToken::new();
    let mut gw = Gateway::start(config.clone(), shutdown.clone())
        .await
        .unwrap();
    gw.ready(WAIT).await.unwrap();

    // The publisher retries each message until the server acknowledges it,
    // with a message id so a retried publish is not stored twice.
    let n = 10_000usize;
    let publisher = tokio::spawn(async move {
        let nc = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url)
            .await
            .unwrap();
        let js = jetstream::new(nc);
        for i in 0..n {
            loop {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("m{i}").as_str());
                let sent = js
                    .publish_with_headers(format!("in.{i}"), headers, "x".into())
                    .await;
                let acked = match sent {
                    Ok(ack) => tokio::time::timeout(Duration::from_secs(2), ack)
                        .await
                        .is_ok_and(|r| r.is_ok()),
                    Err(_) => false,
                };
                if acked {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });

    let batched = wasm == "jsprobe-batched";
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.restart();
        if round == 2 {
            let status = gw.status();
            assert!(status.plugins[0].reads_delivery);
            assert_eq!(status.plugins[0].jetstream_batched, batched);
            assert_eq!(
                status.bindings[0].batches > 0,
                batched,
                "{wasm}: batches {}",
                status.bindings[0].batches
            );
            shutdown.cancel();
            gw.wait().await.unwrap();
            shutdown = CancellationToken::new();
            gw = Gateway::start(config.clone(), shutdown.clone())
                .await
                .unwrap();
        }
    }
    tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("publisher finished")
        .unwrap();
    gw.wait_for(WAIT, |s| s.ready).await.unwrap();

    let nc = client(&server).await;
    let js = jetstream::new(nc);
    let counts = read_outputs(&js, n).await;
    let missing: Vec<usize> = (0..n)
        .filter(|i| !counts.contains_key(&format!("out.in.{i}")))
        .collect();
    let duplicates: usize = counts.values().map(|(c, _)| c - 1).sum();
    println!(
        "zero-loss run ({wasm}): {} distinct of {n}, {duplicates} duplicate handlings",
        counts.len()
    );
    assert!(
        missing.is_empty(),
        "{} messages never handled, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    shutdown.cancel();
    gw.wait().await.unwrap();
}
