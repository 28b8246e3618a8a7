//! The supervisor: the one owner of the NATS client and the one place that
//! decides when to reconnect.
//!
//! # State machine
//!
//! ```text
//!              connect ok + bindings confirmed
//! connecting ───────────────────────────────────▶ connected ◀──────────┐
//!     │ attempts used up                          │  ▲   │ probe fails  │ probe ok
//!     ▼                                            │  │   ▼              │
//!   failed ◀───────────────┐          client lost  │  │ degraded ────────┘
//!     │ keep-trying        │          connection   │  │   │ failure_threshold reached
//!     ▼                    │                       ▼  │   ▼
//! reconnecting ──(used up)─┘              disconnected  reconnecting ── ok ──▶ connected
//!                                          │ client's own reconnect ok
//!                                          └──────▶ connected (bindings verified)
//! ```
//!
//! Two paths lead back to `connected`, and only one is ever active:
//!
//! - **The client's own reconnect** (`disconnected`): the server dropped the
//!   connection. async-nats reconnects with our backoff (first retry at once)
//!   and re-sends every core subscription itself. Health probes pause: the
//!   client owns recovery. On its `Connected` event the supervisor verifies
//!   the bindings with a probe round trip.
//! - **The application-level reconnect** (`reconnecting`): the client thinks
//!   it is connected but `failure_threshold` consecutive probes went
//!   unanswered (a hung server, a half-open connection), or the client gave
//!   up. Probes run every `health.interval`; after a failure the next probe
//!   goes out at once, so a hang is confirmed within
//!   `interval + threshold × timeout` (within `interval × threshold` whenever
//!   `timeout ≤ interval × (threshold - 1) / threshold`, as with the defaults). The supervisor retires the client (its dispatch tasks stop, every
//!   handle is dropped, which closes it) and builds a new one with the
//!   backoff, up to `max_attempts`, subscribing every binding again.
//!
//! On every reconnect, from either path: the failure count resets, the time is
//! recorded, every binding is re-bound or verified, then the reconnect
//! callbacks run in registration order. A binding that fails to subscribe is
//! marked `failed` with its error and retried on every health tick; it does not
//! fail the reconnect. When attempts are used up the state becomes `failed`
//! (readiness false), and `reconnect.on_exhausted` decides: `exit` ends
//! [`Supervisor::run`] with an error, `keep-trying` retries every
//! `max_backoff` for ever.
//!
//! **Refusals are not outages.** A connect the server refuses for its
//! credentials, or whose TLS cannot be set up or verified, fails the same way
//! on every attempt: it ends the backoff loop at once (state `failed`, the
//! one-line cause in `last_error`) instead of using up `max_attempts`. While
//! running, the client's own reconnect is watched the same way: as many
//! authorization refusals in a row as there are configured servers (the
//! client tries them in turn) mean the credentials were revoked. Then
//! `on_exhausted` decides as above; `keep-trying` keeps retrying, slowly,
//! until the credentials work again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::Client;
use futures::future::BoxFuture;
use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::{self, Backoff, Exhausted};
use crate::config::{Config, OnExhausted};
use crate::connection::{self, ClientEvent};
use crate::health::Probe;
use crate::status::{BindingState, ConnectionState, StatusHub};

mod bindings;

pub use bindings::{Binding, BindingSet};

/// How long shutdown waits for subscriptions to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Which path a reconnect came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectPath {
    /// async-nats re-established the connection on its own.
    Client,
    /// The supervisor retired the client and built a new one.
    Supervisor,
}

/// What a reconnect callback is told.
#[derive(Debug, Clone)]
pub struct ReconnectEvent {
    pub path: ReconnectPath,
    /// Reconnects since start, including this one.
    pub total_reconnects: u64,
    pub at: SystemTime,
    /// The client now in use (new after a supervisor reconnect).
    pub client: Client,
}

/// A reconnect callback (the seed's `RegisterReconnectCallback`).
pub type ReconnectCallback =
    Arc<dyn Fn(ReconnectEvent) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// The callbacks, shared with the embedding API so registration works any time.
pub type Callbacks = Arc<Mutex<Vec<ReconnectCallback>>>;

/// Why the supervisor stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Every attempt failed.
    #[error("NATS reconnect attempts exhausted: {0}")]
    Exhausted(Exhausted),
    /// The server refused the gateway in a way retrying cannot mend
    /// (credentials, TLS).
    #[error("cannot connect to NATS: {0}")]
    Refused(Exhausted),
}

impl From<Exhausted> for SupervisorError {
    fn from(e: Exhausted) -> Self {
        if e.permanent {
            SupervisorError::Refused(e)
        } else {
            SupervisorError::Exhausted(e)
        }
    }
}

/// Why the current client must go.
enum Rebuild {
    /// Unhealthy or closed: reconnect with the backoff.
    Because(String),
    /// The client's own reconnect used up `max_attempts`.
    Exhausted,
    /// Every server refused the credentials in turn: retrying cannot help.
    Refused(String),
}

/// One client and everything bound to it.
struct Connection {
    client: Client,
    /// The JetStream context of this client (re-created with it).
    js: async_nats::jetstream::Context,
    /// Which streams capture which subjects, as this client learnt it.
    streams: Arc<crate::jetstream::Streams>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    probe: Probe,
    /// Retires this connection's dispatch tasks.
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Which bindings have a dispatch task on this connection.
    bound: Vec<bool>,
    /// The client reports its first connection as an event too: not a reconnect.
    initial_connected_seen: bool,
    /// The client is reconnecting on its own.
    client_reconnecting: bool,
    /// Reconnect attempts refused (credentials, TLS) since the last connect.
    auth_refusals: usize,
}

/// What the embedding API asks of the supervisor.
pub enum Command {
    /// A config reload changed the binding set: stop the current workers and
    /// bind these instead, on the same connection; then signal the sender.
    Rebind(BindingSet, tokio::sync::oneshot::Sender<()>),
}

pub struct Supervisor {
    config: Arc<Config>,
    bindings: Vec<Binding>,
    commands: mpsc::UnboundedReceiver<Command>,
    status: StatusHub,
    callbacks: Callbacks,
    shutdown: CancellationToken,
    max_payload: Arc<AtomicUsize>,
    current: watch::Sender<Option<Client>>,
    admission: Option<Arc<crate::dispatch::Admission>>,
    /// Names this gateway's private queue groups (concurrent core bindings).
    instance_id: String,
}

impl Supervisor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        bindings: Vec<Binding>,
        commands: mpsc::UnboundedReceiver<Command>,
        status: StatusHub,
        callbacks: Callbacks,
        shutdown: CancellationToken,
        max_payload: Arc<AtomicUsize>,
        current: watch::Sender<Option<Client>>,
    ) -> Supervisor {
        Supervisor {
            bindings,
            commands,
            status,
            callbacks,
            shutdown,
            admission: crate::dispatch::Admission::from_config(&config.runtime),
            instance_id: format!("{:016x}", rand::random::<u64>()),
            max_payload,
            current,
            config,
        }
    }

    /// Connect, bind, supervise until shutdown (then drain), or until
    /// attempts are used up with `on_exhausted = "exit"`.
    pub async fn run(mut self) -> Result<(), SupervisorError> {
        let backoff = Backoff::from_config(&self.config.reconnect);
        let Some(mut conn) = self
            .establish(&backoff, ConnectionState::Connecting)
            .await?
        else {
            self.stopped();
            return Ok(());
        };

        let mut ticker = tokio::time::interval(self.config.health.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;

        loop {
            let rebuild = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    self.drain(conn).await;
                    return Ok(());
                }
                event = conn.events.recv() => {
                    let event = event.unwrap_or(ClientEvent::GaveUp("event stream ended".into()));
                    self.on_event(&mut conn, event).await
                }
                Some(command) = self.commands.recv() => {
                    match command {
                        Command::Rebind(set, done) => {
                            self.rebind(&mut conn, set).await;
                            let _ = done.send(());
                        }
                    }
                    None
                }
                _ = ticker.tick() => {
                    let rebuild = self.on_tick(&mut conn).await;
                    // A failed probe is confirmed at once rather than a whole
                    // interval later: a hung server is caught within
                    // interval + threshold × timeout.
                    if self.status.snapshot().consecutive_failures > 0 {
                        ticker.reset_immediately();
                    }
                    rebuild
                }
            };
            let next = match rebuild {
                None => continue,
                Some(Rebuild::Because(reason)) => {
                    self.retire(conn).await;
                    self.reconnect(&backoff, reason).await?
                }
                Some(rebuild @ (Rebuild::Exhausted | Rebuild::Refused(_))) => {
                    self.retire(conn).await;
                    let attempts = self.config.reconnect.max_attempts;
                    let exhausted = match rebuild {
                        Rebuild::Refused(why) => Exhausted {
                            attempts,
                            last_error: why,
                            permanent: true,
                        },
                        _ => Exhausted {
                            attempts,
                            last_error: "the client's own reconnect failed every attempt".into(),
                            permanent: false,
                        },
                    };
                    match self.exhausted(exhausted).await? {
                        Some(new) => {
                            self.after_reconnect(&new, ReconnectPath::Supervisor).await;
                            Some(new)
                        }
                        None => None,
                    }
                }
            };
            match next {
                Some(new) => conn = new,
                None => {
                    self.stopped();
                    return Ok(());
                }
            }
        }
    }

    /// Application-level reconnect after retiring a client: the backoff up to
    /// `max_attempts`, then as `on_exhausted` says.
    async fn reconnect(
        &self,
        backoff: &Backoff,
        reason: String,
    ) -> Result<Option<Connection>, SupervisorError> {
        tracing::warn!(%reason, "application-level reconnect");
        self.status.update(|s| {
            s.last_error = Some(reason);
        });
        let conn = match self
            .establish(backoff, ConnectionState::Reconnecting)
            .await?
        {
            Some(conn) => conn,
            None => return Ok(None),
        };
        self.after_reconnect(&conn, ReconnectPath::Supervisor).await;
        Ok(Some(conn))
    }

    /// Connect and bind with the backoff. `Ok(None)` means shutdown came first.
    async fn establish(
        &self,
        backoff: &Backoff,
        state: ConnectionState,
    ) -> Result<Option<Connection>, SupervisorError> {
        match self
            .establish_with(backoff, self.config.reconnect.max_attempts, true, state)
            .await
        {
            Ok(conn) => Ok(conn),
            Err(exhausted) => self.exhausted(exhausted).await,
        }
    }

    /// Attempts are used up: state `failed`, then as `on_exhausted` says.
    async fn exhausted(&self, exhausted: Exhausted) -> Result<Option<Connection>, SupervisorError> {
        let r = &self.config.reconnect;
        tracing::error!(error = %exhausted, "reconnect attempts exhausted");
        self.status.update(|s| {
            s.state = ConnectionState::Failed;
            s.last_error = Some(exhausted.to_string());
        });
        self.status.set_all_bindings(BindingState::Rebinding);
        match r.on_exhausted {
            OnExhausted::Exit => Err(exhausted.into()),
            OnExhausted::KeepTrying => {
                let slow = Backoff {
                    initial: r.max_backoff,
                    max: r.max_backoff,
                    factor: 1.0,
                    jitter: r.jitter,
                };
                // Even refused credentials are retried here: the operator
                // asked to wait for them to be fixed.
                Ok(self
                    .establish_with(&slow, 0, false, ConnectionState::Failed)
                    .await
                    .unwrap_or(None))
            }
        }
    }

    /// The backoff loop; with `stop_on_permanent` a refusal that retrying
    /// cannot mend (credentials, TLS) ends it at once, whatever `max_attempts`.
    async fn establish_with(
        &self,
        backoff: &Backoff,
        max_attempts: u32,
        stop_on_permanent: bool,
        state: ConnectionState,
    ) -> Result<Option<Connection>, Exhausted> {
        self.status.update(|s| {
            s.state = state;
            s.server = None;
            s.reconnect_attempts = 0;
        });
        self.status.set_all_bindings(BindingState::Rebinding);
        let attempts = backoff::retry(
            backoff,
            max_attempts,
            |attempt| {
                self.status.update(|s| s.reconnect_attempts = attempt);
                async {
                    self.connect_and_bind()
                        .await
                        .map_err(|e| connection::ConnectFailure {
                            permanent: connection::is_permanent(&e),
                            message: crate::errors::anyhow_chain(&e),
                        })
                }
            },
            |e| stop_on_permanent && e.permanent,
            |attempt, error, wait| {
                tracing::warn!(attempt, error = %error, retry_in = ?wait, "connect failed");
                self.status
                    .update(|s| s.last_error = Some(error.to_string()));
            },
        );
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Ok(None),
            result = attempts => result.map(Some),
        }
    }

    /// One attempt: a new client, every binding subscribed, and a probe
    /// round trip proving the server has the subscriptions.
    async fn connect_and_bind(&self) -> anyhow::Result<Connection> {
        let (client, events) = connection::connect(&self.config, &self.status).await?;
        let probe = Probe::new(&client).await?;
        let js = async_nats::jetstream::new(client.clone());
        let streams = Arc::new(crate::jetstream::Streams::new(js.clone()));
        let stop = CancellationToken::new();
        if self.bindings.iter().any(|b| {
            b.jetstream
                .as_ref()
                .is_some_and(|j| j.config.dead_letter.is_some())
        }) {
            // Not one of the dispatch tasks: it ends with the connection.
            tokio::spawn(streams.clone().watch(stop.clone()));
        }
        let mut conn = Connection {
            js,
            streams,
            client,
            events,
            probe,
            stop,
            tasks: TaskTracker::new(),
            bound: vec![false; self.bindings.len()],
            initial_connected_seen: false,
            client_reconnecting: false,
            auth_refusals: 0,
        };
        self.bind_missing(&mut conn).await;
        match conn
            .probe
            .round_trip(&conn.client, self.config.health.timeout)
            .await
        {
            Ok(rtt) => {
                self.mark_connected(&conn, Some(rtt));
                Ok(conn)
            }
            Err(e) => {
                self.retire(conn).await;
                Err(anyhow::anyhow!(
                    "server did not confirm the subscriptions: {e}"
                ))
            }
        }
    }

    /// A probe just came back: every binding with a task is confirmed.
    fn mark_connected(&self, conn: &Connection, rtt: Option<Duration>) {
        let info = conn.client.server_info();
        if info.max_payload > 0 {
            self.max_payload.store(info.max_payload, Ordering::Relaxed);
        }
        self.status.update(|s| {
            s.state = ConnectionState::Connected;
            s.server = Some(format!("{}:{}", info.host, info.port));
            s.consecutive_failures = 0;
            s.reconnect_attempts = 0;
            if let Some(rtt) = rtt {
                s.last_probe_rtt_us = Some(rtt.as_micros().min(u64::MAX as u128) as u64);
            }
            for (b, bound) in s.bindings.iter_mut().zip(&conn.bound) {
                if *bound {
                    b.state = BindingState::Bound;
                    b.error = None;
                }
            }
        });
        self.current.send_replace(Some(conn.client.clone()));
    }

    /// Bookkeeping shared by both reconnect paths, then the callbacks in order.
    async fn after_reconnect(&self, conn: &Connection, path: ReconnectPath) {
        let at = SystemTime::now();
        let mut total = 0;
        self.status.update(|s| {
            s.total_reconnects += 1;
            s.last_reconnect = Some(at);
            s.consecutive_failures = 0;
            s.reconnect_attempts = 0;
            total = s.total_reconnects;
        });
        tracing::info!(?path, total_reconnects = total, "reconnected");
        let callbacks = self.callbacks.lock().await.clone();
        for (i, callback) in callbacks.iter().enumerate() {
            let event = ReconnectEvent {
                path,
                total_reconnects: total,
                at,
                client: conn.client.clone(),
            };
            if let Err(e) = callback(event).await {
                let e = crate::errors::anyhow_chain(&e);
                tracing::error!(callback = i, error = %e, "reconnect callback failed");
                self.status
                    .update(|s| s.last_error = Some(format!("reconnect callback {i} failed: {e}")));
            }
        }
    }

    /// React to a client event; `Some` asks for an application-level reconnect.
    async fn on_event(&self, conn: &mut Connection, event: ClientEvent) -> Option<Rebuild> {
        match event {
            ClientEvent::Connected if !conn.initial_connected_seen => {
                conn.initial_connected_seen = true;
            }
            ClientEvent::Connected => {
                conn.client_reconnecting = false;
                conn.auth_refusals = 0;
                // Streams may have come or gone while we were away.
                conn.streams.forget_all();
                // The client re-sent every SUB; one echo proves the server has them.
                match conn
                    .probe
                    .round_trip(&conn.client, self.config.health.timeout)
                    .await
                {
                    Ok(rtt) => {
                        self.mark_connected(conn, Some(rtt));
                        self.verify_jetstream(conn).await;
                        self.bind_missing(conn).await;
                        self.after_reconnect(conn, ReconnectPath::Client).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reconnected, but the server did not confirm the bindings yet");
                        self.status.update(|s| {
                            s.state = ConnectionState::Degraded;
                            s.consecutive_failures += 1;
                            s.last_error = Some(format!("after reconnect: {e}"));
                        });
                    }
                }
            }
            ClientEvent::Disconnected => {
                conn.client_reconnecting = true;
                tracing::warn!("connection lost; the client is reconnecting");
                self.status.update(|s| {
                    s.state = ConnectionState::Disconnected;
                    s.consecutive_failures = 0;
                    s.last_error = Some("connection lost".into());
                });
                self.status.set_all_bindings(BindingState::Rebinding);
            }
            ClientEvent::GaveUp(reason) => return Some(Rebuild::Because(reason)),
            ClientEvent::Refused(why) => {
                // The client tries the servers in turn, least failed first:
                // as many refusals in a row as servers means all refused.
                conn.auth_refusals += 1;
                let servers = self.config.nats.servers.len().max(1);
                tracing::warn!(refusals = conn.auth_refusals, servers, "reconnect refused: {why}");
                self.status.update(|s| s.last_error = Some(why.clone()));
                if conn.auth_refusals >= servers {
                    return Some(Rebuild::Refused(format!(
                        "{why} (on reconnect, by every server)"
                    )));
                }
            }
            ClientEvent::Exhausted => return Some(Rebuild::Exhausted),
            ClientEvent::SlowConsumer(sid) => {
                tracing::warn!(
                    sid,
                    "slow consumer: the client dropped messages; raise nats.subscription_capacity or add capacity"
                );
                self.status.update(|s| s.slow_consumer_events += 1);
            }
            ClientEvent::ServerError(e) => {
                tracing::warn!(error = %e, "server error");
                self.mark_failed_subscription(&e);
                self.status
                    .update(|s| s.last_error = Some(format!("server: {e}")));
            }
            ClientEvent::LameDuck => tracing::warn!("server entered lame duck mode"),
            ClientEvent::Other(e) => tracing::debug!(event = %e, "client event"),
        }
        None
    }

    /// A health tick; `Some` asks for an application-level reconnect.
    async fn on_tick(&self, conn: &mut Connection) -> Option<Rebuild> {
        if conn.client_reconnecting {
            return None;
        }
        let timeout = self.config.health.timeout;
        match conn.probe.round_trip(&conn.client, timeout).await {
            Ok(rtt) => {
                let failures = self.status.snapshot().consecutive_failures;
                if failures > 0 {
                    tracing::info!(after = failures, "health probe recovered");
                }
                if conn.bound.iter().any(|b| !b) {
                    self.bind_missing(conn).await;
                }
                self.mark_connected(conn, Some(rtt));
                None
            }
            Err(e) => {
                let threshold = self.config.reconnect.failure_threshold;
                let mut failures = 0;
                self.status.update(|s| {
                    s.consecutive_failures += 1;
                    failures = s.consecutive_failures;
                    s.state = ConnectionState::Degraded;
                    s.last_error = Some(format!("health probe: {e}"));
                });
                tracing::warn!(failures, threshold, error = %e, "health probe failed");
                (failures >= threshold).then(|| {
                    Rebuild::Because(format!(
                        "{failures} consecutive health probes failed (last: {e})"
                    ))
                })
            }
        }
    }

    /// Stop a connection's dispatch tasks and drop every handle, which closes the client.
    async fn retire(&self, conn: Connection) {
        conn.stop.cancel();
        conn.tasks.close();
        self.current.send_replace(None);
        let wait = self.longest_handler() + Duration::from_secs(1);
        if tokio::time::timeout(wait, conn.tasks.wait()).await.is_err() {
            tracing::warn!("dispatch tasks did not stop in {wait:?}");
        }
        drop(conn);
    }

    /// Shutdown: drain every subscription, finish in-flight handlers, flush.
    async fn drain(&self, conn: Connection) {
        self.status.update(|s| s.state = ConnectionState::Draining);
        conn.tasks.close();
        let wait = DRAIN_TIMEOUT + self.longest_handler();
        if tokio::time::timeout(wait, conn.tasks.wait()).await.is_err() {
            tracing::warn!("dispatch tasks did not drain in {wait:?}");
        }
        if tokio::time::timeout(Duration::from_secs(2), conn.client.flush())
            .await
            .is_err()
        {
            tracing::warn!("final flush timed out");
        }
        conn.stop.cancel();
        self.current.send_replace(None);
        drop(conn);
        self.stopped();
    }

    fn stopped(&self) {
        self.status.update(|s| s.state = ConnectionState::Stopped);
        self.status.set_all_bindings(BindingState::Stopped);
    }

    fn longest_handler(&self) -> Duration {
        self.config
            .plugins
            .iter()
            .map(|p| p.timeout)
            .max()
            .unwrap_or_default()
    }
}
