//! JetStream consume-and-ack throughput: a stream preloaded with N messages,
//! then either the gateway (a JetStream binding with `create = true` and the
//! `echo` plugin) or a native async-nats pull consumer with the same consumer
//! settings drains it: republish the payload to `out.<subject>`, then ack.
//! A separate process counts the outputs; throughput is taken between its
//! first and last output, so start-up (plugin compile, consumer creation) is
//! not in it. Runs alternate G,N / N,G after a warm-up round that is not
//! recorded; every run has its own stream.
//!
//! With `outputs_stream` (the `jetstream-ack` section), a stream captures
//! the outputs: the gateway publishes them as JetStream publishes and acks
//! each input after its output's PubAck (`publish_ack = "auto"`); the
//! native program does the same with a window of PubAcks in flight, acking
//! each input when its output's PubAck arrives, and gives each output the
//! `Nats-Msg-Id` the gateway gives it (`<stream>:<input sequence>:0`), so
//! that the output stream's duplicate tracking costs the server the same on
//! both sides (before 2026-12-08 the native side sent none).

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmgate::Gateway;
use wasmgate::config::{JetStreamConfig, Storage};
use wasmgate_tests::{NatsServer, plugin};

use crate::child::Child;
use crate::core::Kind;
use crate::stats::{self, Sample};

pub struct Params {
    pub messages: u64,
    pub size: usize,
    pub runs: usize,
    /// The gateway's plugin: `echo`, or e.g. `jsprobe` against
    /// `jsprobe-batched` to see what batches are worth to a plugin that
    /// reads delivery metadata.
    pub plugin: String,
    /// A stream captures the outputs, and inputs are acked after their PubAcks.
    pub outputs_stream: bool,
}

/// The native program's PubAcks in flight when outputs go to a stream.
const NATIVE_WINDOW: usize = 4096;

fn js_config(stream: &str) -> JetStreamConfig {
    let text = format!("stream = \"{stream}\"\nconsumer = \"bench\"\n");
    let mut c: JetStreamConfig = toml::from_str(&text).expect("minimal JetStream table parses");
    c.create = true;
    c.storage = Storage::Memory;
    c
}

/// The consumer the gateway declares for `js_config` (see `JsBinding::consumer_config`).
fn consumer_config(subject: &str, c: &JetStreamConfig) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(c.consumer.clone()),
        filter_subject: subject.to_string(),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: c.ack_wait,
        max_deliver: i64::from(c.max_deliver),
        max_ack_pending: i64::from(c.max_ack_pending),
        ..Default::default()
    }
}

async fn preload(
    js: &jetstream::Context,
    name: &str,
    subject: &str,
    n: u64,
    size: usize,
) -> anyhow::Result<f64> {
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![subject.to_string()],
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let target = subject.trim_end_matches(".>").to_string() + ".m";
    let start = std::time::Instant::now();
    let mut window = VecDeque::new();
    for _ in 0..n {
        window.push_back(js.publish(target.clone(), payload.clone()).await?);
        if window.len() >= 4096 {
            window.pop_front().unwrap().await?;
        }
    }
    while let Some(ack) = window.pop_front() {
        ack.await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

pub async fn run(server: &NatsServer, p: &Params) -> anyhow::Result<Value> {
    let nc = async_nats::connect(server.url()).await?;
    let js = jetstream::new(nc.clone());
    let mut rates = [Vec::new(), Vec::new()];
    let mut trials = Vec::new();
    let mut k = 0;
    for stats::Round {
        warmup,
        run,
        messages,
    } in stats::rounds(p.runs, p.messages)
    {
        let order = if run % 2 == 0 {
            [Kind::Gateway, Kind::Native]
        } else {
            [Kind::Native, Kind::Gateway]
        };
        for kind in order {
            k += 1;
            let name = format!("BENCH{k}");
            let subject = format!("js{k}.>");
            let preload_rate = preload(&js, &name, &subject, messages, p.size).await?;
            if p.outputs_stream {
                js.create_stream(stream::Config {
                    name: format!("{name}OUT"),
                    subjects: vec![format!("out.js{k}.>")],
                    storage: stream::StorageType::Memory,
                    ..Default::default()
                })
                .await?;
            }
            let args = vec![
                "--url".into(),
                server.url(),
                "--expect".into(),
                format!("out.js{k}.>"),
                "--expect-n".into(),
                messages.to_string(),
                "--idle-ms".into(),
                "5000".into(),
            ];
            let counter = Child::spawn(&args).await?;
            let cfg = js_config(&name);
            let mut mean_batch = f64::NAN;
            let report = match kind {
                Kind::Gateway | Kind::GatewayUnbatched => {
                    let mut config = wasmgate::Config::default();
                    config.nats.servers = vec![server.url()];
                    config.http.listen = String::new();
                    let mut pl = plugin(&p.plugin, &p.plugin, &[&subject], &[("prefix", "out")]);
                    pl.bindings[0].jetstream = Some(cfg.clone());
                    config.plugins.push(pl);
                    let shutdown = CancellationToken::new();
                    let gw = Gateway::start(config, shutdown.clone()).await?;
                    let report = counter.report().await?;
                    let b = &gw.status().bindings[0];
                    if b.batches > 0 {
                        mean_batch = b.handled as f64 / b.batches as f64;
                    }
                    shutdown.cancel();
                    gw.wait().await?;
                    report
                }
                Kind::Native => {
                    let client = async_nats::connect(server.url()).await?;
                    let js2 = jetstream::new(client.clone());
                    let stream = js2.get_stream(&name).await?;
                    let consumer: consumer::PullConsumer = stream
                        .create_consumer(consumer_config(&subject, &cfg))
                        .await?;
                    let batch = cfg.pull_batch.min(cfg.max_ack_pending as usize).max(1);
                    let mut messages = consumer
                        .stream()
                        .max_messages_per_batch(batch)
                        .heartbeat(cfg.heartbeat)
                        .expires(cfg.heartbeat * 6)
                        .messages()
                        .await?;
                    let c = client.clone();
                    let with_acks = p.outputs_stream;
                    let stream_name = name.clone();
                    // PubAcks in flight, awaited in order by a second task that
                    // acks each input when its output is stored.
                    let (window, mut confirmed) = tokio::sync::mpsc::channel::<(
                        jetstream::context::PublishAckFuture,
                        jetstream::Message,
                    )>(NATIVE_WINDOW);
                    let acker = tokio::spawn(async move {
                        while let Some((ack, m)) = confirmed.recv().await {
                            if ack.await.is_ok() {
                                let _ = m.ack().await;
                            }
                        }
                    });
                    let task = tokio::spawn(async move {
                        while let Some(Ok(m)) = messages.next().await {
                            let target = crate::core::target("out", &m.subject);
                            if with_acks {
                                // The same id the gateway gives an output
                                // (stream, input sequence, publish index), so
                                // the output stream does the same dedup work.
                                let seq = m.info().map_or(0, |i| i.stream_sequence);
                                let publish = jetstream::message::PublishMessage::build()
                                    .payload(m.payload.clone())
                                    .message_id(format!("{stream_name}:{seq}:0"));
                                if let Ok(ack) = js2.send_publish(target, publish).await {
                                    let _ = window.send((ack, m)).await;
                                }
                            } else {
                                let _ = c.publish(target, m.payload.clone()).await;
                                let _ = m.ack().await;
                            }
                        }
                    });
                    let report = counter.report().await?;
                    task.abort();
                    acker.abort();
                    report
                }
            };
            // Everything acknowledged?
            let mut consumer: consumer::PullConsumer = js
                .get_stream(&name)
                .await?
                .get_consumer("bench")
                .await
                .map_err(|e| anyhow::anyhow!("consumer: {e}"))?;
            let mut acked = false;
            for _ in 0..50 {
                let info = consumer.info().await?;
                if info.num_ack_pending == 0 && info.num_pending == 0 {
                    acked = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            js.delete_stream(&name).await?;
            if p.outputs_stream {
                js.delete_stream(format!("{name}OUT")).await?;
            }
            let rate =
                (report.received.saturating_sub(1)) as f64 / (report.last_secs - report.first_secs);
            if warmup {
                eprintln!(
                    "  jetstream {:7} warm-up: {rate:>8.0} msg/s (not recorded)",
                    kind.name()
                );
                continue;
            }
            eprintln!(
                "  jetstream {:7} run {}: {:>8.0} msg/s, mean batch {mean_batch:.1} ({} of {} republished, all acked: {acked}; preload {:.0} msg/s)",
                kind.name(),
                run + 1,
                rate,
                report.received,
                p.messages,
                preload_rate
            );
            rates[(kind == Kind::Native) as usize].push(rate);
            trials.push(json!({
                "kind": kind.name(),
                "run": run + 1,
                "throughput_msgs_per_sec": rate,
                "received": report.received,
                "all_acked": acked,
                "preload_msgs_per_sec": preload_rate,
                "mean_batch": mean_batch,
            }));
        }
    }
    let gateway = Sample::new("msg/s", rates[0].clone());
    let native = Sample::new("msg/s", rates[1].clone());
    let ratio = gateway.median / native.median;
    let pair_ratios: Vec<f64> = rates[0].iter().zip(&rates[1]).map(|(g, n)| g / n).collect();
    eprintln!("  jetstream gateway: {}", gateway.show());
    eprintln!("  jetstream native:  {}", native.show());
    let label = if p.outputs_stream {
        "jetstream-ack"
    } else {
        "jetstream"
    };
    eprintln!("  {label} ratio gateway/native: {ratio:.3} (target >= 0.85)");
    eprintln!(
        "  jetstream ratio of each pair: {}",
        Sample::new("ratio", pair_ratios.clone()).show()
    );
    let c = js_config("X");
    Ok(json!({
        "messages": p.messages,
        "payload_bytes": p.size,
        "plugin": p.plugin,
        "outputs_stream": p.outputs_stream,
        "storage": "memory",
        "max_ack_pending": c.max_ack_pending,
        "pull_batch": c.pull_batch,
        "gateway": gateway,
        "native": native,
        "ratio": ratio,
        "pair_ratios": Sample::new("ratio", pair_ratios),
        "target_ratio": 0.85,
        "trials": trials,
    }))
}
