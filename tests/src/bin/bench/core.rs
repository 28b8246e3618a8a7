//! Core NATS throughput: the gateway (in this process, `echo` on `in.>`,
//! batched: one `handle-batch` call per batch) against a native async-nats
//! subscriber doing the same work (receive, republish the payload to
//! `out.<subject>`), and the same gateway with `batch = false` (one `handle`
//! call per message), with the publisher and the output counter in a
//! separate process. The order of the three rotates every run, after a
//! warm-up round that is not recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmgate::Gateway;
use wasmgate_tests::{NatsServer, plugin};

use crate::child::{self, Child};
use crate::stats::{self, Sample};

pub struct Params {
    pub messages: u64,
    pub size: usize,
    pub runs: usize,
    pub capacity: usize,
    /// Only this kind's runs (for profiling one path).
    pub only_kind: Option<Kind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gateway,
    Native,
    /// The gateway with `batch = false`: one `handle` call per message.
    GatewayUnbatched,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "gateway",
            Kind::Native => "native",
            Kind::GatewayUnbatched => "gateway-unbatched",
        }
    }
}

/// `<prefix>.<subject>`, built the way the `echo` plugin builds it (one
/// allocation of the exact size; `format!` costs two and a grow, ~30 ns
/// natively and ~100 ns in WebAssembly), so both sides do the same work.
pub fn target(prefix: &str, subject: &str) -> String {
    let mut target = String::with_capacity(prefix.len() + 1 + subject.len());
    target.push_str(prefix);
    target.push('.');
    target.push_str(subject);
    target
}

/// The native republisher: one task, receive and publish.
pub struct Native {
    client: async_nats::Client,
    task: tokio::task::JoinHandle<()>,
    pub slow: Arc<AtomicU64>,
    pub handled: Arc<AtomicU64>,
}

impl Native {
    pub async fn start(url: &str, capacity: usize, filter: &str) -> anyhow::Result<Native> {
        let slow = Arc::new(AtomicU64::new(0));
        let handled = Arc::new(AtomicU64::new(0));
        let client = child::connect(url, capacity, slow.clone()).await?;
        let mut sub = client.subscribe(filter.to_string()).await?;
        let c = client.clone();
        let h = handled.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let _ = c.publish(target("out", &m.subject), m.payload).await;
                h.fetch_add(1, Ordering::Relaxed);
            }
        });
        child::sync_with_server(&client).await?;
        Ok(Native {
            client,
            task,
            slow,
            handled,
        })
    }

    pub async fn stop(self) {
        let _ = self.client.flush().await;
        self.task.abort();
    }
}

pub fn gateway_config(server: &NatsServer, capacity: usize, batch: bool) -> wasmgate::Config {
    let mut config = wasmgate::Config::default();
    config.nats.servers = vec![server.url()];
    config.nats.subscription_capacity = capacity;
    // The binding's buffer holds the whole run too (a message counts its
    // length plus 256 bytes), as the native side's client buffer does.
    let whole_run = wasmgate::config::ByteSize::b(capacity as u64 * 512);
    config.nats.binding_buffer = whole_run;
    config.nats.buffer_limit = whole_run;
    config.http.listen = String::new();
    let mut echo = plugin("echo", "echo", &["in.>"], &[("prefix", "out")]);
    echo.batch = batch;
    config.plugins.push(echo);
    config
}

pub async fn run(server: &NatsServer, p: &Params) -> anyhow::Result<Value> {
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
    let mut trials = Vec::new();
    let mut k = 0;
    // The warm-up matters here: the first run in a process was always the
    // gateway's, and always its slowest.
    for stats::Round {
        warmup,
        run,
        messages,
    } in stats::rounds(p.runs, p.messages)
    {
        // Rotate the order so that no kind always runs first or last.
        let mut order = [Kind::Gateway, Kind::Native, Kind::GatewayUnbatched];
        order.rotate_left(run % 3);
        for kind in order {
            if p.only_kind.is_some_and(|only| only != kind) {
                continue;
            }
            k += 1;
            let subject = format!("in.t{k}");
            let args = crate::child::throughput_args(server.url(), &subject, messages, p.size);
            let server_pid = server.process_id().map(|p| p.to_string());
            let cpu_before = (
                stats::cpu_secs("self"),
                server_pid.as_deref().and_then(stats::cpu_secs),
            );
            let mut batches = 0;
            let (report, slow_sut, handled) = match kind {
                Kind::Gateway | Kind::GatewayUnbatched => {
                    let batch = kind == Kind::Gateway;
                    let shutdown = CancellationToken::new();
                    let gw =
                        Gateway::start(gateway_config(server, p.capacity, batch), shutdown.clone())
                            .await?;
                    gw.ready(Duration::from_secs(20)).await?;
                    let report = Child::spawn(&args).await?.report().await?;
                    let status = gw.status();
                    batches = status.bindings[0].batches;
                    shutdown.cancel();
                    gw.wait().await?;
                    (
                        report,
                        status.slow_consumer_events,
                        status.bindings[0].handled,
                    )
                }
                Kind::Native => {
                    let native = Native::start(&server.url(), p.capacity, "in.>").await?;
                    let report = Child::spawn(&args).await?.report().await?;
                    let (slow, handled) = (
                        native.slow.load(Ordering::Relaxed),
                        native.handled.load(Ordering::Relaxed),
                    );
                    native.stop().await;
                    (report, slow, handled)
                }
            };
            // CPU of this process (the system under test: gateway or native
            // program; the load generator is another process) and of the
            // server over the run, per message.
            let cpu_after = (
                stats::cpu_secs("self"),
                server_pid.as_deref().and_then(stats::cpu_secs),
            );
            let per_msg = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => (b - a) * 1e6 / report.received.max(1) as f64,
                _ => f64::NAN,
            };
            let sut_cpu_us = per_msg(cpu_before.0, cpu_after.0);
            let server_cpu_us = per_msg(cpu_before.1, cpu_after.1);
            let rate = report.received as f64 / report.last_secs;
            let publish_rate = report.published as f64 / report.publish_secs;
            if warmup {
                eprintln!(
                    "  core {:7} warm-up: {rate:>9.0} msg/s out, CPU {sut_cpu_us:.2} µs/msg (not recorded)",
                    kind.name()
                );
                continue;
            }
            cpu[kind as usize].push(sut_cpu_us);
            eprintln!(
                "  core {:7} run {}: {:>9.0} msg/s out, CPU {:.2} µs/msg ({:.2} in nats-server), mean batch {:.1} ({} of {} received, publisher {:.0} msg/s, slow-consumer events: SUT {}, counter {})",
                kind.name(),
                run + 1,
                rate,
                sut_cpu_us,
                server_cpu_us,
                if batches > 0 {
                    handled as f64 / batches as f64
                } else {
                    f64::NAN
                },
                report.received,
                report.published,
                publish_rate,
                slow_sut,
                report.slow_consumer_events
            );
            rates[kind as usize].push(rate);
            trials.push(json!({
                "kind": kind.name(),
                "run": run + 1,
                "throughput_msgs_per_sec": rate,
                "published": report.published,
                "received": report.received,
                "dropped": report.published.saturating_sub(report.received),
                "handled": handled,
                "publisher_msgs_per_sec": publish_rate,
                "publish_secs": report.publish_secs,
                "last_output_secs": report.last_secs,
                "slow_consumer_events_sut": slow_sut,
                "slow_consumer_events_counter": report.slow_consumer_events,
                "sut_cpu_us_per_msg": sut_cpu_us,
                "batches": batches,
                "mean_batch": if batches > 0 { handled as f64 / batches as f64 } else { f64::NAN },
                "server_cpu_us_per_msg": server_cpu_us,
            }));
        }
    }
    let gateway = Sample::new("msg/s", rates[0].clone());
    let native = Sample::new("msg/s", rates[1].clone());
    let unbatched = Sample::new("msg/s", rates[2].clone());
    let ratio = if p.only_kind.is_some() {
        f64::NAN
    } else {
        gateway.median / native.median
    };
    // Ratio of each alternating pair too, as a spread for the ratio itself.
    let pair_ratios: Vec<f64> = rates[0].iter().zip(&rates[1]).map(|(g, n)| g / n).collect();
    eprintln!("  core gateway: {}", gateway.show());
    eprintln!("  core native:  {}", native.show());
    eprintln!("  core gateway, batch = false: {}", unbatched.show());
    eprintln!("  core ratio gateway/native: {ratio:.3} (target >= 0.90)");
    eprintln!(
        "  core ratio of each pair: {}",
        Sample::new("ratio", pair_ratios.clone()).show()
    );
    let cpu: Vec<Sample> = cpu.into_iter().map(|c| Sample::new("µs/msg", c)).collect();
    eprintln!(
        "  core CPU per message (this process): gateway {}, native {}, batch = false {}",
        cpu[0].show(),
        cpu[1].show(),
        cpu[2].show()
    );
    let unbatched_ratio = unbatched.median / native.median;
    Ok(json!({
        "messages": p.messages,
        "payload_bytes": p.size,
        "subscription_capacity": p.capacity,
        "gateway": gateway,
        "native": native,
        "ratio": ratio,
        "pair_ratios": Sample::new("ratio", pair_ratios),
        "target_ratio": 0.90,
        "gateway_unbatched": unbatched,
        "cpu_us_per_msg": {
            "gateway": cpu[0],
            "native": cpu[1],
            "gateway_unbatched": cpu[2],
        },
        "ratio_unbatched": unbatched_ratio,
        "dropped_total": trials.iter().map(|t| t["dropped"].as_u64().unwrap_or(0)).sum::<u64>(),
        "slow_consumer_events_total": trials.iter().map(|t| t["slow_consumer_events_sut"].as_u64().unwrap_or(0) + t["slow_consumer_events_counter"].as_u64().unwrap_or(0)).sum::<u64>(),
        "trials": trials,
    }))
}
