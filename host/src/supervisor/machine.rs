//! The connection state machine, as a value: everything the supervisor knows
//! about its connection (the state, consecutive failed probes, whether the
//! client is reconnecting on its own, refusals in a row, reconnects so far)
//! and what each event means for it.
//!
//! [`Machine::on`] takes an [`Event`] and returns the [`Action`]s to take, in
//! order. It does no I/O and reads no clock, so every arrow below is a unit
//! test (in `machine/tests.rs`). The supervisor executes the actions and
//! hands what the I/O found out (a probe's answer, how a round of connect
//! attempts ended) back in as the next event.
//!
//! The machine is the one source of the status fields in [`Update`]: the
//! supervisor writes them from its actions and never reads them back. What
//! only the connection knows (the server, the probe's round trip, each
//! binding's state, the time of a reconnect) the supervisor adds as it
//! executes. The one other writer of a connection field is the client's own
//! reconnect, which counts its attempts in `reconnect_attempts`.
//!
//! # States
//!
//! ```text
//!              connect ok + bindings confirmed
//! connecting ───────────────────────────────────▶ connected ◀──────────┐
//!     │ used up or refused                        │  ▲   │ probe fails  │ probe ok
//!     ▼                                            │  │   ▼              │
//!   failed ◀─── used up or refused ───┐ client lost│  │ degraded ────────┘
//!     │ keep-trying                   │ connection │  │   │ failure_threshold reached
//!     │ (the state stays failed)      │            ▼  │   ▼
//!     └── connect ok ──▶ connected    │   disconnected  reconnecting ── ok ──▶ connected
//!                                     │    │ client's own   │
//!                                     │    │ reconnect ok   │
//!                                     │    ▼                │
//!                                     │  connected          │
//!                                     │  (bindings verified)│
//!                                     └─────────────────────┘
//! ```
//!
//! Every arrow, including those the picture leaves out:
//!
//! | from | event | to |
//! |---|---|---|
//! | connecting | connect ok, bindings confirmed | connected |
//! | connecting | attempts used up, or refused | failed |
//! | connected | a probe fails | degraded |
//! | degraded | a probe comes back | connected |
//! | degraded | the `failure_threshold`-th probe in a row fails | reconnecting |
//! | connected, degraded | the client lost the connection | disconnected |
//! | disconnected | the client reconnected, a probe confirms the bindings | connected |
//! | disconnected | the client reconnected, no probe echo yet | degraded |
//! | connected, degraded, disconnected | the client gave up (closed) | reconnecting |
//! | connected, degraded, disconnected | the client's reconnect used up its attempts, or every server refused in turn | failed |
//! | reconnecting | connect ok, bindings confirmed | connected |
//! | reconnecting | attempts used up, or refused | failed |
//! | failed, keep-trying | connect ok, bindings confirmed | connected |
//! | failed, exit | — | `Supervisor::run` returns the error |
//! | connected, degraded | the server enters lame duck mode; a second client on another server is bound and confirmed | connected (on the new client; a `lame-duck` reconnect) |
//! | connected, degraded | lame duck mode, but no other server could be bound | unchanged: the client's own reconnect follows when the server closes the connection |
//! | disconnected | lame duck mode | unchanged |
//! | connected, degraded, disconnected | shutdown | draining, then stopped |
//! | connecting, reconnecting, failed | shutdown | stopped |
//!
//! Two paths lead back to `connected` after a loss, and only one is ever active:
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
//!   goes out at once ([`Action::ProbeAgainNow`]), so a hang is confirmed
//!   within `interval + threshold × timeout` (within `interval × threshold`
//!   whenever `timeout ≤ interval × (threshold - 1) / threshold`, as with the
//!   defaults). The supervisor retires the client (its dispatch tasks stop,
//!   every handle is dropped, which closes it) and builds a new one with the
//!   backoff, up to `max_attempts`, subscribing every binding again.
//!
//! A third path never leaves `connected`: **lame duck mode**. A server about
//! to go away (a rolling restart) tells its clients, then closes them after
//! its grace period. The supervisor does not wait for that: it connects a
//! second client to another server ([`Action::Switch`]), binds every binding
//! there, has a probe confirm it, then drains the old connection in the
//! background (its workers finish what they hold; JetStream messages they
//! prefetched are nak'd for redelivery). For a moment both connections are
//! subscribed: a queue group splits messages over them, a plain
//! subscription may see a message on both.
//!
//! On every reconnect, from any path: the failure count resets, the time is
//! recorded, every binding is re-bound or verified, then the reconnect
//! callbacks run in registration order. A binding that fails to subscribe is
//! marked `failed` with its error and retried on every health tick; it does not
//! fail the reconnect. The first connection is not a reconnect, even when it
//! took `keep-trying` to make. When attempts are used up the state becomes
//! `failed` (readiness false), and `reconnect.on_exhausted` decides: `exit`
//! ends `Supervisor::run` with an error, `keep-trying` stays `failed` and
//! retries every `max_backoff` for ever.
//!
//! **Refusals are not outages.** A connect the server refuses for its
//! credentials, or whose TLS cannot be set up or verified, fails the same way
//! on every attempt: it ends the round at once (state `failed`, the one-line
//! cause in `last_error`) instead of using up `max_attempts`. While running,
//! the client's own reconnect is watched the same way: as many authorization
//! refusals in a row as there are configured servers (the client tries them in
//! turn) mean the credentials were revoked. Then `on_exhausted` decides as
//! above; `keep-trying` keeps retrying, slowly, until the credentials work
//! again.

use std::time::Duration;

use super::ReconnectPath;
use crate::backoff::{Backoff, Exhausted};
use crate::config::{Config, OnExhausted};
use crate::connection::ClientEvent;
use crate::status::{BindingState, ConnectionState};

mod actions;
#[cfg(test)]
mod tests;

pub use actions::{Action, Note, Round, Update};

/// What the machine needs of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Consecutive failed health probes that retire the client.
    pub failure_threshold: u32,
    /// Attempts per round; 0 means never give up.
    pub max_attempts: u32,
    pub on_exhausted: OnExhausted,
    /// The delays between attempts.
    pub backoff: Backoff,
    /// Configured servers, at least 1: the client tries them in turn.
    pub servers: usize,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        let r = &config.reconnect;
        Settings {
            failure_threshold: r.failure_threshold,
            max_attempts: r.max_attempts,
            on_exhausted: r.on_exhausted,
            backoff: Backoff::from_config(r),
            servers: config.nats.servers.len().max(1),
        }
    }

    /// `keep-trying`'s pace: every `max_backoff`, jitter as configured.
    fn slow(&self) -> Backoff {
        Backoff {
            initial: self.backoff.max,
            max: self.backoff.max,
            factor: 1.0,
            jitter: self.backoff.jitter,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The supervisor starts: make the first connection.
    Start,
    /// A round of attempts ([`Action::Connect`]) made a connection, bound
    /// what it could, and a probe confirmed it in `rtt`.
    Established { rtt: Duration },
    /// A round gave up: attempts used up, or refused in a way retrying cannot mend.
    UsedUp(Exhausted),
    /// `health.interval` elapsed.
    Tick,
    /// The probe asked for ([`Action::Probe`]) came back after this long.
    ProbeOk(Duration),
    /// It did not; the error in one line.
    ProbeFailed(String),
    /// The client reported something.
    Client(ClientEvent),
    /// A config reload bound a new binding set on this connection.
    Rebound,
    /// The switch away from a lame duck server ([`Action::Switch`]) is
    /// done: the new connection confirmed in `rtt`, or why not.
    Switched(Result<Duration, String>),
    /// Reconnect callback `index` (in registration order) failed.
    CallbackFailed { index: usize, error: String },
    /// Shut down.
    Shutdown,
}

/// What the probe in flight is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// A health tick.
    Health,
    /// The client reconnected on its own: does the server have the bindings?
    ClientReconnect,
    /// A config reload bound a new set.
    Rebind,
}

/// The supervisor's connection, as a value.
#[derive(Debug, Clone)]
pub struct Machine {
    settings: Settings,
    state: ConnectionState,
    /// Consecutive failed probes on this connection.
    failures: u32,
    /// The client is reconnecting on its own: it owns recovery, probes pause.
    client_reconnecting: bool,
    /// The client reports its first connection as an event too: not a reconnect.
    initial_connected_seen: bool,
    /// Reconnect attempts refused (credentials, TLS) since the last connect.
    refusals: usize,
    total_reconnects: u64,
    /// A connection was made before: the next one is a reconnect.
    connected_once: bool,
    slow_consumer_events: u64,
    probing: Option<Check>,
    /// Moves away from lame duck servers so far.
    lame_duck_switches: u64,
}

impl Machine {
    pub fn new(settings: Settings) -> Machine {
        Machine {
            settings,
            state: ConnectionState::Connecting,
            failures: 0,
            client_reconnecting: false,
            initial_connected_seen: false,
            refusals: 0,
            total_reconnects: 0,
            connected_once: false,
            slow_consumer_events: 0,
            probing: None,
            lame_duck_switches: 0,
        }
    }

    #[cfg(test)]
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Consecutive failed probes.
    #[cfg(test)]
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Completed reconnects (the first connection is not one).
    #[cfg(test)]
    pub fn total_reconnects(&self) -> u64 {
        self.total_reconnects
    }

    /// What `event` means: the actions to take, in order.
    pub fn on(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Start => {
                let round = self.round(ConnectionState::Connecting);
                vec![Action::Connect(round)]
            }
            Event::Established { rtt } => self.established(rtt),
            Event::UsedUp(exhausted) => self.used_up(exhausted),
            Event::Tick => {
                // The client owns recovery; the failure count is 0 since
                // the disconnect, so there is nothing to confirm either.
                if self.client_reconnecting {
                    return Vec::new();
                }
                self.probing = Some(Check::Health);
                vec![Action::Probe]
            }
            Event::ProbeOk(rtt) => self.probe_ok(rtt),
            Event::ProbeFailed(error) => self.probe_failed(error),
            Event::Client(event) => self.client(event),
            Event::Rebound => {
                self.probing = Some(Check::Rebind);
                vec![Action::Probe]
            }
            Event::Switched(result) => self.switched(result),
            Event::CallbackFailed { index, error } => vec![
                Action::Log(Note::CallbackFailed {
                    index,
                    error: error.clone(),
                }),
                Action::Publish(Update::error(format!(
                    "reconnect callback {index} failed: {error}"
                ))),
            ],
            Event::Shutdown => self.shutdown(),
        }
    }

    /// A new round with the configured backoff and attempts.
    fn round(&mut self, state: ConnectionState) -> Round {
        self.state = state;
        Round {
            state,
            backoff: self.settings.backoff.clone(),
            max_attempts: self.settings.max_attempts,
            stop_on_refusal: true,
        }
    }

    /// The status of a confirmed connection.
    fn confirmed(&mut self) -> Update {
        self.state = ConnectionState::Connected;
        self.failures = 0;
        Update {
            state: Some(ConnectionState::Connected),
            consecutive_failures: Some(0),
            reconnect_attempts: Some(0),
            ..Update::default()
        }
    }

    fn reconnected(&mut self, path: ReconnectPath) -> Action {
        self.total_reconnects += 1;
        self.failures = 0;
        Action::Reconnected {
            path,
            total: self.total_reconnects,
            publish: Update {
                total_reconnects: Some(self.total_reconnects),
                consecutive_failures: Some(0),
                reconnect_attempts: Some(0),
                ..Update::default()
            },
        }
    }

    fn established(&mut self, rtt: Duration) -> Vec<Action> {
        // A new client: its events start afresh.
        self.initial_connected_seen = false;
        self.client_reconnecting = false;
        self.refusals = 0;
        self.probing = None;
        let mut actions = vec![Action::MarkConnected {
            publish: self.confirmed(),
            rtt,
        }];
        if self.connected_once {
            actions.push(self.reconnected(ReconnectPath::Supervisor));
        }
        self.connected_once = true;
        actions
    }

    /// The switch away from a lame duck server is done.
    fn switched(&mut self, result: Result<Duration, String>) -> Vec<Action> {
        match result {
            Ok(rtt) => {
                // A new client: its events start afresh.
                self.initial_connected_seen = false;
                self.refusals = 0;
                self.probing = None;
                self.lame_duck_switches += 1;
                let mut publish = self.confirmed();
                publish.lame_duck_switches = Some(self.lame_duck_switches);
                vec![
                    Action::MarkConnected { publish, rtt },
                    self.reconnected(ReconnectPath::LameDuck),
                ]
            }
            Err(error) => vec![
                Action::Log(Note::SwitchFailed {
                    error: error.clone(),
                }),
                Action::Publish(Update::error(format!(
                    "lame duck: could not move to another server: {error}"
                ))),
            ],
        }
    }

    /// Attempts are used up: `failed`, then as `on_exhausted` says.
    fn used_up(&mut self, exhausted: Exhausted) -> Vec<Action> {
        self.state = ConnectionState::Failed;
        let mut actions = vec![
            Action::Log(Note::Exhausted(exhausted.clone())),
            Action::Publish(Update {
                state: Some(ConnectionState::Failed),
                last_error: Some(exhausted.to_string()),
                ..Update::default()
            }),
            Action::MarkBindings(BindingState::Rebinding),
        ];
        actions.push(match self.settings.on_exhausted {
            OnExhausted::Exit => Action::Exit(Err(exhausted)),
            OnExhausted::KeepTrying => Action::Connect(Round {
                state: ConnectionState::Failed,
                backoff: self.settings.slow(),
                max_attempts: 0,
                stop_on_refusal: false,
            }),
        });
        actions
    }

    /// Retire the client and build a new one: the application-level reconnect.
    fn rebuild(&mut self, reason: String) -> Vec<Action> {
        vec![
            Action::Retire,
            Action::Log(Note::Reconnecting {
                reason: reason.clone(),
            }),
            Action::Publish(Update::error(reason)),
            Action::Connect(self.round(ConnectionState::Reconnecting)),
        ]
    }

    fn probe_ok(&mut self, rtt: Duration) -> Vec<Action> {
        match self.probing.take() {
            Some(Check::Health) => {
                let mut actions = Vec::new();
                if self.failures > 0 {
                    actions.push(Action::Log(Note::ProbeRecovered {
                        after: self.failures,
                    }));
                }
                // Bindings that failed to subscribe are retried on every tick.
                actions.push(Action::BindMissing);
                actions.push(Action::MarkConnected {
                    publish: self.confirmed(),
                    rtt,
                });
                actions
            }
            Some(Check::ClientReconnect) => vec![
                Action::MarkConnected {
                    publish: self.confirmed(),
                    rtt,
                },
                Action::VerifyJetStream,
                Action::BindMissing,
                self.reconnected(ReconnectPath::Client),
            ],
            Some(Check::Rebind) => vec![Action::MarkConnected {
                publish: self.confirmed(),
                rtt,
            }],
            None => Vec::new(),
        }
    }

    fn probe_failed(&mut self, error: String) -> Vec<Action> {
        match self.probing.take() {
            Some(Check::Health) => {
                self.failures = self.failures.saturating_add(1);
                self.state = ConnectionState::Degraded;
                let (failures, threshold) = (self.failures, self.settings.failure_threshold);
                let mut actions = vec![
                    Action::Publish(Update {
                        state: Some(ConnectionState::Degraded),
                        consecutive_failures: Some(failures),
                        last_error: Some(format!("health probe: {error}")),
                        ..Update::default()
                    }),
                    Action::Log(Note::ProbeFailed {
                        failures,
                        threshold,
                        error: error.clone(),
                    }),
                    // Confirm at once rather than a whole interval later: a
                    // hung server is caught within interval + threshold × timeout.
                    Action::ProbeAgainNow,
                ];
                if failures >= threshold {
                    actions.extend(self.rebuild(format!(
                        "{failures} consecutive health probes failed (last: {error})"
                    )));
                }
                actions
            }
            Some(Check::ClientReconnect) => {
                // Counted, but confirmed by the ticks at their usual pace.
                self.failures = self.failures.saturating_add(1);
                self.state = ConnectionState::Degraded;
                vec![
                    Action::Log(Note::Unconfirmed {
                        error: error.clone(),
                    }),
                    Action::Publish(Update {
                        state: Some(ConnectionState::Degraded),
                        consecutive_failures: Some(self.failures),
                        last_error: Some(format!("after reconnect: {error}")),
                        ..Update::default()
                    }),
                ]
            }
            Some(Check::Rebind) => vec![Action::Log(Note::RebindUnconfirmed { error })],
            None => Vec::new(),
        }
    }

    fn client(&mut self, event: ClientEvent) -> Vec<Action> {
        match event {
            ClientEvent::Connected if !self.initial_connected_seen => {
                self.initial_connected_seen = true;
                Vec::new()
            }
            ClientEvent::Connected => {
                self.client_reconnecting = false;
                self.refusals = 0;
                // The client re-sent every SUB; one echo proves the server has them.
                self.probing = Some(Check::ClientReconnect);
                vec![Action::ForgetStreams, Action::Probe]
            }
            ClientEvent::Disconnected => {
                self.client_reconnecting = true;
                self.state = ConnectionState::Disconnected;
                self.failures = 0;
                vec![
                    Action::Log(Note::ConnectionLost),
                    Action::Publish(Update {
                        state: Some(ConnectionState::Disconnected),
                        consecutive_failures: Some(0),
                        last_error: Some("connection lost".into()),
                        ..Update::default()
                    }),
                    Action::MarkBindings(BindingState::Rebinding),
                ]
            }
            ClientEvent::GaveUp(reason) => self.rebuild(reason),
            ClientEvent::Refused(why) => {
                // The client tries the servers in turn, least failed first:
                // as many refusals in a row as servers means all refused.
                self.refusals += 1;
                let servers = self.settings.servers;
                let mut actions = vec![
                    Action::Log(Note::Refused {
                        refusals: self.refusals,
                        servers,
                        why: why.clone(),
                    }),
                    Action::Publish(Update::error(why.clone())),
                ];
                if self.refusals >= servers {
                    actions.push(Action::Retire);
                    actions.extend(self.used_up(Exhausted {
                        attempts: self.settings.max_attempts,
                        last_error: format!("{why} (on reconnect, by every server)"),
                        permanent: true,
                    }));
                }
                actions
            }
            ClientEvent::Exhausted => {
                let mut actions = vec![Action::Retire];
                actions.extend(self.used_up(Exhausted {
                    attempts: self.settings.max_attempts,
                    last_error: "the client's own reconnect failed every attempt".into(),
                    permanent: false,
                }));
                actions
            }
            ClientEvent::SlowConsumer(sid) => {
                self.slow_consumer_events += 1;
                vec![
                    Action::Log(Note::SlowConsumer(sid)),
                    Action::Publish(Update {
                        slow_consumer_events: Some(self.slow_consumer_events),
                        ..Update::default()
                    }),
                ]
            }
            ClientEvent::ServerError(e) => vec![
                Action::Log(Note::ServerError(e.clone())),
                Action::MarkFailedSubscription(e.clone()),
                Action::Publish(Update::error(format!("server: {e}"))),
            ],
            ClientEvent::LameDuck => {
                // Only from a connection that works: while disconnected the
                // client is on its way elsewhere already.
                let switching = matches!(
                    self.state,
                    ConnectionState::Connected | ConnectionState::Degraded
                ) && !self.client_reconnecting;
                let mut actions = vec![Action::Log(Note::LameDuck { switching })];
                if switching {
                    actions.push(Action::Switch);
                }
                actions
            }
            ClientEvent::Other(e) => vec![Action::Log(Note::OtherClientEvent(e))],
        }
    }

    fn shutdown(&mut self) -> Vec<Action> {
        use ConnectionState::*;
        let stop = stopped();
        let actions = match self.state {
            // A connection to drain.
            Connected | Degraded | Disconnected => {
                let mut actions = vec![
                    Action::Publish(Update {
                        state: Some(Draining),
                        ..Update::default()
                    }),
                    Action::Drain,
                ];
                actions.extend(stop);
                actions
            }
            // Attempts in progress: nothing to drain.
            Connecting | Reconnecting | Failed => stop.into(),
            Draining | Stopped => return Vec::new(),
        };
        self.state = Stopped;
        actions
    }
}

/// What ending without a connection to drain takes: the state `stopped`,
/// every binding stopped, `run` returns.
pub(super) fn stopped() -> [Action; 3] {
    [
        Action::Publish(Update {
            state: Some(ConnectionState::Stopped),
            ..Update::default()
        }),
        Action::MarkBindings(BindingState::Stopped),
        Action::Exit(Ok(())),
    ]
}
