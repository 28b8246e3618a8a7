//! The uppercase handler written in Rust (with the `wasmgate-plugin` SDK),
//! Python (componentize-py) and JavaScript (componentize-js) behaves the same
//! through a live in-process gateway on a real nats-server: one behaviour
//! test, run alike for each language. Each example exports `batch-handler`,
//! so this goes through its batch path (the single-message `handle` path is
//! what `wasmgate invoke` runs, in `host/tests/`).
//!
//! The Python and JavaScript components are built by
//! `scripts/build-polyglot.sh` (called through the harness); a missing tool
//! makes these tests fail with the script's output, never skip.

use std::path::PathBuf;

use futures::StreamExt;
use wasmgate::ERROR_HEADER;
use wasmgate_tests::*;

async fn next(sub: &mut async_nats::Subscriber, what: &str) -> async_nats::Message {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what} did not arrive within {WAIT:?}"))
        .unwrap_or_else(|| panic!("subscription ended before {what}"))
}

fn header(msg: &async_nats::Message, name: &str) -> Option<String> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}

async fn uppercase_behaviour(wasm: PathBuf) {
    init_logs();
    let server = NatsServer::start();
    let mut config = test_config(&[server.url()]);
    // A non-default prefix proves the handler reads its config; a prefix with
    // a space makes every publish invalid, which the host refuses.
    config.plugins.push(plugin_from(
        "upper",
        wasm.clone(),
        &["in.>"],
        &[("prefix", "up")],
    ));
    config.plugins.push(plugin_from(
        "broken",
        wasm.clone(),
        &["bad.>"],
        &[("prefix", "bad prefix")],
    ));
    // A JetStream binding: its batches carry each message's metadata.
    let mut stream = plugin_from("stream", wasm, &["jsin.>"], &[("prefix", "up")]);
    stream.bindings[0].jetstream = Some(js_config("POLYGLOT", "polyglot"));
    config.plugins.push(stream);
    let gw = Running::start(config).await;

    let nc = client(&server).await;
    let mut out = nc.subscribe("up.>").await.unwrap();
    nc.flush().await.unwrap();

    // 1. Upper-cased (ASCII only) to <prefix>.<subject>, headers carried over.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Trace", "abc-123");
    headers.append("X-Tag", "one");
    headers.append("X-Tag", "two");
    nc.publish_with_headers("in.greeting", headers, "hello, wäsm".into())
        .await
        .unwrap();
    let msg = next(&mut out, "the upper-cased publish").await;
    assert_eq!(msg.subject.as_str(), "up.in.greeting");
    assert_eq!(
        String::from_utf8_lossy(&msg.payload),
        "HELLO, WäSM",
        "only ASCII letters change"
    );
    assert_eq!(header(&msg, "X-Trace").as_deref(), Some("abc-123"));
    let tags: Vec<String> = msg
        .headers
        .as_ref()
        .map(|h| h.get_all("X-Tag").map(|v| v.as_str().to_string()).collect())
        .unwrap_or_default();
    assert_eq!(
        tags,
        ["one", "two"],
        "repeated headers keep their values and order"
    );

    // 2. Request-reply: the reply is the same upper-cased bytes, no error header.
    let reply = tokio::time::timeout(WAIT, nc.request("in.req", "ping".into()))
        .await
        .expect("a reply in time")
        .expect("request succeeds");
    assert_eq!(reply.payload.as_ref(), b"PING");
    assert_eq!(header(&reply, ERROR_HEADER), None);
    let published = next(&mut out, "the request's publish").await;
    assert_eq!(published.subject.as_str(), "up.in.req");
    assert_eq!(published.payload.as_ref(), b"PING");

    // 3. A refused publish rejects the message, with the same reason in every language.
    let refused = tokio::time::timeout(WAIT, nc.request("bad.x", "oops".into()))
        .await
        .expect("an error reply, not a timeout")
        .expect("request");
    assert_eq!(header(&refused, ERROR_HEADER).as_deref(), Some("reject"));
    assert_eq!(
        String::from_utf8_lossy(&refused.payload),
        "publish failed: invalid-subject: subject \"bad prefix.bad.x\" contains whitespace"
    );

    // 4. From a stream, acked once handled.
    let js = async_nats::jetstream::new(nc.clone());
    js.publish("jsin.stored", "from a stream".into())
        .await
        .expect("publish to the stream")
        .await
        .expect("stored");
    let stored = next(&mut out, "the stream message's publish").await;
    assert_eq!(stored.subject.as_str(), "up.jsin.stored");
    assert_eq!(stored.payload.as_ref(), b"FROM A STREAM");
    eventually(WAIT, "the stream message is acked", || async {
        (ack_pending(&js, "POLYGLOT", "polyglot").await == 0).then_some(())
    })
    .await;

    let status = gw.status();
    let upper = &status.bindings[0];
    let broken = &status.bindings[1];
    assert_eq!(
        (upper.plugin.as_str(), broken.plugin.as_str()),
        ("upper", "broken")
    );
    assert_eq!(
        (upper.handled, upper.rejected, upper.retried, upper.trapped),
        (2, 0, 0, 0)
    );
    assert_eq!(
        (
            broken.handled,
            broken.rejected,
            broken.retried,
            broken.trapped
        ),
        (0, 1, 0, 0)
    );
    assert_eq!(
        broken.publish_failed, 0,
        "the refused publish never reached NATS"
    );
    // Every language's example exports `batch-handler`: what was checked
    // above went through `handle-batch`, the refused publish included.
    for p in &status.plugins {
        assert!(p.batched, "plugin {} exports batch-handler", p.name);
        assert!(
            p.jetstream_batched,
            "plugin {} takes JetStream batches",
            p.name
        );
    }
    let stream = &status.bindings[2];
    assert_eq!((stream.handled, stream.batches), (1, 1), "{stream:?}");
    // A batch that trapped or came back malformed is run again one message
    // at a time, which would pass every check above: none was.
    for b in &status.bindings {
        assert_eq!(b.batches_rerun, 0, "{}: {b:?}", b.plugin);
    }
    assert!(
        upper.batches >= 1 && broken.batches == 1,
        "handled in batches: {} and {} handle-batch calls",
        upper.batches,
        broken.batches
    );

    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_uppercase_behaviour() {
    uppercase_behaviour(plugin_wasm("uppercase")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_uppercase_behaviour() {
    uppercase_behaviour(polyglot_wasm("python-uppercase")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_uppercase_behaviour() {
    uppercase_behaviour(polyglot_wasm("js-uppercase")).await;
}
