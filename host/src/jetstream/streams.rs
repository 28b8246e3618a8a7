//! Which stream captures a subject, so that a publish the gateway makes (a
//! plugin's output, a dead letter) knows whether to wait for a PubAck or
//! send a plain core message.
//!
//! A JetStream publish is a request: when no stream captures the subject but
//! something else answers it (a plain subscriber), the publisher waits out
//! its whole timeout for a PubAck that never comes. And a core publish into a
//! stream that is not accepting (a leader moving, a replica catching up) is
//! dropped without a word to the publisher. So the gateway finds out first,
//! in two ways:
//!
//! - **A snapshot of every stream's subjects** (`$JS.API.STREAM.LIST`, one
//!   request per 256 streams), matched locally: a plugin that publishes to a
//!   new subject each message (`done.<id>`) costs no round trip.
//! - **Asking per subject** (`$JS.API.STREAM.NAMES` with a subject filter),
//!   for what the snapshot cannot tell. A stream whose leader does not answer
//!   is listed by name only (`missing`), or makes the listing wait past
//!   [`LIST_WAIT`]: then its subjects are unknown, and a subject no listed
//!   stream captures is asked of the meta leader, which answers from the
//!   streams' assignments even while their servers are down. A dead letter
//!   or output to a stream that is down must wait for a PubAck that fails,
//!   not go out as a core publish nothing stores. At most [`ASKED_MAX`]
//!   answers are kept.
//!
//! Both are per connection and forgotten when a stream is created, updated
//! or deleted (JetStream's advisories, see [`Streams::watch`]), after the
//! client reconnects, when a publish finds a stream gone, and after
//! [`MAX_AGE`] in case an advisory was missed (the gateway's user may not be
//! allowed to see them). Forgotten means stale: a complete snapshot stands
//! in while the next listing is made in the background, so no publish waits
//! on a listing once one has succeeded. An incomplete snapshot is kept as long as a
//! complete one: a listing that waits on a stream that is down occupies the
//! server's JetStream API for seconds, and listing again every few seconds
//! queued the per-subject questions behind it past their timeout.
//!
//! Dead letters go to one subject per binding: they are only ever asked per
//! subject ([`Streams::capturing_subject`]).
//!
//! What neither can see: a stream in another account that captures the
//! subject through an import. `publish_ack = "always"` covers that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use async_nats::jetstream::context::GetStreamByNameErrorKind;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// The longest a complete snapshot is trusted without an advisory to refresh it.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// The longest the listing may take; past it the snapshot is incomplete.
pub const LIST_WAIT: Duration = Duration::from_secs(2);

/// Subjects asked one by one, kept at most: past it every answer is
/// forgotten (a plugin publishing to a new subject per message while a
/// stream is down must not grow this for ever).
pub const ASKED_MAX: usize = 4096;

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

/// Streams of the account and the subjects they capture.
#[derive(Debug, Default)]
pub struct Snapshot {
    streams: Vec<(String, Vec<String>)>,
    /// Some streams' subjects are unknown (their leader did not answer).
    incomplete: bool,
}

impl Snapshot {
    /// Which stream captures `subject`; `None` when the snapshot cannot
    /// tell (a stream it lacks the subjects of might).
    pub fn capture(&self, subject: &str) -> Option<Capture> {
        let listed = self
            .streams
            .iter()
            .find(|(_, subjects)| subjects.iter().any(|s| crate::subject::matches(s, subject)));
        match listed {
            Some((name, _)) => Some(Capture::Stream(name.clone())),
            None if self.incomplete => None,
            None => Some(Capture::None),
        }
    }

    /// Nothing is known: every subject is asked.
    fn unknown() -> Snapshot {
        Snapshot {
            streams: Vec::new(),
            incomplete: true,
        }
    }
}

/// A page of `$JS.API.STREAM.LIST`, the parts read here (async-nats's own
/// lister drops `missing`).
#[derive(serde::Deserialize)]
struct Page {
    #[serde(default)]
    total: usize,
    #[serde(default)]
    streams: Option<Vec<Listed>>,
    #[serde(default)]
    missing: Option<Vec<String>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct Listed {
    config: ListedConfig,
}

#[derive(serde::Deserialize)]
struct ListedConfig {
    name: String,
    #[serde(default)]
    subjects: Vec<String>,
}

/// A snapshot and when it was taken; `stale` once something said the
/// streams changed (it still stands in while a new listing is made).
struct Taken {
    snapshot: Arc<Snapshot>,
    at: Instant,
    stale: bool,
}

/// After a failed listing while a stale snapshot stood in, the next try waits this long.
const RETRY: Duration = Duration::from_secs(5);

/// The per-connection knowledge of which stream captures what. A caller
/// with many subjects to look up takes the [`snapshot`](Streams::snapshot)
/// once and matches each subject against it.
pub struct Streams {
    js: Context,
    current: Mutex<Option<Taken>>,
    /// When a listing last failed while a stale snapshot stood in for it.
    failed: Mutex<Option<Instant>>,
    /// Subjects the snapshot could not tell about, asked one by one.
    asked: Mutex<HashMap<String, (Capture, Instant)>>,
    /// One listing at a time: output tasks finding the snapshot stale at
    /// once wait for the same request instead of each making one.
    listing: Arc<tokio::sync::Mutex<()>>,
}

impl Streams {
    pub fn new(js: Context) -> Streams {
        Streams {
            js,
            current: Mutex::new(None),
            failed: Mutex::new(None),
            asked: Mutex::new(HashMap::new()),
            listing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Which stream captures `subject`.
    pub async fn capturing(self: &Arc<Self>, subject: &str) -> anyhow::Result<Capture> {
        let snapshot = self.snapshot().await;
        if let Some(capture) = snapshot.capture(subject) {
            return Ok(capture);
        }
        self.ask(subject).await
    }

    /// The current snapshot. A stale or old one that was complete stands in
    /// while a new listing is made in the background: a lame duck server
    /// shuts its JetStream down before it tells its clients, and outputs
    /// that waited for a listing there (then asked per subject, each
    /// timing out) held up the connection's drain until its core outputs
    /// were lost. A subject a stream started capturing a moment ago is
    /// taken for uncaptured until the listing is in. Without a complete
    /// snapshot to stand in, the caller waits; a listing that fails or
    /// takes too long gives an incomplete one.
    pub async fn snapshot(self: &Arc<Self>) -> Arc<Snapshot> {
        let standing = match &*lock(&self.current) {
            Some(t) if !t.stale && t.at.elapsed() < MAX_AGE => return t.snapshot.clone(),
            Some(t) if !t.snapshot.incomplete => Some(t.snapshot.clone()),
            _ => None,
        };
        if let Some(standing) = standing {
            let retry = lock(&self.failed).is_none_or(|t| t.elapsed() >= RETRY);
            if retry && let Ok(one) = self.listing.clone().try_lock_owned() {
                let this = self.clone();
                tokio::spawn(async move {
                    let _one = one;
                    match tokio::time::timeout(LIST_WAIT, this.list()).await {
                        Ok(Ok(s)) => {
                            this.store(s);
                            *lock(&this.failed) = None;
                        }
                        _ => {
                            tracing::debug!("stream listing failed; the last one stands in");
                            *lock(&this.failed) = Some(Instant::now());
                        }
                    }
                });
            }
            return standing;
        }
        let _one = self.listing.lock().await;
        if let Some(t) = &*lock(&self.current)
            && !t.stale
            && t.at.elapsed() < MAX_AGE
        {
            return t.snapshot.clone();
        }
        let snapshot = match tokio::time::timeout(LIST_WAIT, self.list()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %crate::errors::anyhow_chain(&e), "stream listing failed; asking per subject");
                Snapshot::unknown()
            }
            Err(_) => {
                tracing::debug!("stream listing took over {LIST_WAIT:?}; asking per subject");
                Snapshot::unknown()
            }
        };
        self.store(snapshot)
    }

    fn store(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let snapshot = Arc::new(snapshot);
        *lock(&self.current) = Some(Taken {
            snapshot: snapshot.clone(),
            at: Instant::now(),
            stale: false,
        });
        snapshot
    }

    async fn list(&self) -> anyhow::Result<Snapshot> {
        let mut snapshot = Snapshot::default();
        let mut offset = 0;
        loop {
            let page: Page = match self
                .js
                .request("STREAM.LIST", &serde_json::json!({ "offset": offset }))
                .await
            {
                Ok(page) => page,
                Err(e) if no_jetstream(&crate::errors::chain(&e)) => return Ok(snapshot),
                Err(e) => {
                    return Err(anyhow::Error::new(e).context("listing the account's streams"));
                }
            };
            if let Some(error) = page.error {
                let text = error.to_string();
                if no_jetstream(&text) {
                    return Ok(snapshot);
                }
                anyhow::bail!("listing the account's streams: {text}");
            }
            let listed = page.streams.unwrap_or_default();
            let missing = page.missing.unwrap_or_default();
            let n = listed.len() + missing.len();
            snapshot.incomplete |= !missing.is_empty();
            snapshot.streams.extend(
                listed
                    .into_iter()
                    .map(|l| (l.config.name, l.config.subjects)),
            );
            offset += n;
            if n == 0 || offset >= page.total {
                return Ok(snapshot);
            }
        }
    }

    /// Which stream captures `subject`, asked of the meta leader (and
    /// remembered) without the snapshot: for a subject used again and again.
    pub async fn capturing_subject(&self, subject: &str) -> anyhow::Result<Capture> {
        self.ask(subject).await
    }

    /// Ask the meta leader which stream captures `subject`, remembering it.
    async fn ask(&self, subject: &str) -> anyhow::Result<Capture> {
        if let Some((capture, at)) = lock(&self.asked).get(subject)
            && at.elapsed() < MAX_AGE
        {
            return Ok(capture.clone());
        }
        let capture = match self.js.stream_by_subject(subject).await {
            Ok(name) => Capture::Stream(name),
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => Capture::None,
            Err(e) if no_jetstream(&crate::errors::chain(&e)) => Capture::None,
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("which stream captures {subject}"))
                );
            }
        };
        let mut asked = lock(&self.asked);
        if asked.len() >= ASKED_MAX {
            asked.clear();
        }
        asked.insert(subject.to_string(), (capture.clone(), Instant::now()));
        Ok(capture)
    }

    /// Forget everything (streams changed, the connection came back); the
    /// snapshot stands in until a new listing is in.
    pub fn forget_all(&self) {
        self.stale();
        lock(&self.asked).clear();
    }

    /// A publish to `subject` found its stream gone: forget what was known.
    pub fn forget(&self, subject: &str) {
        lock(&self.asked).remove(subject);
        self.stale();
    }

    fn stale(&self) {
        if let Some(t) = &mut *lock(&self.current) {
            t.stale = true;
        }
        *lock(&self.failed) = None;
    }

    /// The subscription [`watch`](Self::watch) reads (`None`, logged, when
    /// the server refuses it: answers then expire after [`MAX_AGE`]).
    pub async fn advisories(&self) -> Option<async_nats::Subscriber> {
        match self.js.client().subscribe(ADVISORIES).await {
            Ok(sub) => Some(sub),
            Err(e) => {
                tracing::debug!(error = %e, "stream advisories unavailable; answers expire after {MAX_AGE:?}");
                None
            }
        }
    }

    /// Listen to stream advisories (the subscription from
    /// [`advisories`](Self::advisories)) until `stop`, forgetting everything
    /// on each create, update or delete.
    pub async fn watch(
        self: Arc<Self>,
        mut advisories: async_nats::Subscriber,
        stop: CancellationToken,
    ) {
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it leaves only a cache: keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
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
            incomplete: false,
        };
        let stream = |n: &str| Some(Capture::Stream(n.into()));
        assert_eq!(s.capture("orders.eu.1"), stream("ORDERS"));
        assert_eq!(s.capture("out.x"), stream("OUT"));
        assert_eq!(s.capture("done"), stream("OUT"));
        assert_eq!(s.capture("out.x.y"), Some(Capture::None));
        assert_eq!(s.capture("orders"), Some(Capture::None));
        assert_eq!(Snapshot::default().capture("anything"), Some(Capture::None));
    }

    #[test]
    fn an_incomplete_snapshot_is_sure_only_of_what_it_lists() {
        let s = Snapshot {
            streams: vec![("ORDERS".into(), vec!["orders.>".into()])],
            incomplete: true,
        };
        assert_eq!(
            s.capture("orders.1"),
            Some(Capture::Stream("ORDERS".into()))
        );
        assert_eq!(s.capture("dlq.x"), None, "a stream down might capture it");
        assert_eq!(Snapshot::unknown().capture("orders.1"), None);
    }
}
