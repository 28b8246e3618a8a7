//! What exporting traces costs: the in-process gateway with its `message`
//! spans exported over OTLP (the binary's own layer, [`wasmgate::otel`]) to
//! a receiver in this process that only counts them, against the same
//! gateway with export off, alternating in one run after a warm-up round:
//!
//! - request-reply latency with one request in flight (the latency
//!   section's requester and `uppercase` binding);
//! - core throughput (the core section's load generator and `echo` binding,
//!   every message of a run fitting the buffers).
//!
//! It runs in a process of its own (`bench traces`, spawned by `bench run`),
//! whose subscriber has the exporting layer: the other sections run without
//! one. Export is switched by a filter on that layer, read per span:
//! off, a `message` span is disabled as when nothing exports. The SDK's
//! defaults apply (every span sampled, a 2,048-span queue, batches of 512
//! every 5 s), so under a flood the queue overflows and spans are dropped;
//! the report says how many arrived.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::DynFilterFn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use wasmgate::Gateway;
use wasmgate_tests::otlp::OtlpReceiver;
use wasmgate_tests::{NatsServer, free_port};

use crate::child::Child;
use crate::stats::{self, Sample, median};

struct Params {
    /// Requests per latency run, one in flight.
    requests: u64,
    /// Messages per throughput run.
    messages: u64,
    runs: usize,
    size: usize,
}

/// The exporter of this process, and the switch that turns its spans on.
struct Export {
    receiver: OtlpReceiver,
    otlp: wasmgate::otel::Otlp,
    on: Arc<AtomicBool>,
}

impl Export {
    /// Install this process's subscriber: the bench's log lines on stderr
    /// (`RUST_LOG`, default `error`) and, switched off, the gateway's span
    /// export to a counting receiver.
    async fn install() -> anyhow::Result<Export> {
        let receiver = OtlpReceiver::counting().await;
        let config = wasmgate::config::TelemetryConfig {
            otlp_endpoint: receiver.url(),
            ..Default::default()
        };
        let otlp = wasmgate::otel::Otlp::from_config(&config)?
            .expect("an endpoint is given, so export is on");
        let on = Arc::new(AtomicBool::new(false));
        let switch = on.clone();
        let exporting = otlp.layer().with_filter(
            DynFilterFn::new(move |_, _| switch.load(Ordering::Relaxed))
                .with_callsite_filter(|_| tracing::subscriber::Interest::sometimes()),
        );
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter);
        tracing_subscriber::registry()
            .with(logs)
            .with(exporting)
            .try_init()?;
        Ok(Export { receiver, otlp, on })
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Send what is queued, so the next run starts with an empty queue.
    fn flush(&self) {
        self.otlp.flush();
    }
}

/// `bench run`'s side: run `bench traces` twice, every span sampled (the
/// SDK's default) and one trace in a hundred
/// (`OTEL_TRACES_SAMPLER=traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.01`),
/// and read their results.
pub async fn spawn(quick: bool) -> anyhow::Result<Value> {
    let mut results = serde_json::Map::new();
    for (name, sampler) in [("every_span", None), ("one_in_100", Some("0.01"))] {
        eprintln!("  traces: sampled {name}");
        results.insert(name.into(), spawn_one(quick, sampler).await?);
    }
    Ok(Value::Object(results))
}

async fn spawn_one(quick: bool, ratio: Option<&str>) -> anyhow::Result<Value> {
    use anyhow::Context;
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("traces").kill_on_drop(true);
    if quick {
        cmd.arg("--quick");
    }
    cmd.env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_TRACES_SAMPLER_ARG");
    if let Some(ratio) = ratio {
        cmd.env("OTEL_TRACES_SAMPLER", "traceidratio")
            .env("OTEL_TRACES_SAMPLER_ARG", ratio);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("running bench traces")?;
    let out = child.wait_with_output().await?;
    anyhow::ensure!(out.status.success(), "bench traces failed: {}", out.status);
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `bench traces`: its own server, subscriber and runs; the results as
/// JSON on stdout.
pub async fn main(quick: bool) -> anyhow::Result<()> {
    let export = Export::install().await?;
    let server = NatsServer::start();
    let p = Params {
        requests: if quick { 1_000 } else { 5_000 },
        messages: if quick { 50_000 } else { 300_000 },
        runs: if quick { 1 } else { 5 },
        size: 128,
    };
    let results = run(&server, &export, &p).await?;
    println!("{}", serde_json::to_string(&results)?);
    Ok(())
}

fn mode(on: bool) -> &'static str {
    if on { "exported" } else { "off" }
}

async fn run(server: &NatsServer, export: &Export, p: &Params) -> anyhow::Result<Value> {
    let mut p50 = [Vec::new(), Vec::new()];
    let mut p99 = [Vec::new(), Vec::new()];
    let mut rates = [Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new()];
    let mut exported = Vec::new();
    let mut k = 0;
    for round in 0..=p.runs {
        let warmup = round == 0;
        let mut order = [false, true];
        order.rotate_left(round % 2);
        for on in order {
            k += 1;
            export.set(on);
            let run = if warmup {
                "warm-up".to_string()
            } else {
                format!("run {round}")
            };

            // Latency, one request in flight.
            let http = format!("127.0.0.1:{}", free_port());
            let shutdown = CancellationToken::new();
            let gw = Gateway::start(
                crate::latency::gateway_config(server, &http),
                shutdown.clone(),
            )
            .await?;
            gw.ready(Duration::from_secs(20)).await?;
            let args = vec![
                "--url".into(),
                server.url(),
                "--subject".into(),
                format!("req.t{k}"),
                "--count".into(),
                (if warmup { p.requests / 5 } else { p.requests }).to_string(),
                "--rate".into(),
                "0".into(),
                "--size".into(),
                p.size.to_string(),
            ];
            let r = crate::latency::requester(&args).await;
            shutdown.cancel();
            gw.wait().await?;
            let r = r?;
            export.flush();

            // Throughput.
            let messages = if warmup { p.messages / 5 } else { p.messages };
            let capacity = (messages as usize + 65_536).next_power_of_two();
            let subject = format!("in.t{k}");
            let args = crate::child::throughput_args(server.url(), &subject, messages, p.size);
            let shutdown = CancellationToken::new();
            let gw = Gateway::start(
                crate::core::gateway_config(server, capacity, true),
                shutdown.clone(),
            )
            .await?;
            gw.ready(Duration::from_secs(20)).await?;
            let spans_before = export.receiver.count();
            let cpu_before = stats::cpu_secs("self");
            let report = Child::spawn(&args).await?.report().await?;
            let cpu_after = stats::cpu_secs("self");
            shutdown.cancel();
            gw.wait().await?;
            export.flush();
            let spans = export.receiver.count() - spans_before;
            let rate = report.received as f64 / report.last_secs;
            let cpu_us = match (cpu_before, cpu_after) {
                (Some(a), Some(b)) => (b - a) * 1e6 / report.received.max(1) as f64,
                _ => f64::NAN,
            };
            eprintln!(
                "  traces {:8} {run}: latency p50 {:.0} µs, p99 {:.0} µs; throughput {rate:.0} msg/s, {cpu_us:.2} µs CPU/msg, {} of {messages} outputs; {spans} spans exported",
                mode(on),
                r.p50_us,
                r.p99_us,
                report.received,
            );
            if !warmup {
                p50[on as usize].push(r.p50_us);
                p99[on as usize].push(r.p99_us);
                rates[on as usize].push(rate);
                cpu[on as usize].push(cpu_us);
                if on {
                    exported.push(spans as f64 / messages as f64);
                }
            }
        }
    }
    export.set(false);
    let pairs = |v: &[Vec<f64>; 2], f: fn(f64, f64) -> f64| -> Vec<f64> {
        v[1].iter()
            .zip(&v[0])
            .map(|(on, off)| f(*on, *off))
            .collect()
    };
    let p50_added = median(&pairs(&p50, |on, off| on - off));
    let p99_ratio = median(&pairs(&p99, |on, off| on / off));
    let rate_ratio = median(&pairs(&rates, |on, off| on / off));
    let cpu_added = median(&pairs(&cpu, |on, off| on - off));
    eprintln!(
        "  traces: exporting adds {p50_added:.1} µs at p50 (p99 x{p99_ratio:.2}) to a lone request, \
         keeps {rate_ratio:.3} of the throughput and adds {cpu_added:.2} µs CPU per message; \
         {:.1} % of a flood's messages had a span reach the collector",
        median(&exported) * 100.0
    );
    Ok(json!({
        "requests_per_run": p.requests,
        "messages_per_run": p.messages,
        "latency_p50_us": {
            "off": Sample::new("µs", p50[0].clone()),
            "exported": Sample::new("µs", p50[1].clone()),
        },
        "latency_p99_us": {
            "off": Sample::new("µs", p99[0].clone()),
            "exported": Sample::new("µs", p99[1].clone()),
        },
        "throughput_msgs_per_sec": {
            "off": Sample::new("msg/s", rates[0].clone()),
            "exported": Sample::new("msg/s", rates[1].clone()),
        },
        "cpu_us_per_msg": {
            "off": Sample::new("µs", cpu[0].clone()),
            "exported": Sample::new("µs", cpu[1].clone()),
        },
        "p50_added_us": p50_added,
        "p99_ratio": p99_ratio,
        "throughput_ratio": rate_ratio,
        "cpu_added_us_per_msg": cpu_added,
        "flood_spans_exported_fraction": Sample::new("fraction", exported),
    }))
}
