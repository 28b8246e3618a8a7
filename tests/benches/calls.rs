//! Criterion micro-benchmarks of the per-message path (issue 5), beside the
//! end-to-end `bench` binary: what one message costs in the pieces the
//! dispatcher runs for it, with Criterion's statistics (outliers, confidence
//! intervals, comparison with the last run under `target/criterion/`).
//!
//! - `per_message/*`: one message per call, `echo` (built with the SDK) and
//!   `noop` (returns at once);
//! - `batch_of_128/*`: the same 128 messages encoded for a `handle-batch`
//!   call, that call on `echo`, and both together: Criterion's throughput is
//!   per message, so the figures compare directly with `per_message`;
//! - `host/*`: the publish checks every guest publish goes through.
//!
//! `cargo bench -p wasmgate-tests --bench calls` (about a minute).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wasmgate::plugin::{Batch, BatchResults, Message, Plugin, Runtime};
use wasmgate_tests::plugin;

const BATCH: usize = 128;

fn message() -> async_nats::Message {
    async_nats::Message {
        subject: "in.bench".into(),
        reply: None,
        payload: Bytes::from(vec![b'x'; 128]),
        headers: None,
        status: None,
        description: None,
        length: 136,
    }
}

fn load(runtime: &Runtime, wasm: &str) -> Arc<Plugin> {
    let cfg = plugin(wasm, wasm, &["in.>"], &[("prefix", "out")]);
    Arc::new(Plugin::load(runtime, &cfg, 1024 * 1024).expect("plugin loads"))
}

fn calls(c: &mut Criterion) {
    let runtime = Runtime::new(Duration::from_millis(10)).expect("runtime");
    let echo = load(&runtime, "echo");
    let noop = load(&runtime, "noop");
    let mut echo_inst = echo.instantiate().expect("instance");
    let mut noop_inst = noop.instantiate().expect("instance");
    let msg = message();
    let input = Message::from(msg.clone());
    let msgs: Vec<_> = (0..BATCH).map(|_| msg.clone()).collect();
    let mut encoded = Batch::new();

    let mut g = c.benchmark_group("per_message");
    g.throughput(Throughput::Elements(1));
    g.bench_function("to_wit", |b| {
        b.iter(|| Message::from(black_box(&msg).clone()))
    });
    g.bench_function("noop_handle", |b| {
        b.iter(|| noop_inst.handle(black_box(&input)).expect("ok"))
    });
    g.bench_function("echo_handle", |b| {
        b.iter(|| echo_inst.handle(black_box(&input)).expect("ok"))
    });
    g.finish();

    let mut g = c.benchmark_group("batch_of_128");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("encode", |b| {
        b.iter(|| {
            encoded.clear();
            for m in black_box(&msgs) {
                encoded.push_nats(m);
            }
        })
    });
    encoded.clear();
    for m in &msgs {
        encoded.push_nats(m);
    }
    let mut results = BatchResults::default();
    g.bench_function("echo_handle_batch", |b| {
        b.iter(|| {
            echo_inst
                .handle_batch(black_box(&mut encoded), &mut results)
                .expect("ok")
        })
    });
    g.bench_function("encode_and_echo_handle_batch", |b| {
        b.iter(|| {
            encoded.clear();
            for m in black_box(&msgs) {
                encoded.push_nats(m);
            }
            echo_inst
                .handle_batch(&mut encoded, &mut results)
                .expect("ok")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("host");
    g.throughput(Throughput::Elements(1));
    g.bench_function("validate_publish", |b| {
        b.iter(|| wasmgate::subject::validate_publish(black_box("out.in.bench")))
    });
    g.bench_function("subject_matches", |b| {
        b.iter(|| wasmgate::subject::matches(black_box("out.*.bench"), black_box("out.in.bench")))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Short: the whole file in about a minute on 2 cores.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = calls
}
criterion_main!(benches);
