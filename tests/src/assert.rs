//! Waiting and assertions: the one bound on waiting for something to happen
//! ([`WAIT`]), polling until a condition holds, and checks of what the
//! gateway reports (`/metrics`) and of what reached the server (nothing
//! before a marker, messages still unacknowledged, a stream's state).

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;

/// How long a test waits for something that should happen: a reply, an
/// output, a gateway becoming ready or reconnecting, a counter moving.
///
/// A bound, not a sleep: a passing test waits only as long as the thing
/// takes, so the bound is the longest any test needs (a leader election on
/// a loaded cluster takes seconds) and a slow machine does not fail a test
/// that would pass. The opposite check, "nothing arrives within X", keeps
/// its own short window where it is made, since that one is always waited
/// out in full.
pub const WAIT: Duration = Duration::from_secs(30);

/// Poll `f` until it returns `Some`, or panic with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Scrape `GET /metrics` and check that each of `lines` is there exactly
/// (one whole line of the Prometheus text); panics listing the text if not.
pub async fn assert_metrics<S: AsRef<str>>(addr: SocketAddr, lines: &[S]) {
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("/metrics body");
    for line in lines {
        let line = line.as_ref();
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
}

/// Prove nothing was published to `subject`'s subscription `sub` so far:
/// everything sent before now arrives before a marker sent now, so the
/// marker must be the first message there.
pub async fn assert_nothing_before_marker(
    nc: &async_nats::Client,
    sub: &mut async_nats::Subscriber,
    marker_subject: &str,
) {
    nc.publish(marker_subject.to_string(), "marker".into())
        .await
        .expect("publish the marker");
    let first = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("the marker arrives")
        .expect("subscription open");
    assert_eq!(
        first.subject.as_str(),
        marker_subject,
        "something was published before the marker"
    );
}

/// How many messages the pull consumer `consumer` of `stream` has delivered
/// and not yet seen acknowledged.
pub async fn ack_pending(
    js: &async_nats::jetstream::Context,
    stream: &str,
    consumer: &str,
) -> usize {
    js.get_stream(stream)
        .await
        .expect("stream exists")
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer)
        .await
        .expect("consumer exists")
        .cached_info()
        .num_ack_pending
}

/// The stream `name` as the server has it now: its config, state (how many
/// messages it holds) and, on a cluster, its leader and replicas.
pub async fn stream_info(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> async_nats::jetstream::stream::Info {
    js.get_stream(name)
        .await
        .expect("stream exists")
        .info()
        .await
        .expect("stream info")
        .clone()
}
