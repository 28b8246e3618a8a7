//! End to end through real nats-server processes: messages go through WASM
//! plugins, replies come back, faults stay inside one message.

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use wasmgate::Gateway;
use wasmgate_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_is_handled_and_output_arrives() {
    init_logs();
    let server = NatsServer::start();
    let gw = Running::start(upper_config(&[server.url()])).await;

    let nc = client(&server).await;
    let mut out = nc.subscribe("out.>").await.unwrap();
    nc.publish("in.greeting", "hello, wasm".into())
        .await
        .unwrap();
    let msg = tokio::time::timeout(WAIT, out.next())
        .await
        .expect("output arrives")
        .unwrap();
    assert_eq!(msg.subject.as_str(), "out.in.greeting");
    assert_eq!(msg.payload.as_ref(), b"HELLO, WASM");

    // Request-reply: the plugin replies with the upper-cased bytes.
    let reply = tokio::time::timeout(WAIT, nc.request("in.req", "ping".into()))
        .await
        .expect("reply in time")
        .expect("request succeeds");
    assert_eq!(reply.payload.as_ref(), b"PING");
    assert!(
        reply.headers.is_none(),
        "a success reply carries no error header"
    );

    let addr = gw.http_addr().unwrap();
    let (code, status) = http_get(addr, "/status").await;
    assert_eq!(code, 200);
    assert_eq!(status["state"], "connected");
    assert!(
        status["server_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("2.")),
        "the server's version: {}",
        status["server_version"]
    );
    assert_eq!(status["total_reconnects"], 0);
    let binding = &status["bindings"][0];
    assert_eq!(binding["plugin"], "upper");
    assert_eq!(binding["subject"], "in.>");
    assert_eq!(binding["state"], "bound");
    assert_eq!(binding["handled"], 2);
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_metrics(
        addr,
        &[
            "wasmgate_ready 1",
            "wasmgate_connection_state{state=\"connected\"} 1",
            "wasmgate_messages_total{plugin=\"upper\",subject=\"in.>\",outcome=\"handled\"} 2",
            "wasmgate_reconnects_total 0",
            "wasmgate_plugin_version{plugin=\"upper\"} 1",
        ],
    )
    .await;

    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_group_members_share_messages() {
    init_logs();
    let server = NatsServer::start();
    let mut config = test_config(&[server.url()]);
    let mut p = plugin("upper", "uppercase", &["work.>"], &[("prefix", "done")]);
    p.bindings[0].queue = Some("workers".into());
    config.plugins.push(p);
    let shutdown = CancellationToken::new();
    let a = Gateway::start(config.clone(), shutdown.clone())
        .await
        .unwrap();
    let b = Gateway::start(config, shutdown.clone()).await.unwrap();
    a.ready(WAIT).await.unwrap();
    b.ready(WAIT).await.unwrap();

    let nc = client(&server).await;
    let mut out = nc.subscribe("done.>").await.unwrap();
    for i in 0..200 {
        nc.publish(format!("work.{i}"), "x".into()).await.unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 200 {
        let msg = tokio::time::timeout(WAIT, out.next())
            .await
            .expect("all outputs")
            .unwrap();
        assert!(
            seen.insert(msg.subject.to_string()),
            "duplicate {}",
            msg.subject
        );
    }
    let handled = |g: &Gateway| g.status().bindings[0].handled;
    assert_eq!(
        handled(&a) + handled(&b),
        200,
        "each message handled by exactly one member"
    );
    assert!(
        handled(&a) > 0 && handled(&b) > 0,
        "both members took work: {} / {}",
        handled(&a),
        handled(&b)
    );

    shutdown.cancel();
    a.wait().await.unwrap();
    b.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_and_guest_errors_stay_inside_one_message() {
    init_logs();
    let server = NatsServer::start();
    let mut config = test_config(&[server.url()]);
    config
        .plugins
        .push(plugin("faulty", "faulty", &["f.>"], &[("prefix", "out")]));
    let gw = Running::start(config).await;
    let nc = client(&server).await;

    let ask = |payload: &'static str| {
        let nc = nc.clone();
        async move {
            tokio::time::timeout(WAIT, nc.request("f.x", payload.into()))
                .await
                .expect("a reply, not a timeout")
                .expect("request")
        }
    };
    let trapped = ask("trap").await;
    assert_eq!(error_kind(&trapped).as_deref(), Some("trap"));
    assert!(
        String::from_utf8_lossy(&trapped.payload).contains("trapped"),
        "{trapped:?}"
    );

    // A fresh instance serves the next message.
    let ok = ask("still alive").await;
    assert_eq!(error_kind(&ok), None);
    assert_eq!(ok.payload.as_ref(), b"still alive");

    let rejected = ask("reject").await;
    assert_eq!(error_kind(&rejected).as_deref(), Some("reject"));
    assert_eq!(rejected.payload.as_ref(), b"asked to reject");
    let retried = ask("retry").await;
    assert_eq!(error_kind(&retried).as_deref(), Some("retry"));

    // A publish the host refuses comes back to the guest as an error value.
    let refused = ask("bad-publish").await;
    assert_eq!(error_kind(&refused).as_deref(), Some("reject"));
    assert!(
        String::from_utf8_lossy(&refused.payload).contains("InvalidSubject"),
        "{refused:?}"
    );

    let b = &gw.status().bindings[0];
    assert_eq!((b.handled, b.trapped, b.rejected, b.retried), (1, 1, 2, 1));
    assert_eq!(gw.status().state, wasmgate::ConnectionState::Connected);

    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_messages_already_received() {
    init_logs();
    let server = NatsServer::start();
    let gw = Running::start(upper_config(&[server.url()])).await;

    let nc = client(&server).await;
    let mut out = nc.subscribe("out.>").await.unwrap();
    nc.flush().await.unwrap();
    for i in 0..500 {
        nc.publish(format!("in.{i}"), "payload".into())
            .await
            .unwrap();
    }
    nc.flush().await.unwrap();
    // Wait until the gateway has started on them, then shut down mid-stream.
    gw.wait_for(WAIT, |_| true).await.unwrap();
    eventually(WAIT, "first message handled", || async {
        (gw.status().bindings[0].handled > 0).then_some(())
    })
    .await;
    let status_rx = gw.status_watch();
    gw.stop().await;
    assert_eq!(status_rx.borrow().state, wasmgate::ConnectionState::Stopped);

    // Everything was flushed to the server before `wait` returned; a gap
    // of 2 s means the rest is not coming (a 500 ms gap once ended this
    // loop early on a loaded machine).
    let mut got = 0;
    while got < 500
        && let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), out.next()).await
    {
        got += 1;
    }
    let last = status_rx.borrow().clone();
    assert_eq!(
        got, 500,
        "every message the server delivered before the drain was handled and sent \
         ({} reconnects, last error {:?})",
        last.total_reconnects, last.last_error
    );
}
