//! Which stream captures a subject, so that a publish the gateway makes (a
//! plugin's output, a dead letter) knows whether to wait for a PubAck or
//! send a plain core message.
//!
//! A JetStream publish is a request: when no stream captures the subject but
//! something else answers it (a plain subscriber), the publisher waits out
//! its whole timeout for a PubAck that never comes. And a core publish into a
//! stream that is not accepting (a leader moving, a replica catching up) is
//! dropped without a word to the publisher. So the gateway asks the server
//! for every stream's subjects (`$JS.API.STREAM.LIST`, one request per 256
//! streams) and matches publishes against that snapshot locally: a plugin
//! publishing to a new subject each message costs no round trip. The
//! snapshot is one per connection and is taken again when a stream is
//! created, updated or deleted (JetStream's advisories, see
//! [`Streams::watch`]), after the client reconnects, when a publish finds it
//! stale, and after [`MAX_AGE`] in case an advisory was missed (the
//! gateway's user may not be allowed to see them).
//!
//! What the snapshot cannot see: a stream in another account that captures
//! the subject through an import. `publish_ack = "always"` covers that.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

/// The longest a snapshot is trusted without an advisory to refresh it.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// The advisories that change which stream captures what.
const ADVISORIES: &str = "$JS.EVENT.ADVISORY.STREAM.*.*";

/// Whether a stream captures a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capture {
    /// This stream stores what is published to the subject.
    Stream(String),
    /// No stream does (or the account has no JetStream): a core publish is
    /// all there is.
    None,
}

/// Every stream of the account and the subjects it captures.
#[derive(Debug, Default)]
pub struct Snapshot {
    streams: Vec<(String, Vec<String>)>,
}

impl Snapshot {
    /// Which stream captures `subject`.
    pub fn capture(&self, subject: &str) -> Capture {
        self.streams
            .iter()
            .find(|(_, subjects)| subjects.iter().any(|s| crate::subject::matches(s, subject)))
            .map_or(Capture::None, |(name, _)| Capture::Stream(name.clone()))
    }
}

/// The per-connection snapshot of which stream captures what.
pub struct Streams {
    js: Context,
    current: Mutex<Option<(std::sync::Arc<Snapshot>, Instant)>>,
    /// One refresh at a time: output tasks finding the snapshot stale at
    /// once wait for the same request instead of each making one.
    refreshing: tokio::sync::Mutex<()>,
}

impl Streams {
    pub fn new(js: Context) -> Streams {
        Streams {
            js,
            current: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Which stream captures `subject`, from the snapshot or, when it is
    /// missing or stale, a new one.
    pub async fn capturing(&self, subject: &str) -> anyhow::Result<Capture> {
        Ok(self.snapshot().await?.capture(subject))
    }

    /// The current snapshot, taken again when missing or stale.
    pub async fn snapshot(&self) -> anyhow::Result<std::sync::Arc<Snapshot>> {
        if let Some(s) = self.fresh() {
            return Ok(s);
        }
        let _one = self.refreshing.lock().await;
        if let Some(s) = self.fresh() {
            return Ok(s);
        }
        let snapshot = std::sync::Arc::new(self.list().await?);
        *self.lock() = Some((snapshot.clone(), Instant::now()));
        Ok(snapshot)
    }

    fn fresh(&self) -> Option<std::sync::Arc<Snapshot>> {
        match &*self.lock() {
            Some((s, at)) if at.elapsed() < MAX_AGE => Some(s.clone()),
            _ => None,
        }
    }

    async fn list(&self) -> anyhow::Result<Snapshot> {
        let listed: Result<Vec<_>, _> = self.js.streams().try_collect().await;
        match listed {
            Ok(infos) => Ok(Snapshot {
                streams: infos
                    .into_iter()
                    .map(|i| (i.config.name, i.config.subjects))
                    .collect(),
            }),
            Err(e) if no_jetstream(&crate::errors::chain(&e)) => Ok(Snapshot::default()),
            Err(e) => Err(anyhow::Error::new(e).context("listing the account's streams")),
        }
    }

    /// Forget the snapshot (streams changed, the connection came back, a
    /// publish found it stale).
    pub fn forget_all(&self) {
        *self.lock() = None;
    }

    /// Listen to stream advisories until `stop`, forgetting the snapshot on
    /// each create, update or delete. A subscription the server refuses
    /// (permissions) only leaves the snapshot to [`MAX_AGE`].
    pub async fn watch(self: std::sync::Arc<Self>, stop: CancellationToken) {
        let mut advisories = match self.js.client().subscribe(ADVISORIES).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::debug!(error = %e, "stream advisories unavailable; answers expire after {MAX_AGE:?}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = advisories.next() => match msg {
                    None => return,
                    Some(msg) => {
                        let kind = msg.subject.split('.').nth(4).unwrap_or_default();
                        if matches!(kind, "CREATED" | "UPDATED" | "DELETED") {
                            tracing::debug!(advisory = %msg.subject, "streams changed");
                            self.forget_all();
                        }
                    }
                },
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(std::sync::Arc<Snapshot>, Instant)>> {
        // A panic while holding it leaves only a cache: keep using it.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The account has no JetStream: nobody answers the API.
fn no_jetstream(text: &str) -> bool {
    text.contains("no responders") || text.contains("jetstream not enabled")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_captured_by_the_stream_whose_pattern_matches_it() {
        let s = Snapshot {
            streams: vec![
                ("ORDERS".into(), vec!["orders.>".into()]),
                ("OUT".into(), vec!["out.*".into(), "done".into()]),
                ("MIRROR".into(), vec![]),
            ],
        };
        assert_eq!(s.capture("orders.eu.1"), Capture::Stream("ORDERS".into()));
        assert_eq!(s.capture("out.x"), Capture::Stream("OUT".into()));
        assert_eq!(s.capture("done"), Capture::Stream("OUT".into()));
        assert_eq!(s.capture("out.x.y"), Capture::None);
        assert_eq!(s.capture("orders"), Capture::None);
        assert_eq!(Snapshot::default().capture("anything"), Capture::None);
    }
}
