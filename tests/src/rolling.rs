//! A rolling restart of a 3-node cluster under load, for the test that
//! asserts nothing is lost (`tests/tests/cluster_lame_duck.rs`) and the
//! benchmark that counts it (`bench run --only rolling`): each node in turn is put in
//! lame duck mode, restarted and given time to rejoin, under a steady core
//! stream to a queue group and a JetStream stream.
//!
//! The test's own clients are pinned to one node each (one URL, so they
//! never wander): the publisher moves off a node before it is put in lame
//! duck mode, and every node's client collects the outputs, so that only
//! the gateway can lose a message.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::cluster::{Cluster, FORM_WAIT, publish_with_retry, test_connect_options};
use crate::{WAIT, eventually, plugin, test_config};

/// Pause between two core messages (about 500 a second).
const PACE: Duration = Duration::from_millis(2);

/// What a rolling restart did to the traffic.
#[derive(Debug, Clone)]
pub struct Report {
    /// Core messages published, and those whose output never arrived.
    pub sent: u64,
    pub lost: Vec<u64>,
    /// JetStream inputs acked to the producer, and their outputs seen.
    pub js_sent: u64,
    pub js_seen: u64,
    /// How long the restart of all nodes took.
    pub elapsed: Duration,
    /// When each lost core message was published, and what the test did
    /// when, both since the traffic started: to see which step a loss
    /// follows.
    pub lost_at: Vec<Duration>,
    pub events: Vec<(Duration, String)>,
}

impl Report {
    /// The lost messages next to the test's steps, for a failure message.
    pub fn timeline(&self) -> String {
        let mut lines: Vec<(Duration, String)> = self.events.clone();
        for (id, at) in self.lost.iter().zip(&self.lost_at) {
            lines.push((*at, format!("  lost core message {id}")));
        }
        lines.sort();
        lines
            .iter()
            .map(|(t, what)| format!("{:>8.3}s {what}", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The R3 streams (`IN` on `in.>`, `OUT` on `out.>`) and the gateway's
/// config: binding 0 is `work.>` in queue group `workers` (outputs to
/// `done.work.<id>`), binding 1 consumes `IN` (outputs to `out.in.<id>`).
pub async fn prepare(cluster: &Cluster) -> wasmgate::Config {
    let js = jetstream::new(cluster.client().await);
    crate::pipeline::create_streams(&js).await;
    let mut config = test_config(&cluster.urls());
    let mut core = plugin("work", "uppercase", &["work.>"], &[("prefix", "done")]);
    core.bindings[0].queue = Some("workers".into());
    config.plugins.push(core);
    config.plugins.push(crate::pipeline::upper("gw"));
    config
}

/// Restart every node of `cluster` in turn through lame duck mode while
/// traffic flows through a gateway started on [`prepare`]'s config, then
/// count what arrived.
pub async fn run(cluster: &mut Cluster) -> Report {
    let nc = cluster.client().await;
    let js = jetstream::new(nc.clone());
    // One client per node, each collecting every output.
    let mut pinned = Vec::new();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<u64>();
    for node in &cluster.nodes {
        let c = test_connect_options().connect(node.url()).await.unwrap();
        let mut outputs = c.subscribe("done.work.>").await.unwrap();
        c.flush().await.unwrap();
        let tx = seen_tx.clone();
        tokio::spawn(async move {
            while let Some(m) = outputs.next().await {
                if let Ok(id) = std::str::from_utf8(&m.payload).unwrap_or("").parse() {
                    let _ = tx.send(id);
                }
            }
        });
        pinned.push(c);
    }
    // Every collector's subscription known across the cluster before any
    // message is sent.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The steady core stream, from whichever node the test points it at.
    let (publisher, on) = watch::channel(pinned[1].clone());
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let published_at = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut events: Vec<(Duration, String)> = vec![(
        Duration::ZERO,
        format!("traffic starts (unix time {:.3})", wall.as_secs_f64()),
    )];
    let core_task = {
        let (sent, stop, at) = (sent.clone(), stop.clone(), published_at.clone());
        tokio::spawn(async move {
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let c = on.borrow().clone();
                at.lock().unwrap().push(t0.elapsed());
                c.publish(format!("work.{id}"), id.to_string().into())
                    .await
                    .unwrap();
                id += 1;
                sent.store(id, Ordering::Relaxed);
                tokio::time::sleep(PACE).await;
            }
            let last = on.borrow().clone();
            last.flush().await.unwrap();
        })
    };
    // And JetStream inputs, retried until acked.
    let js_acked = Arc::new(AtomicU64::new(0));
    let js_task = {
        let (js, acked, stop) = (js.clone(), js_acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                publish_with_retry(
                    &js,
                    &format!("in.{id}"),
                    &format!("id-{id}"),
                    "x".into(),
                    WAIT,
                )
                .await;
                id += 1;
                acked.store(id, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    for i in 0..cluster.nodes.len() {
        // The publisher leaves the node first.
        let elsewhere = (i + 1) % cluster.nodes.len();
        let old = publisher.send_replace(pinned[elsewhere].clone());
        old.flush().await.unwrap();
        events.push((
            t0.elapsed(),
            format!("publisher moved to {}", cluster.nodes[elsewhere].name),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::task::block_in_place(|| {
            let node = &mut cluster.nodes[i];
            let name = node.name.clone();
            events.push((t0.elapsed(), format!("{} put in lame duck mode", node.name)));
            node.lame_duck();
            assert!(
                node.wait_exit(Duration::from_secs(40)).is_some(),
                "{} leaves after lame duck mode",
                node.name
            );
            events.push((t0.elapsed(), format!("{} exited", node.name)));
            node.restart();
            cluster.wait_ready(FORM_WAIT);
            events.push((t0.elapsed(), format!("{name} back, cluster ready")));
        });
        // Its pinned client back, and its subscription known everywhere.
        eventually(WAIT, "the pinned client reconnected", || async {
            (pinned[i].connection_state() == async_nats::connection::State::Connected).then_some(())
        })
        .await;
        pinned[i].flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    core_task.await.unwrap();
    js_task.await.unwrap();
    let sent = sent.load(Ordering::Relaxed);
    let js_sent = js_acked.load(Ordering::Relaxed);

    // Every core message's output, on some collector.
    let mut seen = BTreeSet::new();
    let _ = tokio::time::timeout(WAIT, async {
        while (seen.len() as u64) < sent {
            match seen_rx.recv().await {
                Some(id) => {
                    seen.insert(id);
                }
                None => break,
            }
        }
    })
    .await;
    let lost: Vec<u64> = (0..sent).filter(|id| !seen.contains(id)).collect();
    let lost_at = {
        let at = published_at.lock().unwrap();
        lost.iter()
            .map(|id| at.get(*id as usize).copied().unwrap_or_default())
            .collect()
    };

    // Every JetStream input's output, in the output stream.
    let want: BTreeSet<u64> = (0..js_sent).collect();
    let js_seen = crate::pipeline::outputs(&js, &want, WAIT).await;
    Report {
        sent,
        lost,
        js_sent,
        js_seen: js_seen.keys().filter(|id| want.contains(id)).count() as u64,
        elapsed,
        lost_at,
        events,
    }
}
