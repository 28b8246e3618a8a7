//! The latency histograms in `/metrics`: every message handled is one
//! queue-wait observation, every call into the plugin one handler-duration
//! observation, every JetStream message settled one settle-delay
//! observation; `[telemetry] histograms = false` leaves them out.

use std::collections::HashMap;

use futures::StreamExt;
use wasmgate_tests::*;

async fn metrics(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("/metrics body")
}

/// `name{labels} value` lines of the exposition, keyed by `name{labels}`.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn config(server: &NatsServer) -> wasmgate::Config {
    let mut config = test_config(&[server.url()]);
    // `uppercase` exports batch-handler: one call per batch. `jsprobe`
    // does not: one call per message.
    config.plugins.push(plugin(
        "upper",
        "uppercase",
        &["in.>"],
        &[("prefix", "out")],
    ));
    config.plugins.push(jetstream_plugin(
        "probe",
        "jsprobe",
        "js.>",
        &[("prefix", "jsout")],
        js_config("LAT", "lat"),
    ));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_and_call_is_one_observation() {
    init_logs();
    let server = NatsServer::start();
    let gw = Running::start(config(&server)).await;
    let nc = client(&server).await;
    let mut out = nc.subscribe("out.>").await.unwrap();
    let mut jsout = nc.subscribe("jsout.>").await.unwrap();
    nc.flush().await.unwrap();
    let js = async_nats::jetstream::new(nc.clone());
    for i in 0..40 {
        nc.publish(format!("in.{i}"), "x".into()).await.unwrap();
    }
    for i in 0..10 {
        js.publish(format!("js.{i}"), "y".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    for _ in 0..40 {
        tokio::time::timeout(WAIT, out.next())
            .await
            .expect("core output")
            .unwrap();
    }
    for _ in 0..10 {
        tokio::time::timeout(WAIT, jsout.next())
            .await
            .expect("JetStream output")
            .unwrap();
    }

    let addr = gw.http_addr().unwrap();
    let core = r#"plugin="upper",subject="in.>""#;
    let jet = r#"plugin="probe",subject="js.>""#;
    // Acks go out after the output: wait for the ten settlements.
    let text = eventually(WAIT, "ten settle-delay observations", || async {
        let text = metrics(addr).await;
        let m = samples(&text);
        (m.get(&format!(
            "wasmgate_jetstream_settle_delay_seconds_count{{{jet}}}"
        )) == Some(&10.0))
        .then_some(text)
    })
    .await;
    let m = samples(&text);
    let status = gw.status();
    let upper = &status.bindings[0];
    assert_eq!(upper.counts.handled, 40);
    assert!(upper.counts.batches > 0, "uppercase is called in batches");

    let get = |k: String| *m.get(&k).unwrap_or_else(|| panic!("no {k} in /metrics"));
    // Core: one wait per message, one duration per handle-batch call.
    assert_eq!(
        get(format!("wasmgate_queue_wait_seconds_count{{{core}}}")),
        40.0
    );
    assert_eq!(
        get(format!(
            "wasmgate_queue_wait_seconds_bucket{{le=\"+Inf\",{core}}}"
        )),
        40.0
    );
    assert_eq!(
        get(format!("wasmgate_handler_duration_seconds_count{{{core}}}")),
        upper.counts.batches as f64,
        "one observation per handle-batch call"
    );
    assert!(get(format!("wasmgate_handler_duration_seconds_sum{{{core}}}")) > 0.0);
    // JetStream, one handle per message: ten of each.
    assert_eq!(
        get(format!("wasmgate_queue_wait_seconds_count{{{jet}}}")),
        10.0
    );
    assert_eq!(
        get(format!("wasmgate_handler_duration_seconds_count{{{jet}}}")),
        10.0
    );
    // 21 buckets (the last +Inf), cumulative, ending at the count.
    let labels = format!(",{jet}}} ");
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with("wasmgate_handler_duration_seconds_bucket{le=") && l.contains(&labels)
        })
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 21, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&10.0));
    // A core binding has no settle delay.
    assert!(
        !m.contains_key(&format!(
            "wasmgate_jetstream_settle_delay_seconds_count{{{core}}}"
        )),
        "a core binding settles nothing"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_off_leaves_them_out() {
    init_logs();
    let server = NatsServer::start();
    let mut config = config(&server);
    config.telemetry.histograms = false;
    let gw = Running::start(config).await;
    let nc = client(&server).await;
    let reply = tokio::time::timeout(WAIT, nc.request("in.req", "ping".into()))
        .await
        .expect("reply in time")
        .unwrap();
    assert_eq!(reply.payload.as_ref(), b"PING");
    let text = metrics(gw.http_addr().unwrap()).await;
    assert!(
        text.contains("wasmgate_messages_total{plugin=\"upper\""),
        "{text}"
    );
    for name in [
        "wasmgate_queue_wait_seconds",
        "wasmgate_handler_duration_seconds",
        "wasmgate_jetstream_settle_delay_seconds",
    ] {
        assert!(!text.contains(name), "{name} is off:\n{text}");
    }
    gw.stop().await;
}
