//! Request-reply latency: the gateway running the `uppercase` plugin (in
//! this process) against a native async-nats responder doing exactly what
//! that plugin does (upper-case the payload, publish it to
//! `out.<subject>` with the request's headers, reply with the same bytes),
//! measured by a requester in a separate process (`bench requester`).
//!
//! Two loads, each alternating gateway and native runs after an unrecorded
//! warm-up round:
//! - one request in flight: send, wait for the reply, send the next;
//! - a steady rate (10,000 requests a second): requests leave on a
//!   schedule whatever the replies do (open loop), each timed from when it
//!   actually left, so a slow reply cannot hide the ones queued behind it.
//!
//! The requester has its own reply subscription (`<inbox>.<n>`) rather
//! than the client's request multiplexer, so what it adds is the same, and
//! small, for both sides.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmgate::Gateway;
use wasmgate_tests::{NatsServer, free_port, plugin};

use crate::core::target;
use crate::scale::{bucket_quantile_ms, buckets};
use crate::stats::{Sample, median};

pub struct Params {
    /// Requests per run with one in flight.
    pub sequential: u64,
    /// Requests per run at the steady rate, and the rate.
    pub steady: u64,
    pub rate: u64,
    pub runs: usize,
    pub size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gateway,
    Native,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "gateway",
            Kind::Native => "native",
        }
    }
}

/// What one requester run saw, in microseconds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub sent: u64,
    pub received: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub secs: f64,
}

/// The native responder: one task doing what `uppercase` does.
struct Native {
    client: async_nats::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Native {
    async fn start(url: &str) -> anyhow::Result<Native> {
        let client = async_nats::connect(url).await?;
        let mut sub = client.subscribe("req.>").await?;
        let c = client.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let upper = bytes::Bytes::from(m.payload.to_ascii_uppercase());
                let out = target("out", &m.subject);
                let _ = match m.headers {
                    Some(h) => c.publish_with_headers(out, h, upper.clone()).await,
                    None => c.publish(out, upper.clone()).await,
                };
                if let Some(reply) = m.reply {
                    let _ = c.publish(reply, upper).await;
                }
            }
        });
        crate::child::sync_with_server(&client).await?;
        Ok(Native { client, task })
    }

    async fn stop(self) {
        let _ = self.client.flush().await;
        self.task.abort();
    }
}

pub fn gateway_config(server: &NatsServer, http: &str) -> wasmgate::Config {
    let mut config = wasmgate::Config::default();
    config.nats.servers = vec![server.url()];
    config.http.listen = http.to_string();
    config.plugins.push(plugin(
        "uppercase",
        "uppercase",
        &["req.>"],
        &[("prefix", "out")],
    ));
    config
}

/// One load's runs, alternating the two kinds.
async fn load(server: &NatsServer, p: &Params, rate: u64) -> anyhow::Result<Value> {
    let count = if rate == 0 { p.sequential } else { p.steady };
    let label = if rate == 0 {
        "one in flight".to_string()
    } else {
        format!("{rate} requests/s")
    };
    let mut reports: [Vec<Report>; 2] = [Vec::new(), Vec::new()];
    let mut switched: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let (mut waits, mut calls) = (Vec::new(), Vec::new());
    for round in 0..=p.runs {
        let warmup = round == 0;
        let mut order = [Kind::Gateway, Kind::Native];
        order.rotate_left(round % 2);
        for kind in order {
            let args = vec![
                "--url".into(),
                server.url(),
                "--subject".into(),
                format!("req.{}", kind.name()),
                "--count".into(),
                (if warmup { count / 5 } else { count }).to_string(),
                "--rate".into(),
                rate.to_string(),
                "--size".into(),
                p.size.to_string(),
            ];
            let (report, switches) = match kind {
                Kind::Gateway => {
                    let shutdown = CancellationToken::new();
                    let http = format!("127.0.0.1:{}", free_port());
                    let gw =
                        Gateway::start(gateway_config(server, &http), shutdown.clone()).await?;
                    gw.ready(Duration::from_secs(20)).await?;
                    let inside0 = inside(&http).await?;
                    let before = switches();
                    let r = requester(&args).await;
                    let switched = switches() - before;
                    let inside1 = inside(&http).await?;
                    shutdown.cancel();
                    gw.wait().await?;
                    if !warmup {
                        // What the gateway measured of the same requests:
                        // from arrival in the binding's inbox to the call,
                        // and the call.
                        waits.push(bucket_quantile_ms(&inside0.0, &inside1.0, 0.5) * 1e3);
                        calls.push(bucket_quantile_ms(&inside0.1, &inside1.1, 0.5) * 1e3);
                    }
                    (r?, switched)
                }
                Kind::Native => {
                    let native = Native::start(&server.url()).await?;
                    let before = switches();
                    let r = requester(&args).await;
                    let switched = switches() - before;
                    native.stop().await;
                    (r?, switched)
                }
            };
            let switches_per_request = switches as f64 / report.received.max(1) as f64;
            eprintln!(
                "  latency {label}, {:7} {}: p50 {:.0} µs, p90 {:.0}, p99 {:.0}, p99.9 {:.0}, max {:.0} ({} of {} replies; {switches_per_request:.1} context switches per request in this process)",
                kind.name(),
                if warmup {
                    "warm-up".to_string()
                } else {
                    format!("run {round}")
                },
                report.p50_us,
                report.p90_us,
                report.p99_us,
                report.p999_us,
                report.max_us,
                report.received,
                report.sent
            );
            if !warmup {
                switched[kind as usize].push(switches_per_request);
                reports[kind as usize].push(report);
            }
        }
    }
    let pick = |k: Kind, f: fn(&Report) -> f64| -> Sample {
        Sample::new("µs", reports[k as usize].iter().map(f).collect())
    };
    let (g50, n50) = (
        pick(Kind::Gateway, |r| r.p50_us),
        pick(Kind::Native, |r| r.p50_us),
    );
    let (g99, n99) = (
        pick(Kind::Gateway, |r| r.p99_us),
        pick(Kind::Native, |r| r.p99_us),
    );
    // Each alternating pair's difference, so drift between pairs cancels.
    let pair_overhead: Vec<f64> = reports[0]
        .iter()
        .zip(&reports[1])
        .map(|(g, n)| g.p50_us - n.p50_us)
        .collect();
    let pair_p99_ratio: Vec<f64> = reports[0]
        .iter()
        .zip(&reports[1])
        .map(|(g, n)| g.p99_us / n.p99_us)
        .collect();
    let overhead = median(&pair_overhead);
    let p99_ratio = median(&pair_p99_ratio);
    let lost: u64 = reports
        .iter()
        .flatten()
        .map(|r| r.sent.saturating_sub(r.received))
        .sum();
    eprintln!(
        "  latency {label}: p50 gateway {:.0} µs, native {:.0} µs, overhead {overhead:.1} µs (target <= 25); \
         p99 gateway {:.0} µs, native {:.0} µs, ratio {p99_ratio:.2} (target <= 1.5); {lost} replies missing; \
         inside the gateway p50: queue wait <= {:.0} µs, handler <= {:.0} µs",
        g50.median,
        n50.median,
        g99.median,
        n99.median,
        median(&waits),
        median(&calls)
    );
    Ok(json!({
        "requests_per_run": count,
        "rate_per_sec": rate,
        "gateway_p50_us": g50,
        "native_p50_us": n50,
        "gateway_p99_us": g99,
        "native_p99_us": n99,
        "p50_overhead_us": overhead,
        "p50_overhead_per_pair_us": pair_overhead,
        "p99_ratio": p99_ratio,
        "p99_ratio_per_pair": pair_p99_ratio,
        "target_p50_overhead_us": 25,
        "target_p99_ratio": 1.5,
        "replies_missing": lost,
        "gateway_queue_wait_p50_bucket_us": waits,
        "gateway_handler_p50_bucket_us": calls,
        "context_switches_per_request": {
            "gateway": Sample::new("switches", switched[0].clone()),
            "native": Sample::new("switches", switched[1].clone()),
        },
        "runs": {
            "gateway": reports[0],
            "native": reports[1],
        },
    }))
}

pub async fn run(server: &NatsServer, p: &Params) -> anyhow::Result<Value> {
    let sequential = load(server, p, 0).await?;
    let steady = load(server, p, p.rate).await?;
    Ok(json!({
        "payload_bytes": p.size,
        "one_in_flight": sequential,
        "steady": steady,
    }))
}

/// The gateway's queue-wait and handler histograms of the uppercase binding.
type Buckets = Vec<(f64, f64)>;
async fn inside(http: &str) -> anyhow::Result<(Buckets, Buckets)> {
    Ok((
        buckets(http, "wasmgate_queue_wait_seconds", "uppercase", "req.>").await?,
        buckets(
            http,
            "wasmgate_handler_duration_seconds",
            "uppercase",
            "req.>",
        )
        .await?,
    ))
}

/// Context switches of every thread of this process so far (the system
/// under test runs here; the requester is another process): how many
/// times a request made a thread sleep and wake, which on a VM costs more
/// than the work.
fn switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

pub async fn requester(args: &[String]) -> anyhow::Result<Report> {
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe)
        .arg("requester")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .context("running the requester")?;
    anyhow::ensure!(
        out.status.success(),
        "requester failed: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    serde_json::from_str(text.trim()).with_context(|| format!("requester printed {text:?}"))
}

/// `bench requester`'s arguments.
#[derive(Debug, Default)]
pub struct Args {
    url: String,
    subject: String,
    count: u64,
    /// Requests a second; 0: one in flight.
    rate: u64,
    size: usize,
}

pub fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut a = Args {
        size: 128,
        ..Default::default()
    };
    while let Some(flag) = args.next() {
        let mut val = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val()?,
            "--subject" => a.subject = val()?,
            "--count" => a.count = val()?.parse()?,
            "--rate" => a.rate = val()?.parse()?,
            "--size" => a.size = val()?.parse()?,
            other => anyhow::bail!("unknown requester flag {other}"),
        }
    }
    anyhow::ensure!(
        !a.url.is_empty() && !a.subject.is_empty() && a.count > 0,
        "--url, --subject and --count are required"
    );
    Ok(a)
}

/// The requester process: wait until the responder answers, then time
/// `count` requests and print one JSON [`Report`].
pub async fn requester_main(a: Args) -> anyhow::Result<()> {
    let client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(&a.url)
        .await?;
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(format!("{inbox}.*")).await?;
    client.flush().await?;
    let payload = bytes::Bytes::from(vec![b'x'; a.size]);
    // The responder's subscription may still be on its way to the server.
    let ready = Instant::now();
    loop {
        client
            .publish_with_reply(a.subject.clone(), format!("{inbox}.0"), payload.clone())
            .await?;
        if tokio::time::timeout(Duration::from_millis(200), replies.next())
            .await
            .is_ok()
        {
            break;
        }
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(20),
            "no reply from {} in 20 s",
            a.subject
        );
    }
    // Drain stray replies of the probes above.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), replies.next()).await {}

    let t0 = Instant::now();
    let mut times = Vec::with_capacity(a.count as usize);
    let sent;
    if a.rate == 0 {
        let reply = format!("{inbox}.1");
        for _ in 0..a.count {
            let t = Instant::now();
            client
                .publish_with_reply(a.subject.clone(), reply.clone(), payload.clone())
                .await?;
            match tokio::time::timeout(Duration::from_secs(5), replies.next()).await {
                Ok(Some(_)) => times.push(t.elapsed().as_secs_f64() * 1e6),
                _ => break,
            }
        }
        sent = times.len() as u64 + u64::from((times.len() as u64) < a.count);
    } else {
        // Sent from a thread of its own on a schedule: the n-th request
        // leaves at t0 + n / rate (a thread sleep is accurate to ~60 µs;
        // tokio's timers only to a millisecond, which would send bursts).
        let left: Arc<Vec<AtomicU64>> = Arc::new((0..a.count).map(|_| AtomicU64::new(0)).collect());
        let sender = {
            let (client, left, subject, inbox, payload) = (
                client.clone(),
                left.clone(),
                a.subject.clone(),
                inbox.clone(),
                payload.clone(),
            );
            let (count, rate) = (a.count, a.rate);
            std::thread::spawn(move || -> anyhow::Result<()> {
                for n in 0..count {
                    let due = Duration::from_nanos(n * 1_000_000_000 / rate);
                    if let Some(wait) = due.checked_sub(t0.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    left[n as usize].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    futures::executor::block_on(client.publish_with_reply(
                        subject.clone(),
                        format!("{inbox}.{n}"),
                        payload.clone(),
                    ))?;
                }
                Ok(())
            })
        };
        let expect_by =
            Duration::from_nanos(a.count * 1_000_000_000 / a.rate) + Duration::from_secs(5);
        while (times.len() as u64) < a.count {
            let Some(wait) = expect_by.checked_sub(t0.elapsed()) else {
                break;
            };
            let Ok(Some(m)) = tokio::time::timeout(wait, replies.next()).await else {
                break;
            };
            let now = t0.elapsed().as_nanos() as u64;
            let n: usize = m
                .subject
                .rsplit('.')
                .next()
                .and_then(|s| s.parse().ok())
                .context("reply subject without a number")?;
            let at = left[n].load(Ordering::Relaxed);
            times.push(now.saturating_sub(at) as f64 / 1e3);
        }
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
        sent = a.count;
    }
    let secs = t0.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if times.is_empty() {
            f64::NAN
        } else {
            times[((times.len() as f64 * p) as usize).min(times.len() - 1)]
        }
    };
    let report = Report {
        sent,
        received: times.len() as u64,
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: times.last().copied().unwrap_or(f64::NAN),
        secs,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
