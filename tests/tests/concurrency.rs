//! Per-plugin concurrency (pooled instances per binding) and the host-wide
//! cap with its backpressure choice, against a real nats-server.

use std::time::Duration;

use futures::future::join_all;
use wasmgate::config::Overload;
use wasmgate_tests::*;

fn interval(reply: &async_nats::Message) -> (u128, u128) {
    let text = String::from_utf8_lossy(&reply.payload).to_string();
    let (a, b) = text
        .split_once(',')
        .unwrap_or_else(|| panic!("not an interval: {text}"));
    (a.parse().unwrap(), b.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_overlap_and_handle_each_message_once() {
    init_logs();
    let server = NatsServer::start();
    let mut config = test_config(&[server.url()]);
    let mut p = plugin("sleepy", "sleepy", &["sleep.>"], &[]);
    p.concurrency = 4;
    config.plugins.push(p);
    let gw = Running::start(config).await;
    let nc = client(&server).await;

    let replies = join_all((0..8).map(|i| {
        let nc = nc.clone();
        async move {
            tokio::time::timeout(WAIT, nc.request(format!("sleep.{i}"), "200".into()))
                .await
                .expect("reply in time")
                .expect("request")
        }
    }))
    .await;
    let spans: Vec<_> = replies.iter().map(interval).collect();
    let overlapping = spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(
        overlapping,
        "with concurrency 4 some handlings run at the same time: {spans:?}"
    );
    assert_eq!(
        gw.status().bindings[0].handled,
        8,
        "each request handled once"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_one_keeps_order_and_never_overlaps() {
    init_logs();
    let server = NatsServer::start();
    let mut config = test_config(&[server.url()]);
    config
        .plugins
        .push(plugin("sleepy", "sleepy", &["sleep.>"], &[]));
    let gw = Running::start(config).await;
    let nc = client(&server).await;
    let replies = join_all((0..4).map(|i| {
        let nc = nc.clone();
        async move { nc.request(format!("sleep.{i}"), "50".into()).await.unwrap() }
    }))
    .await;
    let mut spans: Vec<_> = replies.iter().map(interval).collect();
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "sequential: {spans:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_host_sheds_and_counts() {
    const REQUESTS: usize = 12;
    init_logs();
    let server = NatsServer::start();
    let mut config = test_config(&[server.url()]);
    config.runtime.max_concurrent_calls = 1;
    config.runtime.overload = Overload::Shed;
    config.runtime.admission_wait = Duration::from_millis(50);
    let mut p = plugin("sleepy", "sleepy", &["sleep.>"], &[]);
    p.concurrency = 2;
    config.plugins.push(p);
    let gw = Running::start(config).await;
    let nc = client(&server).await;

    // The server spreads a queue group's messages at random: with 12, the
    // chance that one worker gets them all (and nothing waits) is 1 in 2048.
    let replies = join_all((0..REQUESTS).map(|i| {
        let nc = nc.clone();
        async move {
            tokio::time::timeout(WAIT, nc.request(format!("sleep.{i}"), "200".into()))
                .await
                .expect("a reply, not a timeout")
                .expect("request")
        }
    }))
    .await;
    let overloaded = replies
        .iter()
        .filter(|r| error_kind(r).as_deref() == Some("overloaded"))
        .count();
    let b = gw.status().bindings[0].clone();
    assert!(
        overloaded > 0,
        "a second batch waiting past admission_wait is shed"
    );
    assert_eq!(b.shed, overloaded as u64, "every shed message is counted");
    assert_eq!(b.handled + b.shed, REQUESTS as u64);
    gw.stop().await;
}

/// On a multi-thread runtime a call runs at once on the thread its worker
/// is on while a call slot is free: handlers blocked in long calls, one of
/// them on a runtime thread, must not stall another binding (nor the
/// connection, which the other binding's messages and replies go through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_blocked_in_long_calls_do_not_stall_another_binding() {
    init_logs();
    let server = NatsServer::start();
    let mut config = test_config(&[server.url()]);
    config.runtime.workers = 4;
    // Two bindings, so that the two sleeps surely run side by side (a
    // queue group could give both to one worker).
    let mut sleepy = plugin("sleepy", "sleepy", &["sleep.a", "sleep.b"], &[]);
    sleepy.timeout = Duration::from_secs(10);
    config.plugins.push(sleepy);
    config
        .plugins
        .push(plugin("echo", "echo", &["echo.>"], &[]));
    let gw = Running::start(config).await;
    let nc = client(&server).await;
    let unix_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    };

    // Two sleeps of 3 s, side by side: one called at once on a runtime
    // thread, the other on the pool.
    let slow = join_all(["a", "b"].map(|b| {
        let nc = nc.clone();
        async move {
            let r = tokio::time::timeout(WAIT, nc.request(format!("sleep.{b}"), "3000".into()))
                .await
                .expect("a reply in time")
                .expect("request");
            interval(&r)
        }
    }));
    let echo = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let asked = unix_ns();
        for i in 0..5 {
            let r = tokio::time::timeout(WAIT, nc.request(format!("echo.{i}"), "hi".into()))
                .await
                .expect("echo answers while the sleeps run")
                .expect("request");
            assert_eq!(&r.payload[..], b"hi");
        }
        (asked, unix_ns())
    };
    let (spans, (asked, answered)) = tokio::join!(slow, echo);
    assert!(
        spans
            .iter()
            .all(|&(start, end)| start < asked && answered < end),
        "the echo requests went and came back while both sleeps ran: sleeps {spans:?}, echo {asked}..{answered}"
    );
    assert_eq!(gw.status().bindings[2].handled, 5);
    gw.stop().await;
}
