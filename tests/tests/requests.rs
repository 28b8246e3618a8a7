//! Requests from plugins (`requester`, WIT 0.1.5) through a real server: a
//! plugin asks another plugin of the same gateway and answers with both;
//! waiting requests do not hold the threads their answers need; every way a
//! request fails reaches the handler as its typed error, bounded by the
//! handler's deadline, and is counted.

use std::time::Duration;

use futures::StreamExt;
use wasmgate::config::PluginConfig;
use wasmgate_tests::*;

/// `enrich` on `subject`, asking `lookup`, granted `allow`.
fn enrich(
    name: &str,
    subject: &str,
    lookup: &str,
    allow: &[&str],
    more: &[(&str, &str)],
) -> PluginConfig {
    let mut config = vec![("lookup", lookup)];
    config.extend_from_slice(more);
    let mut p = plugin(name, "enrich", &[subject], &config);
    p.request_allow = allow.iter().map(|s| s.to_string()).collect();
    p
}

/// The lookup service: the `uppercase` plugin, answering on `lookup.upper`.
fn upper() -> PluginConfig {
    plugin(
        "upper",
        "uppercase",
        &["lookup.upper"],
        &[("prefix", "looked")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_asks_another_plugin_and_answers_with_both() {
    let f = Fixture::start([
        enrich(
            "enrich",
            "ask.>",
            "lookup.upper",
            &["lookup.>"],
            &[("prefix", "enriched")],
        ),
        upper(),
    ])
    .await;
    let mut published = f.nc.subscribe("enriched.>").await.unwrap();
    f.nc.flush().await.unwrap();

    let reply = f.ask("ask.one", "hello").await;
    assert_eq!(error_kind(&reply), None, "{}", text(&reply));
    assert_eq!(text(&reply), "hello+HELLO");
    let out = tokio::time::timeout(WAIT, published.next())
        .await
        .expect("the enriched publish arrives")
        .unwrap();
    assert_eq!(out.subject.as_str(), "enriched.ask.one");
    assert_eq!(&out.payload[..], b"hello+HELLO");

    let status = f.gw.status();
    let plugin = status.plugins.iter().find(|p| p.name == "enrich").unwrap();
    assert!(plugin.batched, "the request was made inside handle-batch");
    assert_eq!(plugin.requests.ok, 1, "{:?}", plugin.requests);
    assert_eq!(f.binding("upper").handled, 1);
    assert_metrics(
        f.gw.http_addr().unwrap(),
        &[
            "wasmgate_requests_total{plugin=\"enrich\",outcome=\"ok\"} 1".to_string(),
            "wasmgate_requests_total{plugin=\"enrich\",outcome=\"refused\"} 0".to_string(),
            "wasmgate_request_duration_seconds_count{plugin=\"enrich\"} 1".to_string(),
        ],
    )
    .await;
    f.finish().await;
}

/// One call slot, four workers of the asking plugin: while a call waits for
/// its answer its slot is the answering plugin's, so every request is
/// answered (holding the slot, each would wait out its timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_do_not_hold_the_slot_their_answer_needs() {
    init_logs();
    let server = NatsServer::start();
    let mut config = test_config(&[server.url()]);
    config.runtime.workers = 1;
    let mut asking = enrich(
        "enrich",
        "ask.>",
        "lookup.upper",
        &["lookup.>"],
        &[("timeout_ms", "3000")],
    );
    asking.concurrency = 4;
    asking.timeout = Duration::from_secs(5);
    config.plugins.push(asking);
    config.plugins.push(upper());
    let gw = Running::start(config).await;
    let nc = client(&server).await;

    let asks = (0..20).map(|i| {
        let nc = nc.clone();
        async move {
            let reply =
                tokio::time::timeout(WAIT, nc.request(format!("ask.{i}"), format!("m{i}").into()))
                    .await
                    .expect("a reply in time")
                    .expect("the request succeeds");
            (i, reply)
        }
    });
    for (i, reply) in futures::future::join_all(asks).await {
        assert_eq!(error_kind(&reply), None, "ask {i}: {}", text(&reply));
        assert_eq!(text(&reply), format!("m{i}+M{i}"));
    }
    let status = gw.status();
    let plugin = status.plugins.iter().find(|p| p.name == "enrich").unwrap();
    assert_eq!(plugin.requests.ok, 20, "{:?}", plugin.requests);
    assert_eq!(plugin.requests.timed_out, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_reach_the_handler_as_their_kind() {
    let mut slow = enrich(
        "slow",
        "ask.slow",
        "lookup.slow",
        &["lookup.>"],
        &[("timeout_ms", "10000")],
    );
    slow.timeout = Duration::from_millis(400);
    let f = Fixture::start([
        enrich("nobody", "ask.nobody", "nobody.home", &["nobody.>"], &[]),
        enrich("ungranted", "ask.ungranted", "secret.x", &["lookup.>"], &[]),
        enrich("default", "ask.default", "lookup.upper", &[], &[]),
        enrich("reserved", "ask.reserved", "$JS.API.INFO", &[">"], &[]),
        enrich(
            "large",
            "ask.large",
            "lookup.upper",
            &["lookup.>"],
            &[("repeat", "2")],
        ),
        slow,
        upper(),
    ])
    .await;
    // Someone listens on lookup.slow, but never answers.
    let _silent = f.nc.subscribe("lookup.slow").await.unwrap();
    f.nc.flush().await.unwrap();

    let cases: [(&str, &str, &str); 5] = [
        ("ask.nobody", "retry", "request failed: no-responders"),
        (
            "ask.ungranted",
            "reject",
            "request failed: forbidden: secret.x",
        ),
        (
            "ask.default",
            "reject",
            "request failed: forbidden: lookup.upper",
        ),
        (
            "ask.reserved",
            "reject",
            "request failed: forbidden: $JS.API.INFO: $JS is a reserved namespace",
        ),
        // Ten seconds asked, 400 ms left of the deadline: the request ends
        // first and the handler says why (a call past its deadline would be
        // interrupted: `timeout`, no reason of its own).
        ("ask.slow", "retry", "request failed: timed-out"),
    ];
    for (subject, kind, reason) in cases {
        let reply = f.ask(subject, "x").await;
        assert_eq!(
            error_kind(&reply).as_deref(),
            Some(kind),
            "{subject}: {}",
            text(&reply)
        );
        assert!(
            text(&reply).starts_with(reason),
            "{subject}: {}",
            text(&reply)
        );
    }
    // Twice a payload that fits is more than the server takes.
    let max = f.nc.server_info().max_payload;
    let big = "y".repeat(max / 2 + 1);
    let reply = f.ask("ask.large", &big).await;
    assert_eq!(error_kind(&reply).as_deref(), Some("reject"));
    assert_eq!(
        text(&reply),
        format!("request failed: payload-too-large: max {max} bytes")
    );

    let status = f.gw.status();
    let requests = |name: &str| {
        status
            .plugins
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .requests
            .clone()
    };
    assert_eq!(requests("nobody").no_responders, 1);
    assert_eq!(requests("slow").timed_out, 1);
    for name in ["ungranted", "default", "reserved"] {
        let r = requests(name);
        assert_eq!((r.refused, r.forbidden, r.ok), (1, 1, 0), "{name}: {r:?}");
    }
    let large = requests("large");
    assert_eq!((large.refused, large.forbidden), (1, 0));
    assert_eq!(f.binding("upper").handled, 0, "no refused request was sent");
    f.finish().await;
}

/// `wasmgate invoke --nats URL` gives a handler's requests a connection: the
/// enricher's lookup is answered by a responder on that server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_with_nats_answers_a_handlers_request() {
    init_logs();
    let server = NatsServer::start();
    let nc = client(&server).await;
    let mut lookups = nc.subscribe("lookup").await.unwrap();
    nc.flush().await.unwrap();
    let responder = {
        let nc = nc.clone();
        tokio::spawn(async move {
            while let Some(m) = lookups.next().await {
                if let Some(reply) = m.reply {
                    nc.publish(reply, "LOOKED UP".into()).await.unwrap();
                }
            }
        })
    };
    let wasm = plugin_wasm("enrich");
    let url = server.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(wasmgate_tests::process::wasmgate_bin())
            .args([
                "invoke",
                wasm.to_str().unwrap(),
                "--subject",
                "in.x",
                "--payload",
                "hi",
            ])
            .args([
                "--reply-to",
                "inbox.1",
                "--nats",
                &url,
                "--request-allow",
                "lookup",
            ])
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("reply (12 bytes): \"hi+LOOKED UP\""),
        "{stdout}"
    );
    assert!(stdout.ends_with("result: ok\n"), "{stdout}");
    responder.abort();
}

/// The Python and JavaScript enrichers make the same request as the Rust
/// one and map its failures the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_handlers_make_the_same_requests() {
    let mut plugins = vec![upper()];
    for lang in ["python", "js"] {
        let path = polyglot_wasm(&format!("{lang}-enrich"));
        for (name, lookup, allow) in [
            (lang.to_string(), "lookup.upper", "lookup.>"),
            (format!("{lang}-nobody"), "nobody.home", "nobody.>"),
            (format!("{lang}-ungranted"), "secret.x", "lookup.>"),
        ] {
            let subject = format!("ask.{name}");
            let mut p = plugin_from(&name, path.clone(), &[&subject], &[("lookup", lookup)]);
            p.request_allow = vec![allow.to_string()];
            p.timeout = Duration::from_secs(10);
            plugins.push(p);
        }
    }
    let f = Fixture::start(plugins).await;
    for lang in ["python", "js"] {
        let reply = f.ask(&format!("ask.{lang}"), "hello").await;
        assert_eq!(error_kind(&reply), None, "{lang}: {}", text(&reply));
        assert_eq!(text(&reply), "hello+HELLO", "{lang}");
        let reply = f.ask(&format!("ask.{lang}-nobody"), "x").await;
        assert_eq!(error_kind(&reply).as_deref(), Some("retry"), "{lang}");
        assert_eq!(text(&reply), "request failed: no-responders", "{lang}");
        let reply = f.ask(&format!("ask.{lang}-ungranted"), "x").await;
        assert_eq!(error_kind(&reply).as_deref(), Some("reject"), "{lang}");
        assert_eq!(
            text(&reply),
            "request failed: forbidden: secret.x",
            "{lang}"
        );
    }
    f.finish().await;
}
