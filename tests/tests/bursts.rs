//! Bursts on a core binding against a real nats-server: the default buffers
//! take a 300,000-message burst whole, and when a binding's buffer is full
//! anyway every dropped message is counted on the binding, shown in
//! `/metrics` and logged as a WARN naming it.

use std::time::Duration;

use futures::StreamExt;
use wasmgate_tests::*;

/// Messages in the burst, and their payload size.
const BURST: usize = 300_000;
const SIZE: usize = 128;

/// A client whose own buffer takes the whole burst's outputs, so that only
/// the gateway can lose them.
async fn collector(server: &NatsServer) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .subscription_capacity(2 * BURST)
        .connect(server.url())
        .await
        .expect("connect the collector")
}

/// The gateway runs as its own process, as operators run it: in-process it
/// would share the test's two runtime threads with a publisher that keeps
/// them busy, which no deployment does.
#[test]
fn a_300k_burst_with_the_default_buffers_loses_nothing() {
    let server = NatsServer::start();
    let mut config = test_config(&[server.url()]);
    let defaults = wasmgate::Config::default();
    assert_eq!(
        (
            config.nats.subscription_capacity,
            config.nats.binding_buffer
        ),
        (
            defaults.nats.subscription_capacity,
            defaults.nats.binding_buffer
        ),
        "the test runs on the default buffers"
    );
    config.plugins.push(plugin(
        "upper",
        "uppercase",
        &["burst.>"],
        &[("prefix", "out")],
    ));
    let gw = process::GatewayProcess::start(&config);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let received = rt.block_on(async {
        let nc = collector(&server).await;
        let mut outputs = nc.subscribe("out.burst.>").await.unwrap();
        nc.flush().await.unwrap();
        let count = tokio::spawn(async move {
            let mut n = 0usize;
            while n < BURST {
                match tokio::time::timeout(Duration::from_secs(60), outputs.next()).await {
                    Ok(Some(_)) => n += 1,
                    _ => break,
                }
            }
            n
        });
        // As fast as one client can publish: the gateway falls behind at once.
        let publisher = client(&server).await;
        let payload = bytes::Bytes::from(vec![b'x'; SIZE]);
        for i in 0..BURST {
            publisher
                .publish(format!("burst.{}", i % 100), payload.clone())
                .await
                .unwrap();
        }
        publisher.flush().await.unwrap();
        count.await.unwrap()
    });
    let status = gw.status().expect("status");
    let b = &status["bindings"][0];
    eprintln!(
        "burst: {BURST} x {SIZE} B, {received} outputs, peak RSS {} MiB",
        gw.peak_rss_kib().unwrap_or(0) / 1024
    );
    assert_eq!(
        (
            b["dropped"].as_u64(),
            status["slow_consumer_events"].as_u64()
        ),
        (Some(0), Some(0)),
        "nothing dropped by the binding or the client: {b}"
    );
    assert_eq!(
        b["handled"].as_u64(),
        Some(BURST as u64),
        "every message handled: {b}"
    );
    assert_eq!(received, BURST, "every output arrived");
}

#[test]
fn a_full_buffer_drops_counts_and_warns_per_binding() {
    let server = NatsServer::start();
    let mut config = test_config(&[server.url()]);
    let mut p = plugin("sleepy", "sleepy", &["sleep.>"], &[]);
    // The smallest buffer allowed: about 800 of the 1 KiB messages below.
    p.bindings[0].buffer = Some(wasmgate::config::ByteSize::mib(1));
    config.plugins.push(p);
    let gw = process::GatewayProcess::start(&config);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let sent = 20_000u64;
    rt.block_on(async {
        let nc = client(&server).await;
        // The first message holds the worker for a second while the rest
        // arrive; each of those is "0" padded to 1 KiB (no sleep).
        nc.publish("sleep.hold", "1000".into()).await.unwrap();
        let mut quick = b"0".to_vec();
        quick.resize(1024, b' ');
        let quick = bytes::Bytes::from(quick);
        for i in 1..sent {
            nc.publish(format!("sleep.{i}"), quick.clone())
                .await
                .unwrap();
        }
        nc.flush().await.unwrap();
    });

    // Every message is either handled or dropped, and the drops are many.
    let deadline = std::time::Instant::now() + WAIT;
    let b = loop {
        let status = gw.status().expect("status");
        let b = status["bindings"][0].clone();
        let (handled, dropped) = (b["handled"].as_u64(), b["dropped"].as_u64());
        if let (Some(h), Some(d)) = (handled, dropped)
            && h + d == sent
        {
            break b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "handled + dropped never reached {sent}: {b}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let dropped = b["dropped"].as_u64().unwrap();
    assert!(
        dropped > sent / 2,
        "a 1 MiB buffer cannot hold most of {sent} 1 KiB messages: {b}"
    );

    let (code, metrics) = gw.get("/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    let line = format!(
        "wasmgate_messages_dropped_total{{plugin=\"sleepy\",subject=\"sleep.>\"}} {dropped}"
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "/metrics has `{line}`:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("dropped"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let log = gw.log();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("messages dropped"))
        .collect();
    assert!(
        !warns.is_empty()
            && warns
                .iter()
                .all(|l| l.contains("sleepy") && l.contains("sleep.>")),
        "a WARN names the binding:\n{log}"
    );
    assert!(
        warns.len() <= 2,
        "the WARN is rate-limited (one at the first drop, at most one more for the rest): {warns:#?}"
    );
}
