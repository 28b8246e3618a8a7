//! Fault injection against real nats-server processes: kill -9 and restart,
//! SIGSTOP (a hung server), a server that never comes back, and the reconnect
//! callbacks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use wasmgate::config::OnExhausted;
use wasmgate::{ConnectionState, Gateway, ReconnectPath};
use wasmgate_tests::*;

/// Publish `n` unique messages and count how often each output arrives.
async fn send_and_count(server: &NatsServer, tag: &str, n: usize) -> HashMap<String, usize> {
    let nc = client(server).await;
    let mut out = nc.subscribe(format!("out.in.{tag}.>")).await.unwrap();
    for i in 0..n {
        nc.publish(format!("in.{tag}.{i}"), "x".into())
            .await
            .unwrap();
    }
    nc.flush().await.unwrap();
    let mut counts = HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    // Collect until every id arrived, then a little longer to catch duplicates.
    loop {
        let wait = if counts.len() == n {
            Duration::from_millis(300)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, out.next()).await {
            Ok(Some(msg)) => *counts.entry(msg.subject.to_string()).or_insert(0) += 1,
            _ => break,
        }
    }
    counts
}

fn assert_each_once(counts: &HashMap<String, usize>, n: usize) {
    assert_eq!(counts.len(), n, "every message handled");
    let dups: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(dups.is_empty(), "handled more than once: {dups:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_resumes_without_duplicate_bindings() {
    init_logs();
    let mut server = NatsServer::start();
    let gw = Running::start(upper_config(&[server.url()])).await;
    assert_each_once(&send_and_count(&server, "before", 50).await, 50);

    for round in 1..=2u64 {
        server.kill();
        gw.wait_for(WAIT, |s| s.state != ConnectionState::Connected)
            .await
            .unwrap();
        assert_eq!(http_get(gw.http_addr().unwrap(), "/readyz").await.0, 503);
        server.restart();
        gw.wait_for(WAIT, |s| s.ready && s.total_reconnects >= round)
            .await
            .unwrap();

        let (code, status) = http_get(gw.http_addr().unwrap(), "/status").await;
        assert_eq!(code, 200);
        assert_eq!(status["state"], "connected");
        assert_eq!(status["total_reconnects"], round);
        assert!(status["last_reconnect"].is_string(), "{status}");
        assert_eq!(status["bindings"][0]["state"], "bound");
        assert_eq!(http_get(gw.http_addr().unwrap(), "/readyz").await.0, 200);

        assert_each_once(
            &send_and_count(&server, &format!("after{round}"), 200).await,
            200,
        );
    }

    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_server_is_detected_and_the_supervisor_reconnects() {
    init_logs();
    let server = NatsServer::start();
    let config = upper_config(&[server.url()]);
    let (interval, timeout, threshold) = (
        config.health.interval,
        config.health.timeout,
        config.reconnect.failure_threshold,
    );
    let gw = Running::start(config).await;
    let paths = Arc::new(Mutex::new(Vec::new()));
    let p = paths.clone();
    gw.on_reconnect(move |e| {
        p.lock().unwrap().push(e.path);
        async { Ok(()) }
    })
    .await;

    server.pause();
    let paused = Instant::now();
    let seen = gw
        .wait_for(WAIT, |s| s.state == ConnectionState::Reconnecting)
        .await
        .unwrap_or_else(|e| panic!("no application-level reconnect after SIGSTOP: {e}"));
    let detected = paused.elapsed();
    println!("SIGSTOP noticed after {detected:?} (interval {interval:?} × threshold {threshold})");
    assert!(seen.consecutive_failures >= threshold || seen.last_error.is_some());
    // Generous: `threshold` failed probes, each within one interval plus its
    // timeout, plus the tick in progress and scheduling slack. Not a benchmark.
    let bound = (interval + timeout) * (threshold + 1) + Duration::from_secs(1);
    assert!(
        detected <= bound,
        "SIGSTOP noticed after {detected:?}, bound {bound:?}"
    );
    assert!(!gw.status().ready, "not ready while the server is down");

    tokio::time::sleep(Duration::from_millis(500)).await;
    server.resume();
    gw.wait_for(WAIT, |s| s.ready && s.total_reconnects >= 1)
        .await
        .unwrap();
    // Callbacks run right after the bindings are restored.
    eventually(WAIT, "the reconnect callback", || async {
        (!paths.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    assert_eq!(*paths.lock().unwrap(), vec![ReconnectPath::Supervisor]);
    assert_each_once(&send_and_count(&server, "resumed", 200).await, 200);

    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_attempts_exit_with_an_error() {
    init_logs();
    let mut server = NatsServer::start();
    let mut config = upper_config(&[server.url()]);
    config.reconnect.max_attempts = 3;
    config.reconnect.on_exhausted = OnExhausted::Exit;
    let gw = Gateway::start(config, CancellationToken::new())
        .await
        .unwrap();
    gw.ready(WAIT).await.unwrap();
    let status = gw.status_watch();

    server.kill();
    let result = tokio::time::timeout(WAIT, gw.wait())
        .await
        .expect("the gateway gives up in time");
    let err = result.expect_err("exhausted attempts end the gateway with an error");
    assert!(format!("{err:#}").contains("exhausted"), "{err:#}");
    let last = status.borrow().clone();
    assert_eq!(last.state, ConnectionState::Failed);
    assert!(!last.ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_attempts_keep_trying_when_configured() {
    init_logs();
    let mut server = NatsServer::start();
    let mut config = upper_config(&[server.url()]);
    config.reconnect.max_attempts = 3;
    config.reconnect.on_exhausted = OnExhausted::KeepTrying;
    let gw = Running::start(config).await;

    server.kill();
    gw.wait_for(WAIT, |s| s.state == ConnectionState::Failed)
        .await
        .unwrap();
    let addr = gw.http_addr().unwrap();
    assert_eq!(http_get(addr, "/readyz").await.0, 503);
    let (_, status) = http_get(addr, "/status").await;
    assert_eq!(status["state"], "failed");
    assert_eq!(
        http_get(addr, "/healthz").await.0,
        200,
        "the process stays up"
    );

    // Still trying every max_backoff: a returning server is picked up.
    server.restart();
    gw.wait_for(WAIT, |s| s.ready).await.unwrap();
    assert_each_once(&send_and_count(&server, "back", 50).await, 50);

    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_connect_exhausted_reports_failed() {
    init_logs();
    let port = free_port();
    let mut config = test_config(&[format!("nats://127.0.0.1:{port}")]);
    config.reconnect.max_attempts = 2;
    let gw = Gateway::start(config, CancellationToken::new())
        .await
        .unwrap();
    let status = gw.status_watch();
    let err = tokio::time::timeout(WAIT, gw.wait())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("gave up after 2 attempts"),
        "{err:#}"
    );
    assert_eq!(status.borrow().state, ConnectionState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_callbacks_run_once_per_reconnect_in_order() {
    init_logs();
    let mut server = NatsServer::start();
    let gw = Running::start(upper_config(&[server.url()])).await;

    let log = Arc::new(Mutex::new(Vec::new()));
    for name in ["first", "failing", "last"] {
        let log = log.clone();
        gw.on_reconnect(move |e| {
            log.lock().unwrap().push((name, e.total_reconnects));
            async move {
                if name == "failing" {
                    anyhow::bail!("this callback always fails");
                }
                Ok(())
            }
        })
        .await;
    }

    for round in 1..=3u64 {
        server.kill();
        gw.wait_for(WAIT, |s| s.state != ConnectionState::Connected)
            .await
            .unwrap();
        server.restart();
        gw.wait_for(WAIT, |s| s.ready && s.total_reconnects >= round)
            .await
            .unwrap();
        // The failing callback is recorded but the reconnect stands.
        eventually(WAIT, "callbacks ran", || async {
            (log.lock().unwrap().len() == 3 * round as usize).then_some(())
        })
        .await;
    }
    let expected: Vec<_> = (1..=3u64)
        .flat_map(|r| [("first", r), ("failing", r), ("last", r)])
        .collect();
    assert_eq!(*log.lock().unwrap(), expected);
    let status = gw.status();
    assert!(status.ready);
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("always fails"),
        "{:?}",
        status.last_error
    );
    assert_each_once(&send_and_count(&server, "cb", 50).await, 50);

    gw.stop().await;
}
