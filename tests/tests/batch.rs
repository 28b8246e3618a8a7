//! Batches: a plugin built with the Rust SDK exports `batch-handler`, and the
//! gateway hands it a core binding's messages in one `handle-batch` call. One
//! bad message in a batch (a trap, a deadline, a refused publish, an error)
//! fails alone: the others are handled, their output goes out in order, and
//! the counters say what happened. `batch = false` turns batching off.

use std::time::Duration;

use futures::StreamExt;
use wasmgate_tests::*;

/// The plugin's `timeout`: what a looping message costs, twice (in its batch,
/// then alone).
const TIMEOUT: Duration = Duration::from_millis(300);

/// The kit's [`Fixture`] with `fb` (`faulty-batched`, built with the SDK) on
/// `b.>` (prefix `out`, `publish_allow = ["out.>"]`, tight timeout; batched
/// unless `batch` is false) and `plain` (`echo-cached`, built without the SDK:
/// it exports `handler` only) on `p.>` (prefix `out`).
async fn start(batch: bool) -> Fixture {
    let mut p = plugin("fb", "faulty-batched", &["b.>"], &[("prefix", "out")]);
    p.timeout = TIMEOUT;
    p.publish_allow = vec!["out.>".into()];
    p.batch = batch;
    let plain = plugin("plain", "echo-cached", &["p.>"], &[("prefix", "out")]);
    Fixture::start([p, plain]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_message_in_a_batch_fails_alone() {
    let f = start(true).await;
    let mut out = f.nc.subscribe("out.>").await.unwrap();
    let mut secret = f.nc.subscribe("secret.>").await.unwrap();
    f.nc.flush().await.unwrap();

    // The first message holds the worker while the rest queue up behind it,
    // so they reach the plugin as one batch with the bad ones in the middle.
    let mut sent = vec!["slow:200".to_string()];
    for i in 0..40 {
        sent.push(match i {
            7 => "trap".into(),
            15 => "loop".into(),
            21 => "retry".into(),
            25 => "reject".into(),
            30 => "forbidden".into(),
            33 => "bad-subject".into(),
            _ => format!("m{i}"),
        });
    }
    for (i, payload) in sent.iter().enumerate() {
        f.nc.publish(format!("b.{i}"), payload.clone().into())
            .await
            .unwrap();
    }
    f.nc.flush().await.unwrap();

    let good: Vec<(String, String)> = sent
        .iter()
        .enumerate()
        .filter(|(_, p)| p.starts_with('m') || p.starts_with("slow"))
        .map(|(i, p)| (format!("out.b.{i}"), p.clone()))
        .collect();
    let mut got = Vec::new();
    while got.len() < good.len() {
        let msg = tokio::time::timeout(WAIT, out.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {} outputs: {got:?}", got.len(), good.len()))
            .unwrap();
        got.push((msg.subject.to_string(), text(&msg)));
    }
    assert_eq!(got, good, "every good message's output, in order");

    let b = eventually(WAIT, "every message counted", || async {
        let b = f.binding("fb");
        (b.handled + b.retried + b.rejected + b.trapped == sent.len() as u64).then_some(b)
    })
    .await;
    assert_eq!(
        (b.handled, b.retried, b.rejected, b.trapped),
        (35, 1, 3, 2),
        "trap and loop trapped; reject, forbidden and bad-subject rejected"
    );
    assert!(
        b.batches_rerun >= 1,
        "the batch with the trap was re-run one message at a time"
    );
    let plugin = &f.gw.status().plugins[0];
    assert!(plugin.batched);
    assert_eq!(
        (plugin.publish_forbidden, plugin.publish_refused),
        (1, 2),
        "the host refused the forbidden publish and the invalid subject"
    );

    // Nothing reached the forbidden subject: a marker sent now is the first.
    assert_nothing_before_marker(&f.nc, &mut secret, "secret.marker").await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requesters_hear_why_in_a_batch() {
    let f = start(true).await;
    let reply = f.ask("b.ask", "hello").await;
    assert_eq!((error_kind(&reply), text(&reply)), (None, "hello".into()));

    let reply = f.ask("b.ask", "forbidden").await;
    assert_eq!(error_kind(&reply).as_deref(), Some("reject"));
    assert_eq!(text(&reply), "publish failed: forbidden: secret.b.ask");

    let reply = f.ask("b.ask", "bad-subject").await;
    assert_eq!(error_kind(&reply).as_deref(), Some("reject"));
    assert_eq!(
        text(&reply),
        "publish failed: invalid-subject: subject \"out.*\" uses a wildcard where a concrete subject is needed"
    );

    let reply = f.ask("b.ask", "trap").await;
    assert_eq!(error_kind(&reply).as_deref(), Some("trap"));
    // A panic aborts: the trap is wasm's `unreachable`.
    assert!(text(&reply).contains("unreachable"), "{}", text(&reply));

    let reply = f.ask("b.ask", "loop").await;
    assert_eq!(error_kind(&reply).as_deref(), Some("timeout"));

    let reply = f.ask("b.ask", "retry").await;
    assert_eq!(
        (error_kind(&reply).as_deref(), text(&reply).as_str()),
        (Some("retry"), "asked to retry")
    );
    // A fresh instance after the trap and the deadline.
    let reply = f.ask("b.ask", "after").await;
    assert_eq!((error_kind(&reply), text(&reply)), (None, "after".into()));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_false_calls_handle_per_message_with_the_same_results() {
    let f = start(false).await;
    let status = f.gw.status();
    assert_eq!(
        status
            .plugins
            .iter()
            .map(|p| (p.name.as_str(), p.batched))
            .collect::<Vec<_>>(),
        [("fb", false), ("plain", false)]
    );
    // The publish is refused by the import, at once, with the same text.
    let reply = f.ask("b.ask", "forbidden").await;
    assert_eq!(error_kind(&reply).as_deref(), Some("reject"));
    assert_eq!(text(&reply), "publish failed: forbidden: secret.b.ask");
    let reply = f.ask("b.ask", "trap").await;
    assert_eq!(error_kind(&reply).as_deref(), Some("trap"));
    let reply = f.ask("b.ask", "hello").await;
    assert_eq!(text(&reply), "hello");
    let b = f.binding("fb");
    assert_eq!(
        (b.handled, b.rejected, b.trapped, b.batches_rerun),
        (1, 1, 1, 0)
    );
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_plugins_with_the_batch_export_are_batched() {
    let f = start(true).await;
    let shown: Vec<_> =
        f.gw.status()
            .plugins
            .iter()
            .map(|p| (p.name.clone(), p.batched))
            .collect();
    assert_eq!(
        shown,
        [("fb".to_string(), true), ("plain".to_string(), false)]
    );
    // The unbatched plugin works as before.
    let mut out = f.nc.subscribe("out.p.>").await.unwrap();
    f.nc.flush().await.unwrap();
    f.nc.publish("p.1", "x".into()).await.unwrap();
    let msg = tokio::time::timeout(WAIT, out.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.subject.as_str(), "out.p.1");
    f.finish().await;
}

/// A JetStream binding batches `faulty-batched` and calls `handle` per
/// message for `jsprobe` (no batch export). In a batch, bad messages fail alone: the good ones are
/// handled once and acked, the trapped, retried and rejected ones end in the
/// dead-letter stream, and nothing is left unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_batches_settle_each_message_by_its_own_result() {
    use async_nats::jetstream;

    init_logs();
    let server = NatsServer::start();
    let js_table = |stream: &str| {
        let text = format!(
            "stream = \"{stream}\"\nconsumer = \"gw\"\ncreate = true\nack_wait = \"3s\"\n\
             backoff = [\"100ms\"]\nmax_deliver = 2\ndead_letter = \"dlq.{stream}\"\n"
        );
        toml::from_str::<wasmgate::config::JetStreamConfig>(&text).unwrap()
    };
    let mut config = test_config(&[server.url()]);
    let prefix = &[("prefix", "out")];
    let mut fb = jetstream_plugin("fb", "faulty-batched", "b.>", prefix, js_table("B"));
    fb.timeout = TIMEOUT;
    config.plugins.push(fb);
    let probe = jetstream_plugin("probe", "jsprobe", "p.>", prefix, js_table("P"));
    config.plugins.push(probe);
    let gw = Running::start(config).await;

    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    dead_letter_stream(&js).await;
    let mut out = nc.subscribe("out.>").await.unwrap();
    let mut dlq = nc.subscribe("dlq.>").await.unwrap();
    nc.flush().await.unwrap();

    // The slow first message holds the worker while the rest queue up.
    let mut sent = vec!["slow:200".to_string()];
    for i in 0..30 {
        sent.push(match i {
            5 => "trap".into(),
            12 => "retry".into(),
            20 => "reject".into(),
            _ => format!("m{i}"),
        });
    }
    for (i, payload) in sent.iter().enumerate() {
        js_publish(&js, format!("b.{i}"), payload).await;
    }
    js_publish(&js, "p.1".into(), "x").await;

    let bad = ["trap", "retry", "reject"];
    let mut want: Vec<String> = sent
        .iter()
        .enumerate()
        .filter(|(_, p)| !bad.contains(&p.as_str()))
        .map(|(i, _)| format!("out.b.{i}"))
        .collect();
    want.push("out.p.1".into());
    let mut got = Vec::new();
    while got.len() < want.len() {
        let msg = tokio::time::timeout(WAIT, out.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {} outputs: {got:?}", got.len(), want.len()))
            .unwrap();
        got.push(msg.subject.to_string());
    }
    got.sort();
    want.sort();
    assert_eq!(got, want, "each good message handled once");

    let mut dead = Vec::new();
    while dead.len() < bad.len() {
        let msg = tokio::time::timeout(WAIT, dlq.next())
            .await
            .unwrap_or_else(|_| panic!("only {dead:?} dead-lettered"))
            .unwrap();
        dead.push(text(&msg));
    }
    dead.sort();
    assert_eq!(dead, ["reject", "retry", "trap"]);

    let status = eventually(WAIT, "every message settled", || async {
        let s = gw.status();
        (s.bindings[0].dead_lettered == 3 && s.bindings[1].handled == 1).then_some(s)
    })
    .await;
    let (fb, probe) = (&status.bindings[0], &status.bindings[1]);
    assert_eq!(
        (fb.handled, fb.rejected, fb.dead_lettered),
        (28, 1, 3),
        "{fb:?}"
    );
    assert!(fb.batches >= 1 && fb.batches_rerun >= 1, "{fb:?}");
    assert_eq!(probe.batches, 0, "a plugin without a batch export");
    assert_eq!(
        status
            .plugins
            .iter()
            .map(|p| (p.batched, p.reads_delivery, p.jetstream_batched))
            .collect::<Vec<_>>(),
        [(true, false, true), (false, true, false)]
    );
    assert_eq!(
        ack_pending(&js, "B", "gw").await,
        0,
        "nothing left unacknowledged"
    );
    gw.stop().await;
}

/// A plugin built against WIT 0.1.4 that reads `delivery` (`jsprobe-batched`,
/// on the Rust SDK) is batched on a JetStream binding too, and each message
/// of a batch sees its own metadata: its stream sequence, and a delivery
/// count of 2 after the retry it asked for, 1 otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_batches_carry_each_messages_delivery_metadata() {
    use async_nats::jetstream::{self, stream};

    init_logs();
    let server = NatsServer::start();
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    js.create_stream(stream::Config {
        name: "P".into(),
        subjects: vec!["p.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    // Stored before the gateway starts, so its first pulls are full batches.
    let n = 40;
    let retried: Vec<usize> = (0..n).filter(|i| i % 7 == 3).collect();
    for i in 0..n {
        let payload = if retried.contains(&i) {
            "retry-once"
        } else {
            "x"
        };
        js_publish(&js, format!("p.{i}"), payload).await;
    }
    let mut out = nc.subscribe("out.>").await.unwrap();
    nc.flush().await.unwrap();

    let mut config = test_config(&[server.url()]);
    let js_table = toml::from_str(
        "stream = \"P\"\nconsumer = \"gw\"\ncreate = true\nack_wait = \"3s\"\nbackoff = [\"100ms\"]\nmax_deliver = 3\n",
    )
    .unwrap();
    let probe = jetstream_plugin(
        "probe",
        "jsprobe-batched",
        "p.>",
        &[("prefix", "out")],
        js_table,
    );
    config.plugins.push(probe);
    let gw = Running::start(config).await;

    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < n {
        let msg = tokio::time::timeout(WAIT, out.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} outputs", seen.len()))
            .unwrap();
        let h = msg.headers.expect("delivery headers");
        let i: usize = msg.subject.strip_prefix("out.p.").unwrap().parse().unwrap();
        let got = (
            h.get("Js-Stream").unwrap().to_string(),
            h.get("Js-Stream-Seq").unwrap().to_string(),
            h.get("Js-Delivered").unwrap().to_string(),
        );
        assert!(seen.insert(i, got).is_none(), "p.{i} handled twice");
    }
    for (i, (stream, seq, delivered)) in &seen {
        let want_delivered = if retried.contains(i) { "2" } else { "1" };
        assert_eq!(
            (stream.as_str(), seq.as_str(), delivered.as_str()),
            ("P", (i + 1).to_string().as_str(), want_delivered),
            "p.{i}"
        );
    }

    let status = eventually(WAIT, "every message settled", || async {
        let s = gw.status();
        (s.bindings[0].handled == n as u64).then_some(s)
    })
    .await;
    let b = &status.bindings[0];
    assert_eq!(
        (b.retried, b.rejected, b.trapped, b.batches_rerun),
        (retried.len() as u64, 0, 0, 0),
        "{b:?}"
    );
    assert!(
        b.batches >= 1 && b.batches < (n + retried.len()) as u64 / 2,
        "handled in batches, not one by one: {b:?}"
    );
    let p = &status.plugins[0];
    assert_eq!(
        (p.batched, p.reads_delivery, p.jetstream_batched),
        (true, true, true)
    );
    assert_eq!(ack_pending(&js, "P", "gw").await, 0, "everything acked");
    gw.stop().await;
}
