//! The supervisor: the one owner of the NATS client, and the one that
//! executes what the connection state machine decides.
//!
//! [`Supervisor::run`] waits for the next event (shutdown, a client event, a
//! command, a health tick), hands it to the [`machine::Machine`], and does
//! what comes back: probe, bind, retire the client, run a round of connect
//! attempts with the backoff, drain, publish the status, run the reconnect
//! callbacks. What that I/O finds out goes back to the machine as the next
//! event. The states and their arrows, the two reconnect paths, and what a
//! refusal means are documented, and unit-tested, in [`machine`]; nothing is
//! decided here.
//!
//! The status is output only: the machine is the one source of the
//! connection fields (state, failure count, attempts, reconnects, last
//! error), and the supervisor adds only what the connection knows (server,
//! probe round trip, binding states). It never reads the status back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::Client;
use futures::future::BoxFuture;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::{self, Exhausted};
use crate::config::Config;
use crate::connection::{self, ClientEvent, ConnectFailure};
use crate::health::Probe;
use crate::status::{BindingState, StatusHub};

mod bindings;
pub mod machine;
mod refused;

pub use bindings::{Binding, BindingSet};
use machine::{Action, Event, Machine, Note, Round, Settings, Update};

/// How long shutdown waits for subscriptions to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long both connections stay subscribed after a lame-duck switch is
/// confirmed. The old server has seen the new subscriptions, but a third
/// node, where a publisher may be, learns of them over its own route: if
/// the old subscription's removal reached it first, a message published
/// there in between would have no subscriber (the server re-routes queue
/// messages, not plain ones). The lame-duck grace period (10 s by default)
/// leaves room.
const HANDOVER: Duration = Duration::from_millis(250);

/// JetStream publishes whose PubAck is awaited, on one connection.
const MAX_ACKS_IN_FLIGHT: usize = 1 << 16;

/// Which path a reconnect came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectPath {
    /// async-nats re-established the connection on its own.
    Client,
    /// The supervisor retired the client and built a new one.
    Supervisor,
    /// The server entered lame duck mode: the supervisor connected and bound
    /// a new client to another server before retiring the old one.
    LameDuck,
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
    /// Drains them (a child of the gateway's shutdown, so shutdown drains
    /// every connection; a switch away from a lame duck drains one).
    drain: CancellationToken,
    tasks: TaskTracker,
    /// The dispatch workers of each binding that has them on this connection.
    bound: Vec<Option<bindings::Workers>>,
}

/// What the embedding API asks of the supervisor.
pub enum Command {
    /// A config reload changed the binding set: stop the workers of the
    /// bindings it removed or changed and bind the new ones, on the same
    /// connection (the others keep running); then signal the sender.
    Rebind(BindingSet, tokio::sync::oneshot::Sender<Rebound>),
}

/// What a re-binding did: bindings kept running, started, stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebound {
    pub kept: usize,
    pub started: usize,
    pub stopped: usize,
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
    /// Bytes of core messages every binding together holds waiting
    /// (`nats.buffer_limit`); shared across connections, so an old one
    /// draining and its successor count together.
    buffered: Arc<crate::dispatch::Budget>,
    /// The threads every binding's calls run on (`runtime.workers`).
    pool: Arc<crate::dispatch::Pool>,
    /// The slow-consumer WARN, at most once per 10 s.
    slow_consumer: std::sync::Mutex<crate::throttle::Throttle>,
    /// Names this gateway's private queue groups (concurrent core bindings).
    instance_id: String,
}

/// What [`Supervisor::run`] works on.
struct Run {
    machine: Machine,
    /// `None` only between retiring a client and the end of the next round
    /// of attempts, which makes a new one or ends `run`.
    conn: Option<Connection>,
    /// The health ticks, from the first connection on.
    ticker: Option<tokio::time::Interval>,
}

/// What woke the supervisor.
enum Input {
    Event(Event),
    Rebind(BindingSet, oneshot::Sender<Rebound>),
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
        let pool = crate::dispatch::Pool::new(config.runtime.workers);
        tracing::info!(workers = pool.size(), "plugin calls run on the worker pool");
        Supervisor {
            bindings,
            commands,
            status,
            callbacks,
            shutdown,
            admission: crate::dispatch::Admission::from_config(&config.runtime),
            buffered: crate::dispatch::Budget::new(config.nats.buffer_limit.as_u64()),
            pool,
            slow_consumer: std::sync::Mutex::new(crate::throttle::Throttle::new(
                Duration::from_secs(10),
            )),
            instance_id: format!("{:016x}", rand::random::<u64>()),
            max_payload,
            current,
            config,
        }
    }

    /// Connect, bind, supervise until shutdown (then drain), or until
    /// attempts are used up with `on_exhausted = "exit"`.
    pub async fn run(mut self) -> Result<(), SupervisorError> {
        let mut machine = Machine::new(Settings::from_config(&self.config));
        let start = machine.on(Event::Start);
        let mut run = Run {
            machine,
            conn: None,
            ticker: None,
        };
        if let Some(exit) = self.execute(&mut run, start).await {
            return exit;
        }

        let mut ticker = tokio::time::interval(self.config.health.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        run.ticker = Some(ticker);

        loop {
            let (Some(conn), Some(ticker)) = (run.conn.as_mut(), run.ticker.as_mut()) else {
                unreachable!("every round of attempts ends connected or ends run");
            };
            let input = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => Input::Event(Event::Shutdown),
                event = conn.events.recv() => Input::Event(Event::Client(
                    event.unwrap_or(ClientEvent::GaveUp("event stream ended".into())),
                )),
                Some(Command::Rebind(set, done)) = self.commands.recv() => Input::Rebind(set, done),
                _ = ticker.tick() => Input::Event(Event::Tick),
            };
            let actions = match input {
                Input::Event(event) => run.machine.on(event),
                Input::Rebind(set, done) => {
                    let rebound = match run.conn.as_mut() {
                        Some(conn) => self.rebind(conn, set).await,
                        None => Rebound::default(),
                    };
                    let actions = run.machine.on(Event::Rebound);
                    let exit = self.execute(&mut run, actions).await;
                    let _ = done.send(rebound);
                    if let Some(exit) = exit {
                        return exit;
                    }
                    continue;
                }
            };
            if let Some(exit) = self.execute(&mut run, actions).await {
                return exit;
            }
        }
    }

    /// Do what the machine decided, in order. What the I/O finds out goes
    /// back to the machine at once, and what that calls for comes before the
    /// rest. `Some` when `run` must return.
    async fn execute(
        &self,
        run: &mut Run,
        actions: Vec<Action>,
    ) -> Option<Result<(), SupervisorError>> {
        let mut plan = VecDeque::from(actions);
        while let Some(action) = plan.pop_front() {
            let found = match action {
                Action::Publish(_) | Action::MarkBindings(_) | Action::Log(_) => {
                    self.record(action);
                    None
                }
                Action::Probe => match run.conn.as_mut() {
                    Some(conn) => Some(
                        match conn
                            .probe
                            .round_trip(&conn.client, self.config.health.timeout)
                            .await
                        {
                            Ok(rtt) => Event::ProbeOk(rtt),
                            Err(e) => Event::ProbeFailed(e.to_string()),
                        },
                    ),
                    None => None,
                },
                Action::ProbeAgainNow => {
                    if let Some(ticker) = run.ticker.as_mut() {
                        ticker.reset_immediately();
                    }
                    None
                }
                Action::BindMissing => {
                    if let Some(conn) = run.conn.as_mut() {
                        self.bind_missing(conn).await;
                    }
                    None
                }
                Action::MarkConnected { publish, rtt } => {
                    if let Some(conn) = &run.conn {
                        self.mark_connected(conn, publish, rtt);
                    }
                    None
                }
                Action::VerifyJetStream => {
                    if let Some(conn) = &run.conn {
                        self.verify_jetstream(conn).await;
                    }
                    None
                }
                Action::ForgetStreams => {
                    if let Some(conn) = &run.conn {
                        conn.streams.forget_all();
                    }
                    None
                }
                Action::MarkFailedSubscription(error) => {
                    self.mark_failed_subscription(run.conn.as_mut(), &error)
                        .await;
                    None
                }
                Action::Reconnected {
                    path,
                    total,
                    publish,
                } => {
                    self.reconnected(run, path, total, publish).await;
                    None
                }
                Action::Retire => {
                    if let Some(conn) = run.conn.take() {
                        self.retire(conn).await;
                    }
                    None
                }
                Action::Connect(round) => Some(self.attempts(run, &round).await),
                Action::Switch => Some(Event::Switched(self.switch(run).await)),
                Action::Drain => {
                    if let Some(conn) = run.conn.take() {
                        self.drain(conn).await;
                    }
                    None
                }
                Action::Exit(result) => return Some(result.map_err(SupervisorError::from)),
            };
            if let Some(event) = found {
                for next in run.machine.on(event).into_iter().rev() {
                    plan.push_front(next);
                }
            }
        }
        None
    }

    /// The actions that only write the status or the log.
    fn record(&self, action: Action) {
        match action {
            Action::Publish(update) => self.status.update(|s| update.apply(s)),
            Action::MarkBindings(state) => self.status.set_all_bindings(state),
            Action::Log(Note::SlowConsumer(sid)) => {
                let held = self.slow_consumer.lock().map(|mut t| t.hit());
                if let Ok(Some(events)) = held {
                    tracing::warn!(
                        sid,
                        events,
                        "slow consumer: the client dropped messages (events since the last line; \
                         raise nats.subscription_capacity or add capacity)"
                    );
                }
            }
            Action::Log(note) => log(note),
            other => debug_assert!(false, "not a record: {other:?}"),
        }
    }

    /// A round of attempts with the backoff; how it ended is the next event.
    async fn attempts(&self, run: &mut Run, round: &Round) -> Event {
        self.status.update(|s| {
            round.started().apply(s);
            s.server = None;
            s.server_version = None;
        });
        self.status.set_all_bindings(BindingState::Rebinding);
        let attempts = backoff::retry(
            &round.backoff,
            round.max_attempts,
            |attempt| {
                let update = round.attempt(attempt);
                self.status.update(|s| update.apply(s));
                async {
                    self.connect_and_bind().await.map_err(|e| ConnectFailure {
                        permanent: connection::is_permanent(&e),
                        message: crate::errors::anyhow_chain(&e),
                    })
                }
            },
            |failure| round.gives_up_on(failure),
            |attempt, failure, wait| {
                for action in round.retrying(attempt, failure, wait) {
                    self.record(action);
                }
            },
        );
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Event::Shutdown,
            result = attempts => match result {
                Ok((conn, rtt)) => {
                    run.conn = Some(conn);
                    Event::Established { rtt }
                }
                Err(exhausted) => Event::UsedUp(exhausted),
            },
        }
    }

    /// One attempt: a new client, every binding subscribed, and a probe
    /// round trip proving the server has the subscriptions.
    async fn connect_and_bind(&self) -> anyhow::Result<(Connection, Duration)> {
        self.connect_and_bind_to(&self.config).await
    }

    /// [`connect_and_bind`](Self::connect_and_bind) with `config`'s servers.
    async fn connect_and_bind_to(&self, config: &Config) -> anyhow::Result<(Connection, Duration)> {
        let mut conn = self.new_connection(config).await?;
        self.bind_missing(&mut conn).await;
        self.confirm(conn).await
    }

    /// A new client and what goes with it, nothing bound yet.
    async fn new_connection(&self, config: &Config) -> anyhow::Result<Connection> {
        let (client, events) = connection::connect(config, &self.status).await?;
        let probe = Probe::new(&client).await?;
        // Outputs a stream must confirm are JetStream publishes whose PubAcks
        // are awaited a batch at a time; a full in-flight window fails the
        // publish (its input is nak'd) rather than waiting.
        let js = async_nats::jetstream::context::ContextBuilder::new()
            .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
            .build(client.clone());
        let streams = Arc::new(crate::jetstream::Streams::new(js.clone()));
        let stop = CancellationToken::new();
        // The gateway's own subscriptions come before any binding's, so a
        // connection near its `max_subscriptions` refuses a binding (which
        // says so) rather than these: the stream advisories, and the
        // client's request inbox, which it makes on the first request (one
        // nobody answers). Without the inbox no JetStream request works.
        let advisories = streams.advisories().await;
        let _ = client
            .send_request(
                format!("{}.reserve", client.new_inbox()),
                async_nats::Request::new().timeout(Some(config.health.timeout)),
            )
            .await;
        if let Some(advisories) = advisories {
            // Not one of the dispatch tasks: it ends with the connection.
            tokio::spawn(streams.clone().watch(advisories, stop.clone()));
        }
        Ok(Connection {
            js,
            streams,
            client,
            events,
            probe,
            stop,
            drain: self.shutdown.child_token(),
            tasks: TaskTracker::new(),
            bound: self.bindings.iter().map(|_| None).collect(),
        })
    }

    /// A probe round trip proving the server has the subscriptions; the
    /// connection is retired if it does not come back.
    async fn confirm(&self, mut conn: Connection) -> anyhow::Result<(Connection, Duration)> {
        match conn
            .probe
            .round_trip(&conn.client, self.config.health.timeout)
            .await
        {
            Ok(rtt) => Ok((conn, rtt)),
            Err(e) => {
                self.retire(conn).await;
                Err(anyhow::anyhow!(
                    "server did not confirm the subscriptions: {e}"
                ))
            }
        }
    }

    /// A probe just came back: the machine's fields, this server, and every
    /// binding with a task confirmed.
    fn mark_connected(&self, conn: &Connection, publish: Update, rtt: Duration) {
        let info = conn.client.server_info();
        if info.max_payload > 0 {
            self.max_payload.store(info.max_payload, Ordering::Relaxed);
        }
        self.status.update(|s| {
            publish.apply(s);
            s.server = Some(format!("{}:{}", info.host, info.port));
            if s.server_version.as_deref() != Some(info.version.as_str()) {
                if let Some(warning) = crate::connection::version_warning(&info.version) {
                    tracing::warn!(server = %format!("{}:{}", info.host, info.port), version = %info.version, "{warning}");
                }
                s.server_version = Some(info.version.clone());
            }
            s.last_probe_rtt_us = Some(rtt.as_micros().min(u64::MAX as u128) as u64);
            for (b, bound) in s.bindings.iter_mut().zip(&conn.bound) {
                if bound.is_some() {
                    b.state = BindingState::Bound;
                    b.error = None;
                }
            }
        });
        self.current.send_replace(Some(conn.client.clone()));
    }

    /// A reconnect, from either path: recorded with the time, then the
    /// callbacks in registration order.
    async fn reconnected(&self, run: &mut Run, path: ReconnectPath, total: u64, publish: Update) {
        let Some(client) = run.conn.as_ref().map(|c| c.client.clone()) else {
            return;
        };
        let at = SystemTime::now();
        self.status.update(|s| {
            publish.apply(s);
            s.last_reconnect = Some(at);
        });
        tracing::info!(?path, total_reconnects = total, "reconnected");
        let callbacks = self.callbacks.lock().await.clone();
        for (index, callback) in callbacks.iter().enumerate() {
            let event = ReconnectEvent {
                path,
                total_reconnects: total,
                at,
                client: client.clone(),
            };
            if let Err(e) = callback(event).await {
                let error = crate::errors::anyhow_chain(&e);
                for action in run.machine.on(Event::CallbackFailed { index, error }) {
                    self.record(action);
                }
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

    /// Make before break: a second client on another server, every binding
    /// bound and confirmed there (and seen by the old server across the
    /// cluster), then the old connection drained and closed in the
    /// background while the new one serves. Until the new one is confirmed
    /// the old one keeps working; if the switch fails it keeps working until
    /// the server closes it, and the client's own reconnect takes over.
    async fn switch(&self, run: &mut Run) -> Result<Duration, String> {
        let Some(old) = run.conn.as_ref() else {
            return Err("no connection".into());
        };
        let info = old.client.server_info();
        let servers = connection::other_servers(&self.config.nats.servers, &info);
        if servers.is_empty() {
            return Err(format!(
                "no server but {}:{} is known (list the cluster's servers in nats.servers)",
                info.host, info.port
            ));
        }
        let mut config = (*self.config).clone();
        config.nats.servers = servers;
        let started = std::time::Instant::now();
        // Core subscriptions first: their messages are lost if they are not
        // on the new server before the old one closes. JetStream bindings
        // lose nothing meanwhile (what the old connection does not ack is
        // redelivered), and attaching them can take seconds while the lame
        // duck hands its stream leaderships over.
        let mut new = self
            .new_connection(&config)
            .await
            .map_err(|e| crate::errors::anyhow_chain(&e))?;
        self.bind_missing_where(&mut new, |b| b.jetstream.is_none())
            .await;
        let (mut new, rtt) = self
            .confirm(new)
            .await
            .map_err(|e| crate::errors::anyhow_chain(&e))?;
        if let Err(e) =
            connection::seen_across(&old.client, &new.client, self.config.health.timeout).await
        {
            // The new server has the subscriptions; the others learn of
            // them over the routes a moment later. Go on.
            tracing::debug!(error = %e, "the old server did not see the new subscriptions yet");
        }
        let new_info = new.client.server_info();
        let from = format!("{}:{}", info.host, info.port);
        let to = format!("{}:{}", new_info.host, new_info.port);
        let Some(old) = run.conn.take() else {
            return Err("no connection".into());
        };
        let wait = DRAIN_TIMEOUT + self.longest_handler();
        tokio::spawn(drain_connection(old, wait));
        self.bind_missing(&mut new).await;
        run.conn = Some(new);
        tracing::info!(%from, %to, after = ?started.elapsed(), "moved to another server; the old connection drains");
        Ok(rtt)
    }

    /// Shutdown: drain every subscription, finish in-flight handlers, flush.
    async fn drain(&self, conn: Connection) {
        conn.tasks.close();
        let wait = DRAIN_TIMEOUT + self.longest_handler();
        if tokio::time::timeout(wait, conn.tasks.wait()).await.is_err() {
            tracing::warn!("dispatch tasks did not drain in {wait:?}");
        }
        let mut conn = conn;
        if let Err(e) = confirm_written(&mut conn).await {
            tracing::warn!(error = %e, "the server did not confirm the last outputs");
        }
        conn.stop.cancel();
        self.current.send_replace(None);
        drop(conn);
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

/// Drain a connection that is no longer the current one (its server is in
/// lame duck mode): its workers stop taking messages, finish what they
/// have, the client flushes and closes.
async fn drain_connection(mut conn: Connection, wait: Duration) {
    tokio::time::sleep(HANDOVER).await;
    conn.drain.cancel();
    conn.tasks.close();
    if tokio::time::timeout(wait, conn.tasks.wait()).await.is_err() {
        tracing::warn!("the old connection's dispatch tasks did not drain in {wait:?}");
    }
    if let Err(e) = confirm_written(&mut conn).await {
        tracing::warn!(error = %e, "the old server did not confirm the last outputs");
    }
    conn.stop.cancel();
    drop(conn);
}

/// Before a connection is closed: one probe round trip, so the server has
/// read every output and reply written before it (it handles a connection's
/// protocol in order). `flush` only hands them to the socket, and closing a
/// socket with unread input resets it, discarding what the server had not
/// read yet.
async fn confirm_written(conn: &mut Connection) -> Result<Duration, crate::health::ProbeError> {
    conn.probe
        .round_trip(&conn.client, Duration::from_secs(2))
        .await
}

/// The words for what the machine asks to log.
fn log(note: Note) {
    match note {
        Note::ConnectFailed {
            attempt,
            error,
            wait,
        } => tracing::warn!(attempt, error = %error, retry_in = ?wait, "connect failed"),
        Note::Exhausted(e) => tracing::error!(error = %e, "reconnect attempts exhausted"),
        Note::Reconnecting { reason } => tracing::warn!(%reason, "application-level reconnect"),
        Note::ProbeRecovered { after } => tracing::info!(after, "health probe recovered"),
        Note::ProbeFailed {
            failures,
            threshold,
            error,
        } => tracing::warn!(failures, threshold, error = %error, "health probe failed"),
        Note::Unconfirmed { error } => tracing::warn!(
            error = %error,
            "reconnected, but the server did not confirm the bindings yet"
        ),
        Note::RebindUnconfirmed { error } => tracing::warn!(
            error = %error,
            "new bindings not confirmed yet; the next health tick retries"
        ),
        Note::ConnectionLost => tracing::warn!("connection lost; the client is reconnecting"),
        Note::Refused {
            refusals,
            servers,
            why,
        } => tracing::warn!(refusals, servers, "reconnect refused: {why}"),
        Note::SlowConsumer(_) => {} // rate-limited in `record`
        // A refused subscription is said by the binding it refused, once
        // per cause; its retries would repeat this on every health check.
        Note::ServerError(e) if refused::is_subscription_refusal(&e) => {
            tracing::debug!(error = %e, "server error")
        }
        Note::ServerError(e) => tracing::warn!(error = %e, "server error"),
        Note::LameDuck { switching: true } => {
            tracing::warn!("server entered lame duck mode; moving to another server")
        }
        Note::LameDuck { switching: false } => tracing::warn!("server entered lame duck mode"),
        Note::SwitchFailed { error } => tracing::warn!(
            error = %error,
            "lame duck: could not move to another server; the client reconnects when it is closed"
        ),
        Note::OtherClientEvent(e) => tracing::debug!(event = %e, "client event"),
        Note::CallbackFailed { index, error } => {
            tracing::error!(callback = index, error = %error, "reconnect callback failed")
        }
    }
}
