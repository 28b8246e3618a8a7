//! The bindings side of the supervisor: subscribing each binding's workers
//! on a connection (core subscriptions, queue groups, JetStream consumers),
//! confirming that the server took the subscriptions, verifying JetStream
//! bindings after the client's own reconnect, marking bindings the server
//! refused, and re-binding after a config reload (only what changed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Subscriber;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::refused::{self, Made};
use super::{Connection, DRAIN_TIMEOUT, Supervisor};
use crate::dispatch::{Budget, Budgets, Dispatch, Inbox, Reader, Source};
use crate::jetstream::{JsBinding, JsSource};
use crate::plugin::PluginSlot;
use crate::status::{BindingCounters, BindingSpec, BindingState, Position};

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

/// One binding's dispatch tasks on a connection. They stop with the
/// connection, or on their own when a reload removes or changes the binding
/// (the rest keep running).
pub(super) struct Workers {
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Where the binding is in the status (a reload can move it).
    position: Position,
}

impl Workers {
    fn new(conn: &Connection, index: usize) -> Workers {
        Workers {
            stop: conn.stop.child_token(),
            tasks: TaskTracker::new(),
            position: Position::new(index),
        }
    }

    /// Run `task` as one of these workers (and of the connection's tasks,
    /// which a drain or a retirement waits for).
    fn spawn(&self, conn: &Connection, task: impl Future<Output = ()> + Send + 'static) {
        conn.tasks.spawn(self.tasks.track_future(task));
    }

    /// Stop these workers after the message in hand; `wait` for them.
    async fn retire(self, wait: Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(wait, self.tasks.wait()).await.is_err() {
            tracing::warn!("a removed binding's workers did not stop in {wait:?}");
        }
    }
}

impl Supervisor {
    /// Subscribe every binding that has no dispatch workers on this connection.
    pub(super) async fn bind_missing(&self, conn: &mut Connection) {
        self.bind_missing_where(conn, |_| true).await;
    }

    /// [`bind_missing`](Self::bind_missing) for the bindings `which` picks.
    /// Core bindings first, confirmed together by one round trip; then
    /// JetStream bindings, whose consumer lookups confirm them.
    pub(super) async fn bind_missing_where(
        &self,
        conn: &mut Connection,
        which: impl Fn(&Binding) -> bool,
    ) {
        let (core, js): (Vec<usize>, Vec<usize>) = (0..self.bindings.len())
            .filter(|&i| conn.bound[i].is_none() && which(&self.bindings[i]))
            .partition(|&i| self.bindings[i].jetstream.is_none());
        self.bind_core(conn, &core).await;
        for i in js {
            let b = &self.bindings[i];
            let Some(jetstream) = &b.jetstream else {
                continue;
            };
            let workers = Workers::new(conn, i);
            let mut sources = Vec::with_capacity(b.workers.max(1));
            let mut failed = None;
            for _ in 0..b.workers.max(1) {
                match JsSource::attach(
                    conn.js.clone(),
                    jetstream.clone(),
                    self.status.clone(),
                    workers.position.clone(),
                )
                .await
                {
                    Ok(source) => sources.push(Source::JetStream(Box::new(source))),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                Some(e) => self.bind_failed(i, &e),
                None => self.start(conn, i, workers, sources),
            }
        }
    }

    /// Subscribe these core bindings, then confirm: the server answers in
    /// order, so with a probe's echo back every refusal of these
    /// subscriptions has arrived. A refused binding is not started (its
    /// subscriptions are dropped) and is tried again on the next health
    /// check: another binding's removal can make room.
    async fn bind_core(&self, conn: &mut Connection, which: &[usize]) {
        if which.is_empty() {
            return;
        }
        let stats = conn.client.statistics();
        let seen = stats.server_errors.count();
        let mut made: Vec<(usize, Vec<Subscriber>)> = Vec::with_capacity(which.len());
        for &i in which {
            match self.subscribe(conn, i, &self.bindings[i]).await {
                Ok(subs) => made.push((i, subs)),
                Err(e) => self.bind_failed(i, &e),
            }
        }
        if made.is_empty() {
            return;
        }
        if let Err(e) = conn
            .probe
            .round_trip(&conn.client, self.config.health.timeout)
            .await
        {
            // Unconfirmed: the next health check tries again (or finds the
            // connection gone).
            tracing::warn!(error = %e, bindings = made.len(), "the server did not confirm new subscriptions");
            return;
        }
        let (errors, lost) = stats.server_errors.since(seen);
        let list: Vec<Made<'_>> = made
            .iter()
            .map(|(i, subs)| Made {
                index: *i,
                subject: &self.bindings[*i].subject,
                queue: self.bindings[*i].queue.as_deref(),
                subs: subs.len(),
            })
            .collect();
        let mut refused = refused::refused(&errors, lost, &list);
        drop(list);
        for (i, subs) in made {
            if let Some(why) = refused.remove(&i) {
                self.refused(i, why);
                continue;
            }
            let workers = Workers::new(conn, i);
            let sources = subs
                .into_iter()
                .map(|sub| self.inbox(conn, i, sub, &workers))
                .collect();
            self.start(conn, i, workers, sources);
        }
    }

    /// Spawn a dispatch worker per source; the binding waits for the next
    /// confirmation to count as bound.
    fn start(&self, conn: &mut Connection, i: usize, workers: Workers, sources: Vec<Source>) {
        let b = &self.bindings[i];
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
                stop: workers.stop.clone(),
                shutdown: conn.drain.clone(),
                drain_timeout: DRAIN_TIMEOUT,
                admission: self.admission.clone(),
                pool: self.pool.clone(),
            };
            workers.spawn(conn, dispatch.run());
        }
        conn.bound[i] = Some(workers);
        self.status.set_binding(i, BindingState::Pending, None);
    }

    fn bind_failed(&self, i: usize, e: &anyhow::Error) {
        let b = &self.bindings[i];
        let error = crate::errors::anyhow_chain(e);
        tracing::warn!(plugin = b.plugin.name(), subject = %b.subject, %error, "binding failed");
        self.status
            .set_binding(i, BindingState::Failed, Some(error));
    }

    /// The server refused the binding's subscription. Said once per cause:
    /// the retry on every health check is quiet while the answer is the same.
    fn refused(&self, i: usize, why: String) {
        let b = &self.bindings[i];
        if self.status.binding_error(i).as_deref() == Some(why.as_str()) {
            tracing::debug!(plugin = b.plugin.name(), subject = %b.subject, error = %why, "subscription still refused");
        } else {
            tracing::warn!(plugin = b.plugin.name(), subject = %b.subject, error = %why, "the server refused the binding's subscription; retried on every health check");
        }
        self.status.set_binding(i, BindingState::Failed, Some(why));
    }

    /// One subscription per worker. Concurrent core workers join one queue
    /// group (the binding's, or a private one), so the server spreads the
    /// messages over them.
    async fn subscribe(
        &self,
        conn: &Connection,
        i: usize,
        b: &Binding,
    ) -> anyhow::Result<Vec<Subscriber>> {
        let group = match &b.queue {
            Some(q) => Some(q.clone()),
            None if b.workers > 1 => Some(format!("_wasmgate.{}.b{i}", self.instance_id)),
            None => None,
        };
        let mut subs = Vec::with_capacity(b.workers.max(1));
        for _ in 0..b.workers.max(1) {
            subs.push(match &group {
                Some(g) => {
                    conn.client
                        .queue_subscribe(b.subject.clone(), g.clone())
                        .await?
                }
                None => conn.client.subscribe(b.subject.clone()).await?,
            });
        }
        Ok(subs)
    }

    /// A confirmed subscription's inbox; the binding's workers share one
    /// buffer limit.
    fn inbox(&self, conn: &Connection, i: usize, sub: Subscriber, workers: &Workers) -> Source {
        let b = &self.bindings[i];
        let budgets = Budgets {
            binding: Budget::new(b.buffer.unwrap_or(self.config.nats.binding_buffer).as_u64()),
            gateway: self.buffered.clone(),
        };
        let reader = Reader {
            plugin: b.plugin.name().to_string(),
            subject: b.subject.clone(),
            counters: b.counters.clone(),
            budgets,
            stop: workers.stop.clone(),
            drain: conn.drain.clone(),
            drain_timeout: DRAIN_TIMEOUT,
        };
        Source::Core(Inbox::start(sub, reader, |task| workers.spawn(conn, task)))
    }

    /// After the client's own reconnect: the server may have lost streams and
    /// consumers (memory storage, a wiped store). Declare them again (with
    /// `create`) or check they still exist; a failure is recorded on the
    /// binding and its source keeps re-attaching.
    pub(super) async fn verify_jetstream(&self, conn: &Connection) {
        for (i, b) in self.bindings.iter().enumerate() {
            let Some(js) = &b.jetstream else { continue };
            if conn.bound[i].is_none() {
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

    /// A permissions violation, as the client's events report it (after the
    /// client's own reconnect re-subscribed, say): the core bindings it names
    /// stop and are tried again on the next health check, which confirms
    /// them or says why not.
    pub(super) async fn mark_failed_subscription(
        &self,
        conn: Option<&mut Connection>,
        error: &str,
    ) {
        let Some(conn) = conn else { return };
        let list: Vec<Made<'_>> = self
            .bindings
            .iter()
            .enumerate()
            .filter(|(i, b)| b.jetstream.is_none() && conn.bound[*i].is_some())
            .map(|(index, b)| Made {
                index,
                subject: &b.subject,
                queue: b.queue.as_deref(),
                subs: b.workers.max(1),
            })
            .collect();
        let refused = refused::violations(&[error.to_string()], &list);
        drop(list);
        for (i, why) in refused {
            if let Some(workers) = conn.bound[i].take() {
                workers
                    .retire(self.longest_handler() + Duration::from_secs(1))
                    .await;
            }
            self.refused(i, why);
        }
    }

    /// A new binding set from a config reload. A binding the reload left as
    /// it was keeps its workers and subscription (a message arriving
    /// meanwhile is handled as usual); the others stop after the message in
    /// hand and the new ones are bound. The machine then has a probe confirm
    /// them (`Event::Rebound`).
    pub(super) async fn rebind(
        &mut self,
        conn: &mut Connection,
        mut set: BindingSet,
    ) -> super::Rebound {
        // Which running binding each new one is, if any.
        let froms: Vec<Option<usize>> = {
            let mut old: HashMap<Key<'_>, Vec<usize>> = HashMap::with_capacity(self.bindings.len());
            for (i, b) in self.bindings.iter().enumerate() {
                old.entry(Key::of(b)).or_default().push(i);
            }
            set.bindings
                .iter()
                .map(|b| {
                    let list = old.get_mut(&Key::of(b))?;
                    let at = list.iter().position(|&o| self.bindings[o].same(b))?;
                    Some(list.remove(at))
                })
                .collect()
        };
        let mut running = std::mem::take(&mut conn.bound);
        let mut kept = Vec::with_capacity(set.bindings.len());
        let mut bound = Vec::with_capacity(set.bindings.len());
        for (i, (b, from)) in set.bindings.iter_mut().zip(froms).enumerate() {
            let workers = from.and_then(|o| running[o].take().map(|w| (o, w)));
            let workers = workers.map(|(o, w)| {
                // The running workers count into their own counters.
                b.counters = self.bindings[o].counters.clone();
                w.position.set(i);
                w
            });
            kept.push(from.filter(|_| workers.is_some()));
            bound.push(workers);
        }
        let retired: Vec<Workers> = running.into_iter().flatten().collect();
        let kept_count = kept.iter().flatten().count();
        let rebound = super::Rebound {
            kept: kept_count,
            started: set.bindings.len() - kept_count,
            stopped: retired.len(),
        };
        tracing::info!(
            bindings = set.bindings.len(),
            kept = rebound.kept,
            stopped = rebound.stopped,
            "re-binding after a config reload"
        );
        let wait = self.longest_handler() + Duration::from_secs(1);
        futures::future::join_all(retired.into_iter().map(|w| w.retire(wait))).await;
        self.status.replace_bindings_keeping(
            &set.specs,
            set.bindings.iter().map(|b| b.counters.clone()).collect(),
            &kept,
        );
        self.bindings = set.bindings;
        conn.bound = bound;
        self.bind_missing(conn).await;
        rebound
    }
}

/// What a reload matches bindings by, before [`Binding::same`] compares the
/// rest: the plugin's slot (which `same` requires anyway) and the
/// subscription, borrowed, so that matching 10,000 bindings allocates
/// nothing per binding but its list.
#[derive(PartialEq, Eq, Hash)]
struct Key<'a> {
    /// The slot's address.
    slot: usize,
    subject: &'a str,
    queue: Option<&'a str>,
}

impl Key<'_> {
    fn of(b: &Binding) -> Key<'_> {
        Key {
            slot: Arc::as_ptr(&b.plugin) as usize,
            subject: &b.subject,
            queue: b.queue.as_deref(),
        }
    }
}

impl Binding {
    /// Whether `other` would run exactly as this one does: the same plugin
    /// slot (a reloaded component swaps into it), subscription, workers,
    /// buffer and JetStream settings.
    fn same(&self, other: &Binding) -> bool {
        Arc::ptr_eq(&self.plugin, &other.plugin)
            && self.subject == other.subject
            && self.queue == other.queue
            && self.workers == other.workers
            && self.buffer == other.buffer
            && match (&self.jetstream, &other.jetstream) {
                (None, None) => true,
                (Some(a), Some(b)) => a.subject == b.subject && a.config == b.config,
                _ => false,
            }
    }
}
