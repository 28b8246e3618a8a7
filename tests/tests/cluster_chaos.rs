//! Chaos on a 3-node cluster: a producer publishes ids (each with its
//! `Nats-Msg-Id`, retried until the server acks it) into an R3 input stream
//! while the `wasmgate` binary, as its own process, turns each input into
//! an output captured by an R3 output stream. Meanwhile nodes are killed
//! with SIGKILL and restarted, one is paused with SIGSTOP, one is put in
//! lame duck mode, and the gateway itself is killed with SIGKILL and
//! started again. Then every fault is healed and the output stream drained.
//!
//! What "nothing lost" means here (the consumer-side checker of Jepsen's
//! NATS analysis): every id the server acked to the producer reaches the
//! output stream (lost = 0); nothing arrives that was never published
//! (unexpected = 0); duplicates are allowed, counted and printed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use wasmgate_tests::cluster::{Cluster, FORM_WAIT, publish_with_retry, stream_leader};
use wasmgate_tests::process::GatewayProcess;
use wasmgate_tests::*;

/// Ids the producer publishes.
const IDS: u64 = 3_000;

/// Pause between two publishes: spreads the ids over the faults (~25 s).
const PACE: Duration = Duration::from_millis(8);

/// How long the outputs may take to arrive once every fault is healed.
const DRAIN: Duration = Duration::from_secs(60);

/// Sleep without holding a runtime worker's attention.
async fn pause(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acked_is_lost_through_node_and_gateway_faults() {
    init_logs();
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(3));
    let nc = cluster.client().await;
    let js = jetstream::new(nc.clone());
    pipeline::create_streams(&js).await;

    let mut config = test_config(&cluster.urls());
    config.plugins.push(pipeline::upper("gw"));
    let mut gw = tokio::task::block_in_place(|| GatewayProcess::start(&config));

    // The producer: ids in order, each retried until acked.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let producer = {
        let js = js.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            for id in 0..IDS {
                let subject = format!("in.{id}");
                let msg_id = format!("id-{id}");
                publish_with_retry(&js, &subject, &msg_id, id.to_string().into(), WAIT).await;
                acked.lock().unwrap().insert(id);
                tokio::time::sleep(PACE).await;
            }
        })
    };

    // The faults, while it runs, each on the output stream's leader of the
    // moment: a core publish is dropped while that leader moves.
    let mut faults = Vec::new();
    pause(2_000).await;
    let first = leader(&js, "OUT").await;
    tokio::task::block_in_place(|| cluster.node_mut(&first).kill());
    faults.push(format!("kill -9 {first}"));
    pause(2_000).await;
    tokio::task::block_in_place(|| cluster.node_mut(&first).restart());
    pause(3_000).await;
    let second = leader(&js, "OUT").await;
    tokio::task::block_in_place(|| cluster.node_mut(&second).pause());
    pause(3_000).await;
    tokio::task::block_in_place(|| cluster.node_mut(&second).resume());
    faults.push(format!("SIGSTOP {second} for 3 s"));
    pause(3_000).await;
    let third = leader(&js, "OUT").await;
    tokio::task::block_in_place(|| {
        let node = cluster.node_mut(&third);
        node.lame_duck();
        assert!(
            node.wait_exit(Duration::from_secs(40)).is_some(),
            "{third} leaves after lame duck mode"
        );
        node.restart();
    });
    faults.push(format!("lame duck {third}, restarted"));
    pause(2_000).await;
    tokio::task::block_in_place(|| {
        gw.kill();
        std::thread::sleep(Duration::from_millis(500));
        gw.restart();
    });
    faults.push("kill -9 the gateway, restarted".into());

    // Heal and drain.
    tokio::time::timeout(Duration::from_secs(120), producer)
        .await
        .expect("the producer finishes once the faults are healed")
        .unwrap();
    tokio::task::block_in_place(|| cluster.wait_ready(FORM_WAIT));
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len() as u64,
        IDS,
        "every id was acked to the producer"
    );

    let seen = pipeline::outputs(&js, &acked, DRAIN).await;
    let lost: Vec<u64> = acked
        .iter()
        .filter(|id| !seen.contains_key(id))
        .copied()
        .collect();
    let unexpected: Vec<u64> = seen.keys().filter(|id| **id >= IDS).copied().collect();
    let duplicates: u64 = seen.values().map(|n| n - 1).sum();
    let status = gw.status().unwrap_or_default();
    let b = &status["bindings"][0];
    eprintln!(
        "chaos: faults [{}]; {} ids acked, {} reached OUT, lost {}, unexpected {}, duplicates {}; \
         gateway since its restart: handled {}, unconfirmed {}, dead-lettered {}",
        faults.join(", "),
        acked.len(),
        seen.len(),
        lost.len(),
        unexpected.len(),
        duplicates,
        b["handled"],
        b["publish_unconfirmed"],
        b["dead_lettered"],
    );
    assert!(
        lost.is_empty(),
        "lost {} acked ids (first {:?}); gateway log:\n{}",
        lost.len(),
        &lost[..lost.len().min(20)],
        tail(&gw.log(), 60)
    );
    assert!(unexpected.is_empty(), "unexpected ids: {unexpected:?}");
    assert_eq!(b["dead_lettered"], 0, "nothing dead-lettered");
}

/// The node leading `stream` now (waiting out an election).
async fn leader(js: &jetstream::Context, stream: &str) -> String {
    eventually(WAIT, "the stream has a leader", || async {
        stream_leader(js, stream).await
    })
    .await
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
