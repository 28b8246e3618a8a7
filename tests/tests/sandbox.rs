//! Fault isolation: a misbehaving plugin (endless loop, memory bomb, stack
//! overflow, forbidden publish, oversized output) is stopped by its own
//! limits, shows up in the status counters and, for requests, as an error
//! reply with `Wasmgate-Error`, while a healthy plugin in the same gateway
//! keeps handling every message sent to it meanwhile.

use std::collections::BTreeSet;
use std::ops::Deref;
use std::time::{Duration, Instant};

use async_nats::Subscriber;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wasmgate::config::ByteSize;
use wasmgate_tests::*;

/// The faulty plugin's `timeout`.
const TIMEOUT: Duration = Duration::from_millis(300);
/// The faulty plugin's `memory`, in MiB.
const MEMORY_MIB: u64 = 16;
/// Healthy messages sent at least, however quickly a test is done.
const MIN_HEALTHY: u64 = 20;

/// The kit's [`Fixture`] with `faulty` on `f.>` (prefix `out`,
/// `publish_allow = ["out.>"]`, tight timeout and memory) and `upper` on
/// `ok.>` (prefix `up`), and healthy traffic to `upper` running all along.
/// Derefs to the fixture.
struct Sandbox {
    fixture: Fixture,
    healthy_stop: CancellationToken,
    healthy_task: JoinHandle<u64>,
    healthy_out: Subscriber,
}

impl Sandbox {
    async fn start() -> Sandbox {
        let mut faulty = plugin("faulty", "faulty", &["f.>"], &[("prefix", "out")]);
        faulty.timeout = TIMEOUT;
        faulty.memory = ByteSize::mib(MEMORY_MIB);
        faulty.publish_allow = vec!["out.>".into()];
        let upper = plugin("upper", "uppercase", &["ok.>"], &[("prefix", "up")]);
        let fixture = Fixture::start([faulty, upper]).await;

        let nc = &fixture.nc;
        let healthy_out = nc.subscribe("up.>").await.unwrap();
        nc.flush().await.unwrap();
        let healthy_stop = CancellationToken::new();
        let healthy_task = tokio::spawn({
            let nc = nc.clone();
            let stop = healthy_stop.clone();
            async move {
                let mut sent = 0u64;
                while sent < MIN_HEALTHY || !stop.is_cancelled() {
                    nc.publish(format!("ok.{sent}"), format!("msg {sent}").into())
                        .await
                        .unwrap();
                    sent += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                nc.flush().await.unwrap();
                sent
            }
        });
        Sandbox {
            fixture,
            healthy_stop,
            healthy_task,
            healthy_out,
        }
    }

    /// A request to the faulty plugin; the reply and how long it took.
    async fn ask_timed(&self, subject: &str, payload: &str) -> (async_nats::Message, Duration) {
        let started = Instant::now();
        let reply = self.ask(subject, payload).await;
        (reply, started.elapsed())
    }

    /// Stop the healthy traffic, check every message of it came out of
    /// `upper` and nothing of it failed, then shut the gateway down.
    async fn finish(mut self) {
        self.healthy_stop.cancel();
        let sent = self.healthy_task.await.unwrap();
        let mut seen = BTreeSet::new();
        while (seen.len() as u64) < sent {
            let msg = tokio::time::timeout(WAIT, self.healthy_out.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "healthy plugin: only {} of {sent} outputs arrived; status {:?}",
                        seen.len(),
                        self.fixture.gw.status().bindings[1]
                    )
                })
                .unwrap();
            let i: u64 = msg
                .subject
                .strip_prefix("up.ok.")
                .and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("unexpected subject {}", msg.subject));
            assert_eq!(msg.payload.as_ref(), format!("MSG {i}").as_bytes());
            assert!(seen.insert(i), "duplicate output {i}");
        }
        assert_eq!(seen, (0..sent).collect(), "every healthy message, once");
        let status = self.fixture.gw.status();
        let upper = &status.bindings[1];
        assert_eq!(upper.plugin, "upper");
        assert_eq!(
            (
                upper.handled,
                upper.trapped,
                upper.rejected,
                upper.retried,
                upper.publish_failed
            ),
            (sent, 0, 0, 0, 0),
            "the healthy plugin handled everything and saw no failure"
        );
        assert_eq!(status.state, wasmgate::ConnectionState::Connected);
        self.fixture.finish().await;
    }
}

impl Deref for Sandbox {
    type Target = Fixture;

    fn deref(&self) -> &Fixture {
        &self.fixture
    }
}

/// Expect a success reply with this payload.
fn assert_ok(m: &async_nats::Message, payload: &str) {
    assert_eq!(error_kind(m), None, "{}", text(m));
    assert_eq!(text(m), payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_interrupted_at_its_deadline() {
    let f = Sandbox::start().await;
    for _ in 0..2 {
        let (reply, elapsed) = f.ask_timed("f.x", "loop").await;
        assert_eq!(
            error_kind(&reply).as_deref(),
            Some("timeout"),
            "{}",
            text(&reply)
        );
        assert!(text(&reply).contains("deadline"), "{}", text(&reply));
        // The guest had its whole timeout, and was stopped long before 10x it.
        assert!(
            elapsed >= TIMEOUT,
            "stopped after {elapsed:?}, before its {TIMEOUT:?}"
        );
        assert!(
            elapsed < TIMEOUT * 10,
            "a {TIMEOUT:?} deadline took {elapsed:?} to stop the loop"
        );
    }
    // A fresh instance serves the next message.
    let reply = f.ask("f.x", "after the loop").await;
    assert_ok(&reply, "after the loop");
    let b = f.binding("faulty");
    assert_eq!((b.trapped, b.handled, b.rejected), (2, 1, 0));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_traps_at_the_memory_limit() {
    let f = Sandbox::start().await;
    let reply = f.ask("f.x", "alloc:4").await;
    assert_ok(&reply, "allocated 4 MiB");

    // Over the limit at once, and bit by bit.
    let over = format!("alloc:{}", MEMORY_MIB * 2);
    for payload in [over.as_str(), "memory-bomb"] {
        let reply = f.ask("f.x", payload).await;
        assert_eq!(
            error_kind(&reply).as_deref(),
            Some("trap"),
            "{payload}: {}",
            text(&reply)
        );
        assert!(
            text(&reply).contains("growing memory"),
            "{payload}: stopped by the memory limit: {}",
            text(&reply)
        );
        assert_one_line_reason(&reply);
    }
    // The bomb's instance was discarded: a fresh one has room for 3/4 of the limit.
    let reply = f.ask("f.x", &format!("alloc:{}", MEMORY_MIB * 3 / 4)).await;
    assert_ok(&reply, &format!("allocated {} MiB", MEMORY_MIB * 3 / 4));
    let b = f.binding("faulty");
    assert_eq!((b.trapped, b.handled), (2, 2));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_overflows_trap() {
    let f = Sandbox::start().await;
    // Big frames overflow the guest's own stack in linear memory first;
    // scalar frames run into wasmtime's limit on the native stack.
    for (payload, reason) in [
        ("stack-overflow", "out of bounds memory access"),
        ("native-stack-overflow", "call stack exhausted"),
    ] {
        let reply = f.ask("f.x", payload).await;
        assert_eq!(
            error_kind(&reply).as_deref(),
            Some("trap"),
            "{payload}: {}",
            text(&reply)
        );
        assert!(text(&reply).contains(reason), "{payload}: {}", text(&reply));
        assert_one_line_reason(&reply);
        let reply = f.ask("f.x", "after the overflow").await;
        assert_ok(&reply, "after the overflow");
    }
    let b = f.binding("faulty");
    assert_eq!((b.trapped, b.handled), (2, 2));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_publish_is_refused_counted_and_not_sent() {
    let f = Sandbox::start().await;
    let mut secret = f.nc.subscribe("secret.>").await.unwrap();
    let mut out = f.nc.subscribe("out.>").await.unwrap();
    f.nc.flush().await.unwrap();

    let reply = f.ask("f.a", "forbidden-publish").await;
    assert_eq!(error_kind(&reply).as_deref(), Some("reject"));
    assert_eq!(text(&reply), "PublishError::Forbidden(\"secret.f.a\")");

    // The guest ignores the refusal and succeeds: its allowed publish goes
    // out, the forbidden one does not.
    let reply = f.ask("f.b", "forbidden-then-ok").await;
    assert_ok(&reply, "Err(PublishError::Forbidden(\"secret.f.b\"))");
    let msg = tokio::time::timeout(WAIT, out.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.subject.as_str(), "out.f.b");
    assert_eq!(msg.payload.as_ref(), b"allowed");

    // Anything the gateway sent went out before the replies above, so a
    // marker published now arrives after it: it must be the first.
    assert_nothing_before_marker(&f.nc, &mut secret, "secret.marker").await;

    let plugin = f.gw.plugin("faulty").await.unwrap();
    let counters = plugin.counters();
    assert_eq!(counters.publish_forbidden(), 2);
    assert_eq!(counters.publish_refused(), 2);
    // Operators see the same in /status.
    let shown =
        f.gw.status()
            .plugins
            .into_iter()
            .find(|p| p.name == "faulty")
            .unwrap();
    assert_eq!((shown.publish_forbidden, shown.publish_refused), (2, 2));
    let b = f.binding("faulty");
    assert_eq!((b.rejected, b.handled, b.trapped), (1, 1, 0));
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_output_is_refused_before_it_reaches_the_server() {
    let f = Sandbox::start().await;
    let max = f.nc.server_info().max_payload;
    assert!(max > 2000, "server max_payload {max}");
    let mut out = f.nc.subscribe("out.>").await.unwrap();
    f.nc.flush().await.unwrap();

    // A publish just over the server's limit comes back to the guest.
    let reply = f.ask("f.x", &format!("huge-publish:{}", max + 1)).await;
    assert_eq!(error_kind(&reply).as_deref(), Some("reject"));
    assert_eq!(
        text(&reply),
        format!("PublishError::PayloadTooLarge({max})")
    );
    // One that fits goes out.
    let reply = f.ask("f.y", &format!("huge-publish:{}", max - 1000)).await;
    assert_ok(&reply, "published");
    let msg = tokio::time::timeout(WAIT, out.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        msg.subject.as_str(),
        "out.f.y",
        "the oversized publish was not sent"
    );
    assert_eq!(msg.payload.len(), max - 1000);

    // A reply over the limit cannot be delivered: the requester hears why.
    let reply = f.ask("f.x", &format!("huge-reply:{}", max + 1)).await;
    assert_eq!(error_kind(&reply).as_deref(), Some("reject"));
    assert_eq!(
        text(&reply),
        format!(
            "reply of {} bytes is larger than the server's max_payload of {max} bytes",
            max + 1
        )
    );
    let reply = f.ask("f.x", "huge-reply:1000").await;
    assert_ok(&reply, &"x".repeat(1000));

    let b = f.binding("faulty");
    assert_eq!(
        (b.rejected, b.handled, b.trapped, b.publish_failed),
        (2, 2, 0, 0),
        "refused in the host: nothing failed on the wire"
    );
    let plugin = f.gw.plugin("faulty").await.unwrap();
    let counters = plugin.counters();
    assert_eq!(counters.publish_refused(), 1);
    f.finish().await;
}

/// A requester gets the trap's cause, not wasmtime's backtrace (code
/// offsets of the plugin's build, one line per frame).
fn assert_one_line_reason(reply: &async_nats::Message) {
    let reason = text(reply);
    assert!(
        !reason.contains('\n') && !reason.contains("backtrace"),
        "{reason}"
    );
}
