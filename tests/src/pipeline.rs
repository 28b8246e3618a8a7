//! The pipeline the cluster tests push ids through: an R3 input stream `IN`
//! on `in.>`, the `uppercase` plugin consuming it through a durable consumer,
//! an R3 output stream `OUT` on `out.>` capturing its outputs
//! (`out.in.<id>`), and a reader that counts which ids reached `OUT`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use wasmgate::config::PluginConfig;

use crate::cluster::create_stream_with_retry;
use crate::jetstream_plugin;

/// A file stream on `subject` with three replicas.
pub fn r3(name: &str, subject: &str) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        num_replicas: 3,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// Create `IN` and `OUT`, retrying while the cluster settles.
pub async fn create_streams(js: &jetstream::Context) {
    create_stream_with_retry(js, r3("IN", "in.>")).await;
    create_stream_with_retry(js, r3("OUT", "out.>")).await;
}

/// `upper` consuming `IN` through durable `consumer`, publishing to
/// `out.in.<id>`. Faults may fail a delivery many times (no PubAck during an
/// election): `max_deliver` is high enough that it is retried, never
/// dead-lettered.
pub fn upper(consumer: &str) -> PluginConfig {
    let mut binding = crate::js_config("IN", consumer);
    binding.max_deliver = 1_000;
    jetstream_plugin("upper", "uppercase", "in.>", &[("prefix", "out")], binding)
}

/// Read `OUT` until every id of `want` has arrived or `within` passes: how
/// many times each id arrived (an id that is not a number counts as
/// `u64::MAX`). A reader that fails over a fault is made again from where
/// the last one stopped.
pub async fn outputs(
    js: &jetstream::Context,
    want: &BTreeSet<u64>,
    within: Duration,
) -> BTreeMap<u64, u64> {
    let mut seen = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut next = 1u64;
    while tokio::time::Instant::now() < deadline && !want.iter().all(|id| seen.contains_key(id)) {
        let read = async {
            let reader = js
                .get_stream("OUT")
                .await?
                .create_consumer(consumer::pull::Config {
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: next,
                    },
                    ack_policy: consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await?;
            let mut batch = reader.fetch().max_messages(1_000).messages().await?;
            while let Some(m) = batch.next().await {
                let m = m?;
                next = next.max(m.info()?.stream_sequence + 1);
                let id = m
                    .subject
                    .strip_prefix("out.in.")
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(u64::MAX);
                *seen.entry(id).or_insert(0) += 1;
            }
            Ok::<_, async_nats::Error>(())
        };
        if tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .is_err()
        {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    seen
}
