//! Which stream captures a subject: asked of the server once and cached, so
//! that a publish the gateway makes (a plugin's output, a dead letter) knows
//! whether to wait for a PubAck or send a plain core message.
//!
//! A JetStream publish is a request: when no stream captures the subject but
//! something else answers it (a plain subscriber), the publisher waits out
//! its whole timeout for a PubAck that never comes. And a core publish into
//! a stream that is not accepting (a leader moving, a replica catching up)
//! is dropped without a word to the publisher. So the gateway asks first
//! (`$JS.API.STREAM.NAMES` with a subject filter, one round trip, answered
//! by the meta leader from the streams' assignments, so a stream whose
//! servers are all down is still named) and remembers the answer.
//!
//! Why not list every stream's subjects once and match locally: a stream
//! whose leader does not answer makes `$JS.API.STREAM.LIST` wait out its
//! timeout (10 s here) and then leave that stream out, and a dead letter or
//! output to a stream that is down must wait for a PubAck that fails, not go
//! out as a core publish nothing stores. The cost of asking per subject is
//! one round trip per new subject; at most [`ASKED_MAX`] answers are kept. The cache is one per connection and forgets
//! everything when a stream is created, updated or deleted (JetStream's
//! advisories, see [`Streams::watch`]), after the client reconnects, when a
//! publish finds the answer stale, and after [`MAX_AGE`] in case an
//! advisory was missed (the gateway's user may not be allowed to see them).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use async_nats::jetstream::context::GetStreamByNameErrorKind;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// The longest an answer is trusted without an advisory to refresh it.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// Subjects remembered at most: past it every answer is forgotten (a
/// plugin publishing to a new subject per message must not grow the cache
/// for ever).
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

/// The per-connection cache of [`Capture`] answers.
///
/// A hit costs a lock and a hash lookup, per publish.
pub struct Streams {
    js: Context,
    cache: Mutex<HashMap<String, (Capture, Instant)>>,
}

impl Streams {
    pub fn new(js: Context) -> Streams {
        Streams {
            js,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Which stream captures `subject`, from the cache or the server.
    pub async fn capturing(&self, subject: &str) -> anyhow::Result<Capture> {
        if let Some((capture, at)) = self.lock().get(subject)
            && at.elapsed() < MAX_AGE
        {
            return Ok(capture.clone());
        }
        let capture = match self.js.stream_by_subject(subject).await {
            Ok(name) => Capture::Stream(name),
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => Capture::None,
            Err(e) if no_jetstream(&e) => Capture::None,
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("which stream captures {subject}"))
                );
            }
        };
        let mut cache = self.lock();
        if cache.len() >= ASKED_MAX {
            cache.clear();
        }
        cache.insert(subject.to_string(), (capture.clone(), Instant::now()));
        Ok(capture)
    }

    /// Forget every answer (streams changed, the connection came back).
    pub fn forget_all(&self) {
        self.lock().clear();
    }

    /// Forget the answer for `subject`: a publish found it stale.
    pub fn forget(&self, subject: &str) {
        self.lock().remove(subject);
    }

    /// Listen to stream advisories until `stop`, forgetting every answer on
    /// each create, update or delete. A subscription the server refuses
    /// (permissions) only leaves the cache to [`MAX_AGE`].
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Capture, Instant)>> {
        // A panic while holding it leaves only a cache: keep using it.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The account has no JetStream: nobody answers the API.
fn no_jetstream(e: &async_nats::jetstream::context::GetStreamByNameError) -> bool {
    let text = crate::errors::chain(e);
    text.contains("no responders") || text.contains("jetstream not enabled")
}
