//! Least privilege, tried as an attacker would: a plugin with the default
//! grant (`publish_allow = [">"]`) asks the host to publish into the server's
//! reserved namespaces — delete a stream through `$JS.API`, query `$SYS`,
//! write a KV key, settle a message of another consumer through its `$JS.ACK`
//! subject, reach another client's `_INBOX`. Each is refused with
//! `forbidden`, counted, and nothing of it reaches the server, while the
//! same plugin's ordinary publishes and the host's replies to `_INBOX`
//! subjects keep working. A grant naming a namespace literally reaches it;
//! no grant reaches `$JS.ACK`.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use wasmgate_tests::*;

/// Ask the `faulty` plugin on `subject` to publish `payload` to `target`;
/// its reply says `published` or `refused: <error>`.
async fn publish_via(
    nc: &async_nats::Client,
    subject: &str,
    target: &str,
    payload: &str,
) -> String {
    let reply = tokio::time::timeout(
        WAIT,
        nc.request(
            subject.to_string(),
            format!("publish-to:{target} {payload}").into(),
        ),
    )
    .await
    .expect("the plugin answers in time")
    .expect("request");
    String::from_utf8_lossy(&reply.payload).into_owned()
}

/// The stream behind KV bucket `b`, made as the KV API makes it (the KV
/// API itself needs a newer server than some this suite runs on).
async fn kv_bucket(js: &jetstream::Context) -> stream::Stream {
    js.create_stream(stream::Config {
        name: "KV_b".into(),
        subjects: vec!["$KV.b.>".into()],
        max_messages_per_subject: 1,
        ..Default::default()
    })
    .await
    .expect("create the bucket's stream")
}

/// The bucket's value of `key`, if set.
async fn kv_get(bucket: &stream::Stream, key: &str) -> Option<Vec<u8>> {
    bucket
        .get_last_raw_message_by_subject(&format!("$KV.b.{key}"))
        .await
        .ok()
        .map(|m| m.payload.to_vec())
}

/// The plugin's `publish_forbidden` count, as `/status` shows it.
fn forbidden(gw: &Running, plugin: &str) -> u64 {
    let status = gw.status();
    let p = status
        .plugins
        .iter()
        .find(|p| p.name == plugin)
        .expect("plugin in status");
    p.publish_forbidden
}

/// A stream with one message, and a durable consumer holding it unacked:
/// returns the message's `$JS.ACK` subject.
async fn pending_message(js: &jetstream::Context) -> String {
    js.create_stream(stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    })
    .await
    .expect("create stream");
    js.publish("orders.1", "first".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let stream = js.get_stream("ORDERS").await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("worker".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let msg = batch.next().await.expect("one message").expect("message");
    let ack = msg.reply.as_ref().expect("an ack subject").to_string();
    assert!(ack.starts_with("$JS.ACK.ORDERS.worker."), "{ack}");
    ack
}

/// A server with a pending message (its ack subject) and bucket `b`.
async fn setup() -> (
    NatsServer,
    async_nats::Client,
    jetstream::Context,
    String,
    stream::Stream,
) {
    init_logs();
    let server = NatsServer::start();
    let nc = client(&server).await;
    let js = jetstream::new(nc.clone());
    let ack = pending_message(&js).await;
    let bucket = kv_bucket(&js).await;
    (server, nc, js, ack, bucket)
}

#[tokio::test]
async fn the_default_grant_reaches_no_reserved_namespace() {
    let (server, nc, js, ack, bucket) = setup().await;
    // Anything that leaks to these subjects in the default account arrives here.
    let mut sys = nc.subscribe("$SYS.>").await.unwrap();
    let mut victim_inbox = nc.subscribe("_INBOX.victim.>").await.unwrap();
    let mut out = nc.subscribe("out.>").await.unwrap();
    nc.flush().await.unwrap();

    let mut config = test_config(&[server.url()]);
    let faulty = plugin("faulty", "faulty", &["f.>"], &[]);
    assert_eq!(faulty.publish_allow, [">"], "the default grant");
    config.plugins.push(faulty);
    config
        .plugins
        .push(plugin("upper", "uppercase", &["u.>"], &[("prefix", "out")]));
    let gw = Running::start(config).await;

    let refused = [
        ("$JS.API.STREAM.DELETE.ORDERS", "$JS"),
        ("$JS.API.CONSUMER.DELETE.ORDERS.worker", "$JS"),
        ("$SYS.REQ.SERVER.PING", "$SYS"),
        ("$KV.b.k", "$KV"),
        ("_INBOX.victim.1", "_INBOX"),
    ];
    for (target, namespace) in refused {
        let reply = publish_via(&nc, "f.x", target, "{}").await;
        assert!(
            reply.starts_with("refused: PublishError::Forbidden(")
                && reply.contains(&format!("{namespace} is a reserved namespace")),
            "{target}: {reply}"
        );
    }
    let reply = publish_via(&nc, "f.x", &ack, "").await;
    assert!(
        reply.starts_with("refused: PublishError::Forbidden(")
            && reply.contains("no grant reaches $JS.ACK"),
        "{reply}"
    );
    for settle in ["+NAK", "+TERM", "+WPI"] {
        let reply = publish_via(&nc, "f.x", &ack, settle).await;
        assert!(
            reply.starts_with("refused: PublishError::Forbidden("),
            "{settle}: {reply}"
        );
    }
    // The same plugin's ordinary publish goes out: the refusals above are the rule's.
    assert_eq!(
        publish_via(&nc, "f.x", "out.allowed", "yes").await,
        "published"
    );
    let allowed = tokio::time::timeout(WAIT, out.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(allowed.subject.as_str(), "out.allowed");

    assert_eq!(forbidden(&gw, "faulty"), refused.len() as u64 + 4);

    // A header that would make the server purge the output stream's other
    // subjects (the uppercase handler forwards the incoming headers).
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Rollup", "all");
    let reply = tokio::time::timeout(WAIT, nc.request_with_headers("u.x", headers, "roll".into()))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&reply.payload);
    assert!(
        text.starts_with("publish failed: forbidden: header Nats-Rollup"),
        "{text}"
    );
    assert_eq!(forbidden(&gw, "upper"), 1);

    // A sender picks the reply subject: the gateway must not carry a reply
    // (or an error reply) into the server's API with its own credentials.
    let before = gw
        .status()
        .bindings
        .iter()
        .map(|b| b.publish_failed)
        .sum::<u64>();
    for payload in ["echo", "reject"] {
        nc.publish_with_reply("f.x", "$JS.API.STREAM.DELETE.ORDERS", payload.into())
            .await
            .unwrap();
    }
    nc.publish_with_reply("u.x", "$JS.API.STREAM.PURGE.ORDERS", "x".into())
        .await
        .unwrap();
    nc.flush().await.unwrap();
    eventually(WAIT, "the three replies refused", || async {
        let failed: u64 = gw.status().bindings.iter().map(|b| b.publish_failed).sum();
        (failed == before + 3).then_some(())
    })
    .await;

    // Nothing reached the server: the stream and its consumer are there, the
    // message is still unacked, the key unset, no $SYS or inbox traffic.
    nc.flush().await.unwrap();
    let mut stream = js
        .get_stream("ORDERS")
        .await
        .expect("the stream still exists");
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer("worker")
        .await
        .expect("the consumer still exists");
    let info = consumer.info().await.unwrap();
    assert_eq!(
        info.num_ack_pending, 1,
        "the message is still unacked: {info:?}"
    );
    assert_eq!(info.ack_floor.consumer_sequence, 0, "{info:?}");
    assert_eq!(kv_get(&bucket, "k").await, None, "no KV write");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sys.next())
            .await
            .is_err(),
        "nothing was published to $SYS"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), victim_inbox.next())
            .await
            .is_err(),
        "nothing reached another client's inbox"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_literal_grant_reaches_its_namespace_and_none_reaches_acks() {
    let (server, nc, js, ack, bucket) = setup().await;

    let mut config = test_config(&[server.url()]);
    let mut writer = plugin("writer", "faulty", &["w.>"], &[]);
    writer.publish_allow = vec!["out.>".into(), "$KV.b.>".into()];
    config.plugins.push(writer);
    // Even a grant of the whole JetStream namespace does not reach acks.
    let mut admin = plugin("admin", "faulty", &["a.>"], &[]);
    admin.publish_allow = vec!["$JS.>".into()];
    config.plugins.push(admin);
    let gw = Running::start(config).await;

    assert_eq!(
        publish_via(&nc, "w.x", "$KV.b.k", "hello").await,
        "published"
    );
    let entry = eventually(WAIT, "the KV write", || kv_get(&bucket, "k")).await;
    assert_eq!(&entry[..], b"hello");
    let reply = publish_via(&nc, "w.x", "$KV.other.k", "x").await;
    assert!(
        reply.starts_with("refused: PublishError::Forbidden(\"$KV.other.k\")"),
        "{reply}"
    );
    let reply = publish_via(&nc, "w.x", "$JS.API.STREAM.DELETE.ORDERS", "").await;
    assert_eq!(
        reply,
        "refused: PublishError::Forbidden(\"$JS.API.STREAM.DELETE.ORDERS\")"
    );

    let reply = publish_via(&nc, "a.x", &ack, "").await;
    assert!(reply.contains("no grant reaches $JS.ACK"), "{reply}");

    let mut stream = js.get_stream("ORDERS").await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer("worker").await.unwrap();
    assert_eq!(consumer.info().await.unwrap().num_ack_pending, 1);
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    assert_eq!(forbidden(&gw, "writer"), 2);
    assert_eq!(forbidden(&gw, "admin"), 1);
    gw.stop().await;
}

/// The example server config of the README's Security section: the gateway
/// works as user `wasmgate` under its server-side permissions (core
/// binding, request-reply, a JetStream binding acking what it handles),
/// and the same user cannot delete the stream: the second wall.
#[tokio::test]
async fn the_example_server_permissions_let_the_gateway_work_and_nothing_more() {
    init_logs();
    let example = repo_root().join("examples/nats-server-wasmgate.conf");
    let conf = std::fs::read_to_string(&example).expect("the example server config");
    let (gw_password, ops_password) = ("gw-example-pw", "ops-example-pw");
    let server = NatsServer::start_with_config(&format!(
        "WASMGATE_NATS_PASSWORD: \"{gw_password}\"\nOPS_NATS_PASSWORD: \"{ops_password}\"\n{conf}"
    ));
    let as_user = |user: &str, pw: &str| {
        async_nats::ConnectOptions::with_user_and_password(user.into(), pw.into())
            .connect(server.url())
    };
    let ops = as_user("ops", ops_password).await.unwrap();
    let js = jetstream::new(ops.clone());
    js.create_stream(stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    js.get_stream("ORDERS")
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("gw".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();

    let text = format!(
        "[nats]\nservers = [\"nats://wasmgate:{gw_password}@127.0.0.1:{port}\"]\n\
         [[plugin]]\nname = \"core\"\npath = \"{wasm}\"\npublish_allow = [\"out.>\"]\n\
         [[plugin.binding]]\nsubject = \"in.>\"\n\
         [[plugin]]\nname = \"orders\"\npath = \"{wasm}\"\npublish_allow = [\"out.>\"]\n\
         [[plugin.binding]]\nsubject = \"orders.>\"\n\
         [plugin.binding.jetstream]\nstream = \"ORDERS\"\nconsumer = \"gw\"\n",
        port = server.port,
        wasm = plugin_wasm("uppercase").display(),
    );
    let parsed = wasmgate::Config::parse(&text, "inline").unwrap();
    let mut config = test_config(&parsed.nats.servers);
    config.nats.auth = parsed.nats.auth.clone();
    config.plugins = parsed.plugins;
    let gw = Running::start(config).await;

    let mut out = ops.subscribe("out.>").await.unwrap();
    ops.flush().await.unwrap();
    let reply = ops.request("in.hello", "hi".into()).await.unwrap();
    assert_eq!(&reply.payload[..], b"HI", "request-reply to an _INBOX");
    let msg = tokio::time::timeout(WAIT, out.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.subject.as_str(), "out.in.hello");
    js_publish(&js, "orders.1".into(), "order").await;
    let msg = tokio::time::timeout(WAIT, out.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.subject.as_str(), "out.orders.1");
    let mut stream = js.get_stream("ORDERS").await.unwrap();
    eventually(WAIT, "the JetStream message acked", || {
        let stream = stream.clone();
        async move {
            let info = stream.consumer_info("gw").await.ok()?;
            (info.ack_floor.stream_sequence == 1 && info.num_ack_pending == 0).then_some(())
        }
    })
    .await;

    // The second wall: the gateway's own user cannot delete the stream.
    let as_gateway = as_user("wasmgate", gw_password).await.unwrap();
    let mut as_gateway = jetstream::new(as_gateway);
    // The server drops a forbidden publish with a -ERR: the request times out.
    as_gateway.set_timeout(Duration::from_secs(1));
    let deleted = as_gateway.delete_stream("ORDERS").await;
    assert!(deleted.is_err(), "the server refused the delete");
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        1,
        "the stream is there"
    );
    gw.stop().await;
}
