//! What a request from a plugin costs (`requester`, WIT 0.1.5): one request
//! in flight through the `enrich` plugin, which asks a lookup service and
//! answers with both, against a native async-nats enricher doing the same
//! calls (receive, request the lookup, reply with both). The lookup is one
//! native responder both share; requester, enrichers and lookup run in this
//! process, on one server, and the two kinds alternate run by run.
//!
//! The difference between the two is what the gateway adds to a request
//! made from a handler on top of its own request-reply path: the host call,
//! giving the call slot back and taking it again, `block_on` on the
//! client's request.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmgate::Gateway;
use wasmgate_tests::{NatsServer, plugin};

use crate::stats::{Sample, median};

pub struct Params {
    pub requests: u64,
    pub runs: usize,
    pub size: usize,
}

/// The round trips of `n` requests to `subject`, one in flight, in µs, sorted.
async fn round_trips(
    nc: &async_nats::Client,
    subject: &str,
    n: u64,
    payload: &bytes::Bytes,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let started = Instant::now();
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            nc.request(subject.to_string(), payload.clone()),
        )
        .await
        .context("a reply within 5 s")??;
        anyhow::ensure!(
            reply.headers.is_none(),
            "{subject}: an error reply: {}",
            String::from_utf8_lossy(&reply.payload)
        );
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub async fn run(server: &NatsServer, p: &Params) -> anyhow::Result<Value> {
    let service = async_nats::connect(server.url()).await?;
    // The lookup both enrichers ask: replies with the payload as it came.
    let mut lookups = service.subscribe("lookup.>").await?;
    let s = service.clone();
    let lookup = tokio::spawn(async move {
        while let Some(m) = lookups.next().await {
            if let Some(reply) = m.reply {
                let _ = s.publish(reply, m.payload).await;
            }
        }
    });
    // The native enricher, one message at a time like the plugin's one worker.
    let native = async_nats::connect(server.url()).await?;
    let mut asks = native.subscribe("ask.native").await?;
    let n = native.clone();
    let enricher = tokio::spawn(async move {
        while let Some(m) = asks.next().await {
            let Ok(answer) = n.request("lookup.x", m.payload.clone()).await else {
                continue;
            };
            let mut both = m.payload.to_vec();
            both.push(b'+');
            both.extend_from_slice(&answer.payload);
            if let Some(reply) = m.reply {
                let _ = n.publish(reply, both.into()).await;
            }
        }
    });
    service.flush().await?;
    native.flush().await?;

    let mut config = wasmgate::Config::default();
    config.nats.servers = vec![server.url()];
    config.http.listen = String::new();
    let mut enrich = plugin(
        "enrich",
        "enrich",
        &["ask.gateway"],
        &[("lookup", "lookup.x")],
    );
    enrich.request_allow = vec!["lookup.>".into()];
    config.plugins.push(enrich);
    let stop = CancellationToken::new();
    let gw = Gateway::start(config, stop.clone()).await?;
    gw.ready(Duration::from_secs(30)).await?;

    let nc = async_nats::connect(server.url()).await?;
    let payload = bytes::Bytes::from(vec![b'a'; p.size]);
    // The lookup asked directly: the floor under both, one hop fewer.
    let subjects = ["ask.gateway", "ask.native", "lookup.x"];
    let mut p50: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut p99: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..=p.runs {
        let mut order = [0, 1, 2];
        order.rotate_left(round % 3);
        for i in order {
            let times = round_trips(&nc, subjects[i], p.requests, &payload).await?;
            if round > 0 {
                p50[i].push(quantile(&times, 0.5));
                p99[i].push(quantile(&times, 0.99));
            }
        }
    }
    let status = gw.status();
    stop.cancel();
    gw.wait().await?;
    lookup.abort();
    enricher.abort();

    let added: Vec<f64> = p50[0].iter().zip(&p50[1]).map(|(g, n)| g - n).collect();
    let out = json!({
        "requests_per_run": p.requests,
        "runs": p.runs,
        "payload_bytes": p.size,
        "gateway_p50_us": Sample::new("µs", p50[0].clone()),
        "native_p50_us": Sample::new("µs", p50[1].clone()),
        "gateway_p99_us": Sample::new("µs", p99[0].clone()),
        "native_p99_us": Sample::new("µs", p99[1].clone()),
        "added_p50_us": Sample::new("µs", added.clone()),
        "lookup_alone_p50_us": Sample::new("µs", p50[2].clone()),
        "plugin_requests": status.plugins.first().map(|pl| json!(pl.requests)),
    });
    eprintln!(
        "  a request from a handler, one in flight: gateway p50 {:.1} µs, native {:.1} µs, added {:.1} µs, the lookup alone {:.1} µs (p99 {:.1} / {:.1})",
        median(&p50[0]),
        median(&p50[1]),
        median(&added),
        median(&p50[2]),
        median(&p99[0]),
        median(&p99[1]),
    );
    Ok(out)
}
