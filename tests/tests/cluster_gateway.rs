//! The gateway on a 3-node JetStream cluster: `create = true` leaves an
//! operator's R3 stream at three replicas and makes its own with the
//! `replicas` it is given; a dead-letter stream whose only server is down
//! makes the gateway nak and count, and keeps the message until that server
//! is back.

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use wasmgate::config::JetStreamConfig;
use wasmgate_tests::cluster::{
    Cluster, create_stream_with_retry, publish_with_retry, stream_leader,
};
use wasmgate_tests::*;

fn gateway(cluster: &Cluster, wasm: &str, subject: &str, js: JetStreamConfig) -> wasmgate::Config {
    let mut config = test_config(&cluster.urls());
    let p = jetstream_plugin("probe", wasm, subject, &[("prefix", "out")], js);
    config.plugins.push(p);
    config
}

fn file_stream(name: &str, subject: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_r3_stream_stays_r3_and_the_gateways_own_gets_its_replicas() {
    init_logs();
    let cluster = tokio::task::block_in_place(|| Cluster::start(3));
    let nc = cluster.client().await;
    let js = jetstream::new(nc.clone());
    let before = create_stream_with_retry(&js, file_stream("ORDERS", "orders.>", 3))
        .await
        .cached_info()
        .config
        .clone();

    // The gateway's idea of ORDERS has one replica (the default); of MADE, three.
    let mut config = gateway(&cluster, "uppercase", "orders.>", js_config("ORDERS", "gw"));
    let mut own = js_config("MADE", "gw");
    own.replicas = 3;
    let made = jetstream_plugin("made", "uppercase", "made.>", &[("prefix", "out")], own);
    config.plugins.push(made);
    let gw = Running::start(config).await;

    let mut out = nc.subscribe("out.>").await.unwrap();
    nc.flush().await.unwrap();
    publish_with_retry(&js, "orders.1", "orders-1", "one".into(), WAIT).await;
    let msg = tokio::time::timeout(WAIT, out.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&msg.payload[..], b"ONE");

    let orders = stream_info(&js, "ORDERS").await;
    assert_eq!(orders.config.num_replicas, 3, "still R3");
    assert_eq!(orders.config, before, "not rewritten at all");
    let made = stream_info(&js, "MADE").await;
    assert_eq!(made.config.num_replicas, 3);
    let replicas = made.cluster.as_ref().map_or(0, |c| c.replicas.len());
    assert_eq!(replicas, 2, "a leader and two replicas: {:?}", made.cluster);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_stream_without_its_server_keeps_the_message() {
    init_logs();
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(3));
    let nc = cluster.client().await;
    let js = jetstream::new(nc.clone());
    // The input and the dead letters on one server each, different ones:
    // the dead-letter stream's server can go while the input stays.
    let input = create_stream_with_retry(&js, file_stream("IN", "in.>", 1)).await;
    let input_node = input.cached_info().cluster.as_ref().unwrap().leader.clone();
    let mut dlq_node;
    loop {
        create_stream_with_retry(&js, file_stream("DLQ", "dlq.>", 1)).await;
        dlq_node = stream_leader(&js, "DLQ").await;
        if dlq_node.is_some() && dlq_node != input_node {
            break;
        }
        js.delete_stream("DLQ").await.unwrap();
    }
    let dlq_node = dlq_node.unwrap();

    let mut binding = js_config("IN", "gw");
    binding.dead_letter = Some("dlq.in".into());
    binding.max_deliver = 0;
    let gw = Running::start(gateway(&cluster, "jsprobe", "in.>", binding)).await;

    tokio::task::block_in_place(|| cluster.node_mut(&dlq_node).kill());
    // Retried while the client's node may not see the stream's interest yet.
    publish_with_retry(&js, "in.poison", "poison-1", "reject".into(), WAIT).await;
    eventually(WAIT, "dead letters refused and counted", || async {
        (gw.status().bindings[0].dead_letter_failed >= 2).then_some(())
    })
    .await;
    let b = &gw.status().bindings[0];
    assert_eq!(b.dead_lettered, 0, "{b:?}");
    let kept = stream_info(&js, "IN").await;
    assert_eq!(kept.state.messages, 1, "the input is kept");

    tokio::task::block_in_place(|| {
        cluster.node_mut(&dlq_node).restart();
        cluster.wait_ready(WAIT);
    });
    eventually(WAIT, "the kept message dead-lettered", || async {
        (gw.status().bindings[0].dead_lettered == 1).then_some(())
    })
    .await;
    let dlq = stream_info(&js, "DLQ").await;
    assert_eq!(dlq.state.messages, 1);
    gw.stop().await;
}
