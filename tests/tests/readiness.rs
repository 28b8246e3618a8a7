//! Honest readiness against a real nats-server that refuses some of the
//! gateway's subscriptions: a connection limit (`max_subscriptions`) and a
//! user's subscribe permissions. A refused binding is `failed` with the
//! server's words, never `bound`, and `/readyz` answers 503 while one is;
//! every binding reported `bound` handles its messages. Room made by a
//! reload lets the refused ones bind on the next health check.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use wasmgate::config::{BindingConfig, Secret};
use wasmgate::status::BindingState;
use wasmgate_tests::*;

const USER: &str = "gateway";
const PASSWORD: &str = "readiness-test-password";

/// A server that allows each connection `limit` subscriptions and lets the
/// gateway's user subscribe to anything but `denied.>`.
fn limited_server(limit: usize) -> NatsServer {
    NatsServer::start_with_config(&format!(
        "max_subscriptions: {limit}\n\
         authorization {{\n  users = [\n    {{ user: {USER}, password: {PASSWORD}, \
         permissions: {{ subscribe: {{ deny: [\"denied.>\"] }} }} }}\n  ]\n}}\n"
    ))
}

async fn test_client(server: &NatsServer) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(USER.into(), PASSWORD.into())
        .connect(server.url())
        .await
        .expect("test client connects")
}

fn binding(subject: String) -> BindingConfig {
    BindingConfig {
        subject,
        queue: None,
        jetstream: None,
        buffer: None,
    }
}

/// `n` bindings `ready.0` … of the `upper` plugin, publishing to `out.ready.<i>`.
fn config(server: &NatsServer, subjects: &[String]) -> wasmgate::config::Config {
    let mut c = test_config(&[server.url()]);
    c.nats.auth.user = Some(USER.into());
    c.nats.auth.password = Some(Secret::new(PASSWORD));
    let mut p = plugin("upper", "uppercase", &[], &[("prefix", "out")]);
    p.bindings = subjects.iter().cloned().map(binding).collect();
    c.plugins.push(p);
    c
}

/// Publish one message to each subject and return the subjects whose output came back.
async fn served(nc: &async_nats::Client, subjects: &[String]) -> BTreeSet<String> {
    let mut outputs = nc.subscribe("out.>").await.unwrap();
    nc.flush().await.unwrap();
    for s in subjects {
        nc.publish(s.clone(), "x".into()).await.unwrap();
    }
    nc.flush().await.unwrap();
    let mut seen = BTreeSet::new();
    // Every bound subject answers within moments; the wait is for the ones
    // that should not, bounded.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(m) = outputs.next().await {
            seen.insert(m.subject.trim_start_matches("out.").to_string());
            if seen.len() == subjects.len() {
                break;
            }
        }
    })
    .await;
    seen
}

#[tokio::test]
async fn bindings_the_server_refuses_are_failed_not_bound_and_readyz_is_503() {
    init_logs();
    const LIMIT: usize = 10;
    let server = limited_server(LIMIT);
    // More bindings than the connection may subscribe, and one the user may not.
    let mut subjects: Vec<String> = (0..15).map(|i| format!("ready.{i}")).collect();
    subjects.push("denied.one".into());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gw = wasmgate::Gateway::start(config(&server, &subjects), shutdown.clone())
        .await
        .expect("gateway starts");
    // Every binding is decided: bound, or failed with the reason.
    let status = gw
        .wait_for(WAIT, |s| {
            s.bindings.len() == subjects.len()
                && s.bindings
                    .iter()
                    .all(|b| matches!(b.state, BindingState::Bound | BindingState::Failed))
        })
        .await
        .expect("every binding bound or failed");
    assert!(
        gw.ready(Duration::from_millis(500)).await.is_err(),
        "not ready"
    );

    let failed: Vec<&wasmgate::status::BindingStatus> = status
        .bindings
        .iter()
        .filter(|b| b.state == BindingState::Failed)
        .collect();
    let bound: Vec<String> = status
        .bindings
        .iter()
        .filter(|b| b.state == BindingState::Bound)
        .map(|b| b.subject.clone())
        .collect();
    let denied = failed
        .iter()
        .find(|b| b.subject == "denied.one")
        .expect("the denied subject's binding failed");
    assert!(
        denied
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("Permissions Violation for Subscription to \"denied.one\""),
        "the server's words: {:?}",
        denied.error
    );
    let over: Vec<_> = failed
        .iter()
        .filter(|b| b.subject != "denied.one")
        .collect();
    // The gateway has a subscription of its own (the health probe), maybe more.
    assert!(
        over.len() >= 15 - (LIMIT - 1),
        "at least {} refused by the limit, {} were: {status:#?}",
        15 - (LIMIT - 1),
        over.len()
    );
    for b in &over {
        assert_eq!(
            b.error.as_deref(),
            Some("the server refused the subscription: maximum subscriptions exceeded"),
            "{}",
            b.subject
        );
    }
    assert_eq!(bound.len() + failed.len(), subjects.len());

    // Bound means served, and failed means not.
    let nc = test_client(&server).await;
    let seen = served(&nc, &subjects).await;
    assert_eq!(
        seen,
        bound.iter().cloned().collect::<BTreeSet<_>>(),
        "exactly the bound bindings handled their message: {:#?}\n{}",
        gw.status(),
        server.log()
    );

    // /readyz says so, with the failed bindings named.
    let addr = gw.http_addr().expect("http listener");
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");

    // A reload that keeps three bound bindings and two refused ones makes
    // room: the refused ones bind on the next health check.
    let keep_failed: Vec<String> = over.iter().take(2).map(|b| b.subject.clone()).collect();
    let mut fewer: Vec<String> = bound.iter().take(3).cloned().collect();
    fewer.extend(keep_failed.iter().cloned());
    gw.reload(config(&server, &fewer)).await.expect("reload");
    gw.ready(WAIT)
        .await
        .expect("ready once every binding is bound");
    let (code, _) = http_get(addr, "/readyz").await;
    assert_eq!(code, 200);
    let seen = served(&nc, &fewer).await;
    assert_eq!(
        seen,
        fewer.iter().cloned().collect::<BTreeSet<_>>(),
        "all served"
    );

    shutdown.cancel();
    gw.wait().await.expect("clean shutdown");
}

/// An operator's server without JetStream: the JetStream binding is
/// `failed`, saying so, while the core binding beside it binds and handles
/// its messages; the gateway is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_jetstream_fails_only_the_jetstream_binding_saying_why() {
    init_logs();
    let server = NatsServer::start_without_jetstream();
    let mut config = upper_config(&[server.url()]);
    config.plugins.push(jetstream_plugin(
        "stored",
        "uppercase",
        "jsin.>",
        &[("prefix", "out")],
        js_config("NOJS", "nojs"),
    ));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gw = wasmgate::Gateway::start(config, shutdown.clone())
        .await
        .expect("the gateway starts: what the server lacks is a binding's problem");
    let status = eventually(WAIT, "the JetStream binding fails", || async {
        let s = gw.status();
        (s.bindings[1].state == BindingState::Failed).then_some(s)
    })
    .await;
    let error = status.bindings[1].error.clone().unwrap_or_default();
    assert!(
        error.contains("JetStream") && error.contains("not enabled"),
        "the error says what is missing: {error:?}"
    );
    let status = eventually(WAIT, "the core binding binds", || async {
        let s = gw.status();
        (s.bindings[0].state == BindingState::Bound).then_some(s)
    })
    .await;
    assert!(!status.ready, "not ready while a binding failed");
    let (code, _) = http_get(gw.http_addr().unwrap(), "/readyz").await;
    assert_eq!(code, 503);

    let nc = client(&server).await;
    let mut out = nc.subscribe("out.>").await.unwrap();
    nc.flush().await.unwrap();
    nc.publish("in.core", "still works".into()).await.unwrap();
    let msg = tokio::time::timeout(WAIT, out.next())
        .await
        .expect("the core binding's output")
        .unwrap();
    assert_eq!(msg.payload.as_ref(), b"STILL WORKS");

    shutdown.cancel();
    gw.wait().await.expect("clean shutdown");
}
