//! Trace context and OTLP export, through real nats-server processes and the
//! real binary: a W3C `traceparent` on an incoming message is the parent of
//! its `message` span, the plugin's publish and reply carry the span's own
//! context (its child), the span reaches an OTLP receiver the test runs, and
//! without export the context passes through unchanged. Bad export settings
//! stop the start, naming the key or variable.

use std::process::Command;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::StreamExt;
use wasmgate_tests::otlp::{OtlpReceiver, ReceivedSpan};
use wasmgate_tests::process::{GatewayProcess, wasmgate_bin};
use wasmgate_tests::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE}-{PARENT_SPAN}-01")
}

fn traced_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("traceparent", traceparent().as_str());
    h.insert("tracestate", "vendor=abc");
    h
}

/// The one `traceparent` of `msg` split into (trace id, span id, flags);
/// panics if it has none or several.
fn context_of(msg: &async_nats::Message) -> (String, String, String) {
    let headers = msg.headers.as_ref().expect("headers on the message");
    let values: Vec<&str> = headers.get_all("traceparent").map(|v| v.as_str()).collect();
    assert_eq!(values.len(), 1, "one traceparent, not {values:?}");
    let parts: Vec<&str> = values[0].split('-').collect();
    assert_eq!(parts.len(), 4, "{values:?}");
    assert_eq!(parts[0], "00", "{values:?}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn header<'a>(msg: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("the output arrives")
        .expect("subscription open")
}

/// The gateway binary exporting to `receiver` (batches every 100 ms) with
/// the `upper` plugin on `in.>`.
fn exporting_gateway(server: &NatsServer, receiver: &OtlpReceiver) -> GatewayProcess {
    let mut config = upper_config(&[server.url()]);
    config.telemetry.otlp_endpoint = receiver.url();
    GatewayProcess::start_with_env(&config, &[("OTEL_BSP_SCHEDULE_DELAY", "100".into())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_trace_continues_through_the_plugin_into_its_publish_and_reply() {
    let server = NatsServer::start();
    let receiver = OtlpReceiver::start().await;
    let gw = tokio::task::block_in_place(|| exporting_gateway(&server, &receiver));

    let nc = client(&server).await;
    let mut out = nc.subscribe("out.>").await.unwrap();
    nc.flush().await.unwrap();
    let reply = tokio::time::timeout(
        WAIT,
        nc.request_with_headers("in.traced", traced_headers(), "ping".into()),
    )
    .await
    .expect("a reply in time")
    .expect("the request succeeds");
    assert_eq!(reply.payload.as_ref(), b"PING");
    let published = next(&mut out).await;
    assert_eq!(published.subject.as_str(), "out.in.traced");

    // Both carry one context: the incoming trace, a span of the gateway's
    // (not the sender's, which the plugin copied into its publish).
    let (trace, span, flags) = context_of(&reply);
    assert_eq!(trace, TRACE);
    assert_ne!(span, PARENT_SPAN);
    assert_eq!(flags, "01");
    assert_eq!(context_of(&published), (trace.clone(), span.clone(), flags));
    assert_eq!(header(&reply, "tracestate"), Some("vendor=abc"));
    assert_eq!(header(&published, "tracestate"), Some("vendor=abc"));

    // That span reached the collector, as the child of the sender's.
    let spans = receiver
        .wait_for("message", |s| s.iter().any(|s| s.trace_id == TRACE))
        .await;
    let message: &ReceivedSpan = spans.iter().find(|s| s.trace_id == TRACE).unwrap();
    assert_eq!(message.parent_span_id, PARENT_SPAN, "{message:#?}");
    assert_eq!(message.span_id, span, "{message:#?}");
    assert_eq!(message.kind, 5, "a consumer span: {message:#?}");
    assert_eq!(message.attribute("messaging.system"), Some("nats"));
    assert_eq!(
        message.attribute("messaging.destination.name"),
        Some("in.traced")
    );
    assert_eq!(message.attribute("messaging.message.body.size"), Some("4"));
    assert_eq!(message.attribute("wasmgate.plugin"), Some("upper"));
    assert_eq!(message.service.as_deref(), Some("wasmgate"));

    // A message without context starts a trace; its publish carries it.
    nc.publish("in.plain", "hello".into()).await.unwrap();
    let plain = next(&mut out).await;
    assert_eq!(plain.subject.as_str(), "out.in.plain");
    let (new_trace, new_span, _) = context_of(&plain);
    assert_ne!(new_trace, TRACE);
    let spans = receiver
        .wait_for("message", |s| s.iter().any(|s| s.trace_id == new_trace))
        .await;
    let root = spans.iter().find(|s| s.trace_id == new_trace).unwrap();
    assert_eq!(root.parent_span_id, "", "a root span: {root:#?}");
    assert_eq!(root.span_id, new_span);
    assert_eq!(
        root.attribute("messaging.destination.name"),
        Some("in.plain")
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_export_a_trace_context_passes_through_unchanged() {
    init_logs();
    let server = NatsServer::start();
    let mut config = upper_config(&[server.url()]);
    config.plugins.push(jetstream_plugin(
        "js-upper",
        "uppercase",
        "jsin.>",
        &[("prefix", "jsout")],
        js_config("TRACED", "traced"),
    ));
    // Every publish of this one is refused: it rejects, with an error reply.
    config.plugins.push(plugin(
        "refused",
        "uppercase",
        &["bad.>"],
        &[("prefix", "bad prefix")],
    ));
    let gw = Running::start(config).await;

    let nc = client(&server).await;
    let mut out = nc.subscribe("out.>").await.unwrap();
    let mut js_out = nc.subscribe("jsout.>").await.unwrap();
    nc.flush().await.unwrap();

    let reply = tokio::time::timeout(
        WAIT,
        nc.request_with_headers("in.traced", traced_headers(), "ping".into()),
    )
    .await
    .expect("a reply in time")
    .expect("the request succeeds");
    let published = next(&mut out).await;
    for msg in [&reply, &published] {
        assert_eq!(header(msg, "traceparent"), Some(traceparent().as_str()));
        assert_eq!(header(msg, "tracestate"), Some("vendor=abc"));
        context_of(msg);
    }

    // An error reply carries it too.
    let refused = tokio::time::timeout(
        WAIT,
        nc.request_with_headers("bad.x", traced_headers(), "x".into()),
    )
    .await
    .expect("an error reply in time")
    .expect("the request gets an answer");
    assert_eq!(header(&refused, wasmgate::ERROR_HEADER), Some("reject"));
    assert_eq!(
        header(&refused, "traceparent"),
        Some(traceparent().as_str())
    );
    assert_eq!(header(&refused, "tracestate"), Some("vendor=abc"));

    // Through a JetStream binding the same.
    let js = async_nats::jetstream::new(nc.clone());
    js.publish_with_headers("jsin.traced", traced_headers(), "ping".into())
        .await
        .expect("publish to the stream")
        .await
        .expect("stored");
    let published = next(&mut js_out).await;
    assert_eq!(published.subject.as_str(), "jsout.jsin.traced");
    assert_eq!(
        header(&published, "traceparent"),
        Some(traceparent().as_str())
    );

    // Nothing exported, nothing started: a message without context gets none.
    nc.publish("in.plain", "hello".into()).await.unwrap();
    let plain = next(&mut out).await;
    assert_eq!(header(&plain, "traceparent"), None, "{:?}", plain.headers);

    // A malformed context is not continued: the reply (which the gateway
    // writes; the publish has the headers the plugin copied) has none.
    let mut bad = HeaderMap::new();
    bad.insert("traceparent", "00-not-a-context-01");
    let reply = tokio::time::timeout(WAIT, nc.request_with_headers("in.bad", bad, "x".into()))
        .await
        .expect("a reply in time")
        .expect("the request succeeds");
    assert_eq!(header(&reply, "traceparent"), None, "{:?}", reply.headers);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_variables_alone_turn_export_on_and_queued_spans_are_flushed_at_shutdown() {
    let server = NatsServer::start();
    let receiver = OtlpReceiver::start().await;
    let config = upper_config(&[server.url()]);
    // A minute between batches: what arrives, arrives because of SIGTERM.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url()),
        ("OTEL_SERVICE_NAME", "gateway-east".to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "60000".to_string()),
    ];
    let mut gw = tokio::task::block_in_place(|| GatewayProcess::start_with_env(&config, &env));
    let nc = client(&server).await;
    let mut out = nc.subscribe("out.>").await.unwrap();
    nc.flush().await.unwrap();
    nc.publish_with_headers("in.flushed", traced_headers(), "x".into())
        .await
        .unwrap();
    next(&mut out).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.count(),
        0,
        "nothing is sent before the batch is due"
    );

    let status = tokio::task::block_in_place(|| gw.terminate()).expect("it was running");
    assert!(status.success(), "{status}:\n{}", gw.log());
    let spans = receiver
        .wait_for("message", |s| s.iter().any(|s| s.trace_id == TRACE))
        .await;
    let span = spans.iter().find(|s| s.trace_id == TRACE).unwrap();
    assert_eq!(span.service.as_deref(), Some("gateway-east"));
    assert_eq!(span.parent_span_id, PARENT_SPAN);
}

/// `wasmgate <args>` on a config with `telemetry` as given and `env`: its
/// exit code and stderr.
fn wasmgate(args: &[&str], telemetry: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wasmgate.toml");
    std::fs::write(
        &file,
        format!("[nats]\nservers = [\"nats://127.0.0.1:1\"]\n\n[telemetry]\n{telemetry}\n"),
    )
    .unwrap();
    let mut command = Command::new(wasmgate_bin());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(args)
        .arg(&file)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run wasmgate");
    // Each case stops before connecting; one that did not would retry the
    // unreachable server for ever.
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for wasmgate") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("wasmgate {args:?} did not stop within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut err)
        .expect("read stderr");
    (status.code(), err)
}

#[test]
fn bad_export_settings_stop_the_start_naming_the_key_or_variable_and_no_password() {
    let validate: &[&str] = &["config", "validate"];
    // The variables are read by `run`, before anything connects.
    let run: &[&str] = &["run", "--no-watch", "--config"];
    /// The command, the `[telemetry]` table, the environment, what the error says.
    type Case<'a> = (
        &'a [&'a str],
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
    );
    let cases: [Case; 4] = [
        (
            validate,
            "otlp_endpoint = \"http://collector:hunter2@127.0.0.1:4318\"",
            &[],
            &["telemetry.otlp_endpoint", "credentials"],
        ),
        (
            validate,
            "otlp_endpoint = \"https://127.0.0.1:4318\"",
            &[],
            &["telemetry.otlp_endpoint", "https"],
        ),
        (
            run,
            "",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            &["OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"],
        ),
        (
            run,
            "",
            &[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://u:hunter2@127.0.0.1:1/v1/traces",
            )],
            &["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"],
        ),
    ];
    for (args, telemetry, env, says) in cases {
        let (code, err) = wasmgate(args, telemetry, env);
        assert_eq!(code, Some(2), "{args:?} {telemetry} {env:?}: {err}");
        for word in says {
            assert!(err.contains(word), "{word:?} in: {err}");
        }
        assert!(!err.contains("hunter2"), "{err}");
    }
}
