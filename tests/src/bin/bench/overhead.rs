//! Per-message cost of the dispatch path without NATS, in layers, each timed
//! in a tight loop on this thread:
//!
//! - `to_wit`: the async-nats message turned into the WIT record
//!   (`Message::from`; subject and payload copied);
//! - `noop_call`: `Instance::handle` on the `noop` plugin, which returns
//!   `ok(none)` and calls nothing: the bare component-model call (epoch
//!   deadline set, message lowered into guest memory with the guest's own
//!   allocations, result lifted);
//! - `echo_call`: `Instance::handle` on `echo` (built with the SDK, which
//!   reads its config once per instance): the same plus the guest's work and
//!   one import, `publisher.publish`, which validates and fills the outbox;
//! - `echo_cached_call`: `echo-cached`, the same handler written against the
//!   raw bindings (no SDK);
//! - `echo_batch_call`: `Instance::handle_batch` on `echo` with 128 messages,
//!   per message: one call per batch, publishes returned with the results and
//!   checked by the host;
//! - `full_dispatch`: what `Dispatch::process_core` does per message without
//!   the network: the tracing span, `to_wit`, `echo`'s `handle`, the
//!   counter, and the outbox moved into the batch's output list;
//! - `full_dispatch_batched`: the same for `Dispatch::process_core_batch`,
//!   128 messages per `handle-batch` call;
//! - `native_work`: the work a native republisher does for the same message
//!   in plain Rust (look up the prefix, format the subject, take the
//!   payload): the part of `echo` that is not overhead.
//!
//! Host overhead per message = `full_dispatch` − `native_work` (and
//! `full_dispatch_batched` − `native_work` for batches).
//!
//! Then the same handler in each plugin language, the `uppercase` example
//! (read `prefix`, upper-case the payload, publish it with the headers, log a
//! debug line, reply when asked): `Instance::handle` per message and
//! `Instance::handle_batch` with 128 messages per call for Rust, Python and
//! JavaScript (each example exports `batch-handler`), against the same work
//! in plain Rust. Fewer
//! iterations: a JavaScript call takes tens of microseconds. The components
//! are compiled through a compile cache in a temporary folder.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use wasmgate::config::{ByteSize, RuntimeConfig};
use wasmgate::plugin::{Batch, BatchResults, Message, Outcome, Outgoing, Plugin, Runtime};
use wasmgate_tests::{plugin, plugin_from, polyglot_wasm};

use crate::stats::Sample;

pub struct Params {
    pub iterations: u64,
    pub runs: usize,
    pub size: usize,
}

const LAYERS: [&str; 8] = [
    "to_wit",
    "noop_call",
    "echo_cached_call",
    "echo_call",
    "echo_batch_call",
    "full_dispatch",
    "full_dispatch_batched",
    "native_work",
];

/// Messages per `handle-batch` call in the batched layers: the dispatcher's most.
const BATCH: usize = 128;

pub fn run(p: &Params) -> anyhow::Result<Value> {
    let runtime = Runtime::new(Duration::from_millis(10))?;
    let max_payload = 1024 * 1024;
    let echo_cfg = plugin("echo", "echo", &["in.>"], &[("prefix", "out")]);
    let echo = Arc::new(Plugin::load(&runtime, &echo_cfg, max_payload)?);
    let noop = Arc::new(Plugin::load(
        &runtime,
        &plugin("noop", "noop", &["in.>"], &[]),
        max_payload,
    )?);
    let cached = Arc::new(Plugin::load(
        &runtime,
        &plugin(
            "echo-cached",
            "echo-cached",
            &["in.>"],
            &[("prefix", "out")],
        ),
        max_payload,
    )?);
    let mut cached_inst = cached.instantiate()?;
    let mut echo_inst = echo.instantiate()?;
    let mut noop_inst = noop.instantiate()?;

    let nats_msg = bench_message(p.size);
    let input = Message::from(nats_msg.clone());
    let handled = AtomicU64::new(0);
    let config: BTreeMap<String, String> = [("prefix".to_string(), "out".to_string())].into();
    let mut out: Vec<Outgoing> = Vec::with_capacity(128);

    let mut inputs = Batch::new();
    for _ in 0..BATCH {
        inputs.push_nats(&nats_msg);
    }
    anyhow::ensure!(echo_inst.batched(), "echo exports batch-handler");
    let mut results = BatchResults::default();
    echo_inst.handle_batch(&mut inputs, &mut results)?;
    anyhow::ensure!(
        results.results.len() == BATCH
            && results
                .results
                .iter()
                .all(|r| r.outcome == Outcome::Ok(None) && r.publishes == 1)
    );

    // Check the plugins do what the layers assume before timing them.
    let h = echo_inst.handle(&input)?;
    anyhow::ensure!(h.outcome == Outcome::Ok(None) && h.outbox.len() == 1);
    anyhow::ensure!(h.outbox[0].subject.as_str() == "out.in.bench");
    let h = cached_inst.handle(&input)?;
    anyhow::ensure!(h.outbox.len() == 1 && h.outbox[0].subject.as_str() == "out.in.bench");
    let h = noop_inst.handle(&input)?;
    anyhow::ensure!(h.outcome == Outcome::Ok(None) && h.outbox.is_empty());

    let mut layer = |name: &str, n: u64| -> anyhow::Result<f64> {
        let start = Instant::now();
        match name {
            "to_wit" => {
                for _ in 0..n {
                    black_box(Message::from(black_box(&nats_msg).clone()));
                }
            }
            "noop_call" => {
                for _ in 0..n {
                    black_box(noop_inst.handle(black_box(&input))?);
                }
            }
            "echo_cached_call" => {
                for _ in 0..n {
                    black_box(cached_inst.handle(black_box(&input))?);
                }
            }
            "echo_call" => {
                for _ in 0..n {
                    black_box(echo_inst.handle(black_box(&input))?);
                }
            }
            "echo_batch_call" => {
                for _ in 0..n.div_ceil(BATCH as u64) {
                    echo_inst.handle_batch(black_box(&mut inputs), &mut results)?;
                    black_box(&results);
                }
            }
            "full_dispatch_batched" => {
                let mut encoded = Batch::new();
                for _ in 0..n.div_ceil(BATCH as u64) {
                    let msgs: Vec<_> = (0..BATCH).map(|_| black_box(&nats_msg).clone()).collect();
                    encoded.clear();
                    for m in &msgs {
                        encoded.push_nats(m);
                    }
                    echo_inst.handle_batch(&mut encoded, &mut results)?;
                    let mut publishes = results.publishes.drain(..);
                    for (msg, r) in msgs.into_iter().zip(results.results.drain(..)) {
                        let span = message_span(&msg, echo.name());
                        let _entered = span.enter();
                        let outbox = (&mut publishes).take(r.publishes);
                        if let Outcome::Ok(_) = r.outcome {
                            handled.fetch_add(1, Ordering::Relaxed);
                            out.extend(outbox);
                        }
                        black_box(msg.reply.map(|r| r.to_string()));
                    }
                    drop(publishes);
                    black_box(&out);
                    out.clear();
                }
            }
            "full_dispatch" => {
                for i in 0..n {
                    let msg = black_box(&nats_msg).clone();
                    let span = message_span(&msg, echo.name());
                    let _entered = span.enter();
                    let reply_to = msg.reply.as_ref().map(|r| r.to_string());
                    let input = Message::from(msg);
                    let h = echo_inst.handle(&input)?;
                    if let Outcome::Ok(_) = h.outcome {
                        handled.fetch_add(1, Ordering::Relaxed);
                        out.extend(h.outbox);
                    }
                    black_box(reply_to);
                    // The batch's output is sent (and dropped) every 128 messages.
                    if i % 128 == 127 {
                        black_box(&out);
                        out.clear();
                    }
                }
                out.clear();
            }
            "native_work" => {
                for _ in 0..n {
                    let msg = black_box(&nats_msg).clone();
                    let prefix = config.get("prefix").map_or("", String::as_str);
                    black_box(Outgoing {
                        subject: crate::core::target(prefix, &msg.subject).into(),
                        payload: msg.payload,
                        headers: Vec::new(),
                    });
                }
            }
            _ => unreachable!(),
        }
        let calls = if name.contains("batch") {
            n.div_ceil(BATCH as u64) * BATCH as u64
        } else {
            n
        };
        Ok(start.elapsed().as_nanos() as f64 / calls as f64)
    };

    // Warm up every layer (code, caches, the allocator), then alternate the
    // order of layers between runs.
    for name in LAYERS {
        layer(name, p.iterations / 10 + 1)?;
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); LAYERS.len()];
    for run in 0..p.runs {
        for j in 0..LAYERS.len() {
            let i = if run % 2 == 0 {
                j
            } else {
                LAYERS.len() - 1 - j
            };
            results[i].push(layer(LAYERS[i], p.iterations)?);
        }
    }
    let samples: Vec<Sample> = results
        .into_iter()
        .map(|r| Sample::new("ns/msg", r))
        .collect();
    for (name, s) in LAYERS.iter().zip(&samples) {
        eprintln!("  overhead {name:14} {}", s.show());
    }
    let get = |name: &str| samples[LAYERS.iter().position(|l| *l == name).unwrap()].median;
    let host_overhead = get("full_dispatch") - get("native_work");
    let host_overhead_batched = get("full_dispatch_batched") - get("native_work");
    let imports_and_guest = get("echo_call") - get("noop_call");
    eprintln!(
        "  overhead: host overhead per message (full_dispatch - native_work) = {host_overhead:.0} ns; batched {host_overhead_batched:.0} ns"
    );
    let mut layers = serde_json::Map::new();
    for (name, s) in LAYERS.iter().zip(&samples) {
        layers.insert(name.to_string(), serde_json::to_value(s)?);
    }
    let languages = languages(p)?;
    Ok(json!({
        "iterations_per_run": p.iterations,
        "payload_bytes": p.size,
        "layers": layers,
        "host_overhead_ns": host_overhead,
        "host_overhead_batched_ns": host_overhead_batched,
        "echo_imports_and_guest_work_ns": imports_and_guest,
        "bare_call_ns": get("noop_call"),
        "config_get_import_ns": get("echo_call") - get("echo_cached_call"),
        "guest_work_native_equivalent_ns": get("native_work"),
        "languages": languages,
    }))
}

/// The `uppercase` handler per message in each language (see the module docs).
fn languages(p: &Params) -> anyhow::Result<Value> {
    let cache = tempfile::tempdir()?;
    let runtime = Runtime::from_config(&RuntimeConfig {
        epoch_tick: Duration::from_millis(10),
        cache_dir: cache.path().to_path_buf(),
        cache_max_size: ByteSize::b(0),
        ..RuntimeConfig::default()
    })?;
    let max_payload = 1024 * 1024;
    let load = |name: &str, path: std::path::PathBuf| -> anyhow::Result<Arc<Plugin>> {
        let cfg = plugin_from(name, path, &["in.>"], &[("prefix", "out")]);
        Ok(Arc::new(Plugin::load(&runtime, &cfg, max_payload)?))
    };
    let rust = load("rust", wasmgate_tests::plugin_wasm("uppercase"))?;
    let python = load("python", polyglot_wasm("python-uppercase"))?;
    let js = load("js", polyglot_wasm("js-uppercase"))?;
    let nats_msg = bench_message(p.size);
    let input = Message::from(nats_msg.clone());
    let mut encoded = Batch::new();
    for _ in 0..BATCH {
        encoded.push_nats(&nats_msg);
    }
    let mut instances = [
        rust.instantiate()?,
        python.instantiate()?,
        js.instantiate()?,
    ];
    // The same three through `handle-batch`, 128 messages per call.
    let mut batched = [
        rust.instantiate()?,
        python.instantiate()?,
        js.instantiate()?,
    ];
    let mut batch_results = BatchResults::default();
    for inst in &mut batched {
        let name = inst.plugin().name().to_string();
        anyhow::ensure!(inst.batched(), "{name} exports batch-handler");
        inst.handle_batch(&mut encoded, &mut batch_results)?;
        let r = &batch_results;
        anyhow::ensure!(
            r.results.len() == BATCH
                && r.results
                    .iter()
                    .all(|m| m.outcome == Outcome::Ok(None) && m.publishes == 1)
                && r.publishes.len() == BATCH
                && r.publishes
                    .iter()
                    .all(|o| o.subject.as_str() == "out.in.bench"
                        && o.payload[..] == vec![b'X'; p.size][..]),
            "{name}'s batch does what uppercase does: {:?}",
            r.results.first()
        );
    }
    for inst in &mut instances {
        let h = inst.handle(&input)?;
        anyhow::ensure!(
            h.outcome == Outcome::Ok(None)
                && h.outbox.len() == 1
                && h.outbox[0].subject.as_str() == "out.in.bench"
                && h.outbox[0].payload[..] == vec![b'X'; p.size][..],
            "{} does what uppercase does",
            inst.plugin().name()
        );
    }
    const KINDS: [&str; 7] = [
        "rust",
        "rust_batched",
        "python",
        "python_batched",
        "javascript",
        "javascript_batched",
        "native_work",
    ];
    // A JavaScript call costs tens of microseconds: far fewer iterations.
    let n = (p.iterations / 50).max(BATCH as u64);
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    for run in 0..p.runs.min(7) + 1 {
        for (k, kind) in KINDS.iter().enumerate() {
            let start = Instant::now();
            let calls = match *kind {
                "rust_batched" | "python_batched" | "javascript_batched" => {
                    let inst = &mut batched[[0, 0, 0, 1, 0, 2][k]];
                    let rounds = n.div_ceil(BATCH as u64);
                    for _ in 0..rounds {
                        inst.handle_batch(black_box(&mut encoded), &mut batch_results)?;
                        black_box(&batch_results);
                    }
                    rounds * BATCH as u64
                }
                "native_work" => {
                    for _ in 0..n {
                        let msg = black_box(&nats_msg).clone();
                        let upper = msg.payload.to_ascii_uppercase();
                        black_box(Outgoing {
                            subject: format!("out.{}", msg.subject).into(),
                            payload: upper.into(),
                            headers: Vec::new(),
                        });
                    }
                    n
                }
                _ => {
                    let inst = &mut instances[[0, 0, 1, 0, 2][k]];
                    for _ in 0..n {
                        black_box(inst.handle(black_box(&input))?);
                    }
                    n
                }
            };
            // The first round warms up and is not kept.
            if run > 0 {
                results[k].push(start.elapsed().as_nanos() as f64 / calls as f64);
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (kind, r) in KINDS.iter().zip(results) {
        let s = Sample::new("ns/msg", r);
        eprintln!("  overhead uppercase {kind:12} {}", s.show());
        out.insert(kind.to_string(), serde_json::to_value(s)?);
    }
    Ok(Value::Object(out))
}

/// The message every layer handles: `in.bench`, `size` bytes of `x`.
fn bench_message(size: usize) -> async_nats::Message {
    async_nats::Message {
        subject: "in.bench".into(),
        reply: None,
        payload: Bytes::from(vec![b'x'; size]),
        headers: None,
        status: None,
        description: None,
        length: size + 8,
    }
}

/// The span the dispatcher opens for each message (`Dispatch::message_span`).
fn message_span(msg: &async_nats::Message, plugin: &str) -> tracing::Span {
    tracing::debug_span!(
        "message",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation = "process",
        messaging.destination.name = %msg.subject,
        messaging.message.body.size = msg.payload.len(),
        wasmgate.plugin = plugin,
    )
}
