//! The bindings side of the supervisor: subscribing each binding's workers
//! on a connection (core subscriptions, queue groups, JetStream consumers),
//! verifying JetStream bindings after the client's own reconnect, marking
//! bindings the server refused, and re-binding after a config reload.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Connection, DRAIN_TIMEOUT, Supervisor};
use crate::dispatch::{Budget, Budgets, Dispatch, Inbox, Reader, Source};
use crate::jetstream::{JsBinding, JsSource};
use crate::plugin::PluginSlot;
use crate::status::{BindingCounters, BindingSpec, BindingState};

/// One subscription of one plugin.
pub struct Binding {
    pub plugin: Arc<PluginSlot>,
    pub subject: String,
    pub queue: Option<String>,
    /// Set for a JetStream binding.
    pub jetstream: Option<Arc<JsBinding>>,
    /// Dispatch workers (each with its own instance) on this binding.
    pub workers: usize,
    /// Bytes of core messages it may hold waiting (`None`: `nats.binding_buffer`).
    pub buffer: Option<bytesize::ByteSize>,
    pub counters: Arc<BindingCounters>,
}

/// A binding set for the supervisor (a config reload makes a new one):
/// what the status shows of each binding, and the bindings themselves.
pub struct BindingSet {
    pub specs: Vec<BindingSpec>,
    pub bindings: Vec<Binding>,
}

impl Supervisor {
    /// Subscribe every binding that has no dispatch workers on this connection.
    pub(super) async fn bind_missing(&self, conn: &mut Connection) {
        self.bind_missing_where(conn, |_| true).await;
    }

    /// [`bind_missing`](Self::bind_missing) for the bindings `which` picks.
    pub(super) async fn bind_missing_where(
        &self,
        conn: &mut Connection,
        which: impl Fn(&Binding) -> bool,
    ) {
        for (i, b) in self.bindings.iter().enumerate() {
            if conn.bound[i] || !which(b) {
                continue;
            }
            match self.sources(conn, i, b).await {
                Ok(sources) => {
                    conn.bound[i] = true;
                    self.status.set_binding(i, BindingState::Pending, None);
                    for source in sources {
                        let (plugin, version) = b.plugin.current();
                        let dispatch = Dispatch {
                            slot: b.plugin.clone(),
                            plugin,
                            version,
                            counters: b.counters.clone(),
                            client: conn.client.clone(),
                            js: conn.js.clone(),
                            streams: conn.streams.clone(),
                            source,
                            stop: conn.stop.clone(),
                            shutdown: conn.drain.clone(),
                            drain_timeout: DRAIN_TIMEOUT,
                            admission: self.admission.clone(),
                            pool: self.pool.clone(),
                        };
                        conn.tasks.spawn(dispatch.run());
                    }
                }
                Err(e) => {
                    tracing::warn!(plugin = b.plugin.name(), subject = %b.subject, error = %crate::errors::anyhow_chain(&e), "binding failed");
                    self.status.set_binding(
                        i,
                        BindingState::Failed,
                        Some(crate::errors::anyhow_chain(&e)),
                    );
                }
            }
        }
    }

    /// One source per worker. Concurrent core workers join one queue group
    /// (the binding's, or a private one), so the server spreads the messages
    /// over them; concurrent JetStream workers pull from the same consumer.
    async fn sources(
        &self,
        conn: &Connection,
        i: usize,
        b: &Binding,
    ) -> anyhow::Result<Vec<Source>> {
        let mut sources = Vec::with_capacity(b.workers);
        // The binding's workers share one buffer limit.
        let budgets = Budgets {
            binding: Budget::new(b.buffer.unwrap_or(self.config.nats.binding_buffer).as_u64()),
            gateway: self.buffered.clone(),
        };
        for _ in 0..b.workers.max(1) {
            let source = match (&b.jetstream, &b.queue) {
                (Some(js), _) => Source::JetStream(Box::new(
                    JsSource::attach(conn.js.clone(), js.clone(), self.status.clone(), i).await?,
                )),
                (None, queue) => {
                    let group = match queue {
                        Some(q) => Some(q.clone()),
                        None if b.workers > 1 => {
                            Some(format!("_wasmgate.{}.b{i}", self.instance_id))
                        }
                        None => None,
                    };
                    let sub = match group {
                        Some(g) => conn.client.queue_subscribe(b.subject.clone(), g).await?,
                        None => conn.client.subscribe(b.subject.clone()).await?,
                    };
                    let reader = Reader {
                        plugin: b.plugin.name().to_string(),
                        subject: b.subject.clone(),
                        counters: b.counters.clone(),
                        budgets: budgets.clone(),
                        stop: conn.stop.clone(),
                        drain: conn.drain.clone(),
                        drain_timeout: DRAIN_TIMEOUT,
                    };
                    Source::Core(Inbox::start(sub, reader, |task| {
                        conn.tasks.spawn(task);
                    }))
                }
            };
            sources.push(source);
        }
        Ok(sources)
    }

    /// After the client's own reconnect: the server may have lost streams and
    /// consumers (memory storage, a wiped store). Declare them again (with
    /// `create`) or check they still exist; a failure is recorded on the
    /// binding and its source keeps re-attaching.
    pub(super) async fn verify_jetstream(&self, conn: &Connection) {
        for (i, b) in self.bindings.iter().enumerate() {
            let Some(js) = &b.jetstream else { continue };
            if !conn.bound[i] {
                continue;
            }
            if let Err(e) = crate::jetstream::declare(&conn.js, js).await {
                tracing::warn!(stream = %js.config.stream, consumer = %js.config.consumer, error = %crate::errors::anyhow_chain(&e), "JetStream binding not restored yet");
                self.status.set_binding(
                    i,
                    BindingState::Rebinding,
                    Some(format!(
                        "after reconnect: {}",
                        crate::errors::anyhow_chain(&e)
                    )),
                );
            }
        }
    }

    /// A permissions violation names the subject the server refused.
    pub(super) fn mark_failed_subscription(&self, error: &str) {
        let lower = error.to_ascii_lowercase();
        if !lower.contains("permissions violation for subscription") {
            return;
        }
        for (i, b) in self.bindings.iter().enumerate() {
            if error.contains(&format!("\"{}\"", b.subject)) {
                self.status
                    .set_binding(i, BindingState::Failed, Some(error.to_string()));
            }
        }
    }

    /// A new binding set from a config reload: stop the current workers
    /// (after the message in hand), then bind the new set on the same client.
    /// The machine then has a probe confirm it (`Event::Rebound`).
    pub(super) async fn rebind(&mut self, conn: &mut Connection, set: BindingSet) {
        tracing::info!(
            bindings = set.bindings.len(),
            "re-binding after a config reload"
        );
        self.stop_workers(conn).await;
        self.status.replace_bindings(
            &set.specs,
            set.bindings.iter().map(|b| b.counters.clone()).collect(),
        );
        self.bindings = set.bindings;
        conn.bound = vec![false; self.bindings.len()];
        self.bind_missing(conn).await;
    }

    /// Stop this connection's workers and give it fresh tokens for new ones.
    pub(super) async fn stop_workers(&self, conn: &mut Connection) {
        conn.stop.cancel();
        conn.tasks.close();
        let wait = self.longest_handler() + Duration::from_secs(1);
        if tokio::time::timeout(wait, conn.tasks.wait()).await.is_err() {
            tracing::warn!("dispatch workers did not stop in {wait:?}");
        }
        conn.stop = CancellationToken::new();
        conn.tasks = TaskTracker::new();
    }
}
