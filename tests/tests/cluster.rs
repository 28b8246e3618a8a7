//! The 3-node JetStream cluster harness ([`wasmgate_tests::cluster`]) on real
//! nats-server processes: an R3 stream takes acked publishes; killing its
//! leader elects another and the restarted node catches up; a node in lame
//! duck mode tells its clients and exits; a paused (SIGSTOP) leader is
//! replaced and rejoins when resumed. Each test prints its timings (run with
//! `--nocapture` to see them).
//!
//! Run on nats-server 2.9.10 and 2.15.1. On 2.9 the paused-leader test only
//! reports (WARNING on stderr) when the resumed node's own copy of the
//! stream misses messages acked during its pause, which 2.9.10 does now and
//! then while its leader lists that node as current; on 2.10+ the copies
//! must be level.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use wasmgate_tests::WAIT;
use wasmgate_tests::cluster::{
    Cluster, create_stream_with_retry, publish_with_retry, server_version, stream_leader,
    test_connect_options, wait_local_messages, wait_stream_current,
};

fn r3_file_stream(name: &str) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        num_replicas: 3,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// A JetStream context whose requests (and publish acks) time out after 1 s,
/// so a publish lost with a dying leader is retried soon.
fn quick_js(client: async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(1));
    js
}

/// Publish `range` as `<subject>` messages with ids `<prefix>-<i>`, retrying
/// each until acked; how many attempts the slowest took.
async fn publish_range(
    js: &jetstream::Context,
    subject: &str,
    prefix: &str,
    range: std::ops::Range<u32>,
) -> u32 {
    let mut worst = 0;
    for i in range {
        let (ack, attempts) = publish_with_retry(
            js,
            subject,
            &format!("{prefix}-{i}"),
            format!("message {i}").into(),
            WAIT,
        )
        .await;
        assert!(!ack.stream.is_empty());
        worst = worst.max(attempts);
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_stream_takes_acked_publishes() {
    let t0 = Instant::now();
    let cluster = Cluster::start(3);
    let formed = t0.elapsed();
    assert_eq!(cluster.urls().len(), 3);
    assert_eq!(cluster.client_urls_csv().split(',').count(), 3);
    let conf = cluster.nodes[0].config();
    assert!(conf.contains("server_name: n1\n"), "{conf}");
    assert_eq!(
        conf.contains("sync_interval: always"),
        server_version() >= (2, 10, 0),
        "sync_interval is written exactly for servers that take it:\n{conf}"
    );
    println!(
        "[r3] nats-server {:?}, n1's server.conf:\n{conf}",
        server_version()
    );

    let js = quick_js(cluster.client().await);
    let t = Instant::now();
    let mut stream = create_stream_with_retry(&js, r3_file_stream("ORDERS")).await;
    let created = t.elapsed();
    let info = stream.info().await.expect("stream info").clone();
    assert_eq!(info.config.num_replicas, 3);
    let c = info
        .cluster
        .as_ref()
        .expect("a clustered stream has cluster info");
    let leader = c.leader.clone().expect("the stream has a leader");
    assert!(leader.starts_with('n'), "leader {leader:?}");
    assert_eq!(c.name.as_deref(), Some("wasmgate-test"));
    assert_eq!(c.replicas.len(), 2, "{c:?}");
    assert!(c.replicas.iter().all(|p| p.name != leader), "{c:?}");

    let t = Instant::now();
    let mut acks = 0;
    for i in 0..100u64 {
        // A stream with a leader may not yet have its subjects' interest on
        // the node this client talks to (the first publish can find no
        // stream): the first is retried until the stream takes it.
        let ack = if i == 0 {
            publish_with_retry(&js, "orders.new", "r3-0", "order 0".into(), WAIT)
                .await
                .0
        } else {
            js.publish("orders.new", format!("order {i}").into())
                .await
                .expect("publish sent")
                .await
                .expect("publish acked")
        };
        assert_eq!(ack.sequence, i + 1);
        assert!(!ack.duplicate);
        acks += 1;
    }
    let published = t.elapsed();
    assert_eq!(acks, 100);
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, 100);
    println!(
        "[r3] formed in {formed:?}, stream created in {created:?} (leader {leader}), \
         100 acked publishes in {published:?}, total {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_and_restarted_node_catches_up() {
    let t0 = Instant::now();
    let mut cluster = Cluster::start(3);
    let js = quick_js(cluster.client().await);
    create_stream_with_retry(&js, r3_file_stream("KILL")).await;
    publish_range(&js, "kill.a", "a", 0..100).await;

    let leader = stream_leader(&js, "KILL").await.expect("a stream leader");
    let killed_at = Instant::now();
    cluster.node_mut(&leader).kill();
    assert!(!cluster.node_mut(&leader).is_running());

    // The first publish waits out the election.
    let (_, attempts) = publish_with_retry(&js, "kill.b", "b-0", "first".into(), WAIT).await;
    let first_ack = killed_at.elapsed();
    publish_range(&js, "kill.b", "b", 1..100).await;
    let new_leader = stream_leader(&js, "KILL")
        .await
        .expect("a new stream leader");
    assert_ne!(new_leader, leader);
    let mut stream = js.get_stream("KILL").await.expect("stream");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, 200);
    let down = info
        .cluster
        .as_ref()
        .unwrap()
        .replicas
        .iter()
        .find(|p| p.name == leader);
    assert!(
        down.is_some_and(|p| !p.current),
        "the killed node is listed, not current: {:?}",
        info.cluster
    );

    let restart_at = Instant::now();
    cluster.node_mut(&leader).restart();
    let info = wait_stream_current(&js, "KILL", Some(200), WAIT).await;
    let caught_up = restart_at.elapsed();
    assert!(
        info.cluster
            .as_ref()
            .unwrap()
            .replicas
            .iter()
            .all(|p| p.current),
        "{:?}",
        info.cluster
    );
    // The restarted node's own copy, not the leader's answer.
    wait_local_messages(cluster.node(&leader), "KILL", 200, WAIT).await;
    tokio::task::block_in_place(|| cluster.wait_ready(WAIT));
    println!(
        "[kill] leader {leader} killed: first ack after {first_ack:?} ({attempts} attempts), \
         new leader {new_leader}; restarted node current after {caught_up:?}; total {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lame_duck_node_tells_clients_and_exits() {
    let t0 = Instant::now();
    let mut cluster = Cluster::start(3);
    let js = quick_js(cluster.client().await);
    create_stream_with_retry(&js, r3_file_stream("LDM")).await;
    publish_range(&js, "ldm.a", "a", 0..10).await;

    // Lame-duck the stream's leader, with a client connected to it alone.
    let name = stream_leader(&js, "LDM").await.expect("a stream leader");
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let watcher = test_connect_options()
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((Instant::now(), event));
            }
        })
        .connect(cluster.node(&name).url())
        .await
        .expect("client connects to the node");
    watcher.flush().await.expect("flush");
    while events.try_recv().is_ok() {} // the Connected event

    let signalled = Instant::now();
    cluster.node(&name).lame_duck();
    let told = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Some((at, async_nats::Event::LameDuckMode)) => return at - signalled,
                Some(_) => continue,
                None => panic!("event channel closed"),
            }
        }
    })
    .await
    .expect("the client hears of lame duck mode within 5 s");
    let node = cluster.node_mut(&name);
    let status = tokio::task::block_in_place(|| node.wait_exit(Duration::from_secs(10)))
        .unwrap_or_else(|| panic!("{name} still runs 10 s after lame duck\n{}", node.log()));
    let exited = signalled.elapsed();
    assert!(status.success(), "{name} exited with {status}");
    assert!(
        exited < Duration::from_secs(5),
        "grace is 1 s, exit took {exited:?}"
    );
    assert!(node.log().contains("lame duck"), "{}", node.log());

    // The stream moved on, and the watcher follows to another node.
    publish_range(&js, "ldm.b", "b", 0..10).await;
    let new_leader = stream_leader(&js, "LDM")
        .await
        .expect("a new stream leader");
    assert_ne!(new_leader, name);
    wasmgate_tests::eventually(WAIT, "the watcher reconnects to another node", || async {
        (watcher.connection_state() == async_nats::connection::State::Connected).then_some(())
    })
    .await;

    tokio::task::block_in_place(|| {
        cluster.node_mut(&name).restart();
        cluster.wait_ready(WAIT);
    });
    wait_stream_current(&js, "LDM", Some(20), WAIT).await;
    wait_local_messages(cluster.node(&name), "LDM", 20, WAIT).await;
    println!(
        "[ldm] {name} (stream leader) told its client after {told:?}, exited after {exited:?}; \
         new leader {new_leader}; total {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_is_replaced_and_rejoins() {
    let t0 = Instant::now();
    let mut cluster = Cluster::start(3);
    let js = quick_js(cluster.client().await);
    create_stream_with_retry(&js, r3_file_stream("PAUSE")).await;
    publish_range(&js, "pause.a", "a", 0..50).await;

    let leader = stream_leader(&js, "PAUSE").await.expect("a stream leader");
    // Publish through the other nodes only: a client of the paused one
    // would wait minutes for its pings to fail.
    let others: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.name != leader)
        .map(|n| n.url())
        .collect();
    let js2 = quick_js(
        test_connect_options()
            .ignore_discovered_servers()
            .connect(others)
            .await
            .expect("client of the other nodes"),
    );

    let paused_at = Instant::now();
    cluster.node_mut(&leader).pause();
    let (_, attempts) = publish_with_retry(&js2, "pause.b", "b-0", "first".into(), WAIT).await;
    let first_ack = paused_at.elapsed();
    publish_range(&js2, "pause.b", "b", 1..50).await;
    let new_leader = stream_leader(&js2, "PAUSE")
        .await
        .expect("a new stream leader");
    assert_ne!(new_leader, leader);

    let resumed_at = Instant::now();
    cluster.node_mut(&leader).resume();
    assert!(cluster.node_mut(&leader).is_running());
    wait_stream_current(&js2, "PAUSE", Some(100), WAIT).await;
    let reported = resumed_at.elapsed();
    tokio::task::block_in_place(|| cluster.wait_ready(WAIT));
    let ready = resumed_at.elapsed();

    // Usable again through every node, the resumed one included.
    let js3 = quick_js(
        test_connect_options()
            .connect(cluster.node(&leader).url())
            .await
            .expect("client of the resumed node"),
    );
    publish_with_retry(&js3, "pause.c", "c-0", "after".into(), WAIT).await;
    wait_stream_current(&js3, "PAUSE", Some(101), WAIT).await;

    // Every node's own copy. 2.9 (seen on 2.9.10, about 1 run in 5) can
    // leave the resumed former leader without some of the messages acked
    // while it was stopped, for good, while the leader lists it as current:
    // there the divergence is reported, not failed; 2.10+ must be level.
    let copies = if server_version() >= (2, 10, 0) {
        for node in &cluster.nodes {
            wait_local_messages(node, "PAUSE", 101, WAIT).await;
        }
        "all copies hold 101".to_string()
    } else {
        let t = Instant::now();
        loop {
            let counts: Vec<_> = cluster
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.local_stream_messages("PAUSE")))
                .collect();
            if counts.iter().all(|(_, c)| *c == Ok(Some(101))) {
                break "all copies hold 101".to_string();
            }
            if t.elapsed() > Duration::from_secs(5) {
                eprintln!(
                    "WARNING: nats-server {:?}: copies of PAUSE diverged after SIGSTOP/SIGCONT \
                     of the stream leader {leader}: {counts:?}",
                    server_version()
                );
                break format!("copies DIVERGED (known 2.9 defect): {counts:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    println!(
        "[pause] leader {leader} paused for {:?}: first ack after {first_ack:?} ({attempts} attempts), \
         new leader {new_leader}; after resume: reported current in {reported:?}, cluster ready in \
         {ready:?}; {copies}; total {:?}",
        resumed_at - paused_at,
        t0.elapsed()
    );
}
