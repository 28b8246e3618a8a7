//! Several gateways on one cluster, as operators scale out: three `wasmgate`
//! processes on one config file, the example operators copy
//! (`examples/cluster/wasmgate.toml`), share a core queue group and a
//! durable JetStream consumer on a 3-node cluster. The load splits over all three;
//! one is killed with SIGKILL mid-stream and the other two take its work:
//! every JetStream input acked to the producer reaches the output stream.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use wasmgate_tests::cluster::{Cluster, publish_with_retry};
use wasmgate_tests::process::{GatewayProcess, examples_dir};
use wasmgate_tests::*;

/// The example's bindings, in its order.
const CORE: usize = 0;
const JETSTREAM: usize = 1;

/// JetStream ids published in all; the first gateway dies after a third.
const IDS: u64 = 600;

/// `handled` of binding `i` of a gateway process, 0 when it cannot say.
fn handled(gw: &GatewayProcess, i: usize) -> u64 {
    gw.status()
        .ok()
        .and_then(|s| s["bindings"][i]["handled"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_the_work_and_survive_one_killed() {
    init_logs();
    let cluster = tokio::task::block_in_place(|| Cluster::start(3));
    let nc = cluster.client().await;
    let js = jetstream::new(nc.clone());
    pipeline::create_streams(&js).await;

    // The example's plugins are the release builds the kit makes.
    plugin_wasm("uppercase");
    let file = examples_dir().join("cluster/wasmgate.toml");
    let urls = cluster.urls();
    let env = [
        ("NATS_URL_1", urls[0].clone()),
        ("NATS_URL_2", urls[1].clone()),
        ("NATS_URL_3", urls[2].clone()),
    ];
    let mut gateways: Vec<GatewayProcess> = tokio::task::block_in_place(|| {
        (0..3)
            .map(|_| GatewayProcess::start_file(&file, &env))
            .collect()
    });

    // Core: a queue group splits requests over the three.
    for i in 0..150 {
        let reply = nc
            .request(format!("work.{i}"), "w".into())
            .await
            .expect("a gateway answers");
        assert_eq!(text(&reply), "W");
    }
    let core_split: Vec<u64> = gateways.iter().map(|g| handled(g, CORE)).collect();
    assert_eq!(core_split.iter().sum::<u64>(), 150, "{core_split:?}");
    assert!(
        core_split.iter().all(|&n| n > 0),
        "every gateway of the queue group got work: {core_split:?}"
    );

    // JetStream: one durable consumer, three pullers; one is killed.
    let mut acked = BTreeSet::new();
    for id in 0..IDS {
        if id == IDS / 3 {
            let split: Vec<u64> = gateways.iter().map(|g| handled(g, JETSTREAM)).collect();
            eprintln!("gateways: JetStream inputs handled before the kill: {split:?}");
            assert!(
                split.iter().filter(|&&n| n > 0).count() >= 2,
                "the durable consumer's messages spread: {split:?}"
            );
            tokio::task::block_in_place(|| gateways[0].kill());
        }
        let subject = format!("in.{id}");
        publish_with_retry(&js, &subject, &format!("id-{id}"), "x".into(), WAIT).await;
        acked.insert(id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let seen: BTreeSet<u64> = pipeline::outputs(&js, &acked, WAIT)
        .await
        .into_keys()
        .collect();
    let lost: Vec<u64> = acked.difference(&seen).copied().collect();
    let survivors: Vec<u64> = gateways[1..]
        .iter()
        .map(|g| handled(g, JETSTREAM))
        .collect();
    eprintln!(
        "gateways: {} acked, {} reached OUT, lost {}; survivors handled {survivors:?}",
        acked.len(),
        seen.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost {lost:?}");
    assert!(
        survivors.iter().all(|&n| n > 0),
        "both survivors took work: {survivors:?}"
    );
}
