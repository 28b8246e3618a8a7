//! What the machine asks of the supervisor: the [`Action`]s, the status
//! fields it publishes ([`Update`]), what to log ([`Note`]), and a round of
//! connect attempts ([`Round`]), which also says what each attempt means.

use std::time::Duration;

use crate::backoff::{Backoff, Exhausted};
use crate::connection::ConnectFailure;
use crate::status::{BindingState, ConnectionState, Status};
use crate::supervisor::ReconnectPath;

/// What to do, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write these status fields.
    Publish(Update),
    /// Set every binding's state (a failed binding stays failed, except on stop).
    MarkBindings(BindingState),
    /// Log this.
    Log(Note),
    /// Send a probe round trip; its answer comes back as
    /// [`ProbeOk`](super::Event::ProbeOk) or
    /// [`ProbeFailed`](super::Event::ProbeFailed).
    Probe,
    /// The next health tick goes out at once rather than an interval later.
    ProbeAgainNow,
    /// Subscribe every binding that has no workers on this connection.
    BindMissing,
    /// A probe confirmed the connection: publish `publish`, the server, the
    /// round trip, and every binding with workers as bound; hand the client
    /// to the embedding API.
    MarkConnected { publish: Update, rtt: Duration },
    /// After the client's own reconnect: declare or check the JetStream
    /// streams and consumers again (the server may have lost them).
    VerifyJetStream,
    /// Which streams capture which subjects may have changed meanwhile.
    ForgetStreams,
    /// A server error may name a subscription it refused: mark that binding.
    MarkFailedSubscription(String),
    /// A reconnect completed: publish `publish` with the time, then run the
    /// reconnect callbacks in order.
    Reconnected {
        path: ReconnectPath,
        total: u64,
        publish: Update,
    },
    /// Stop the connection's dispatch tasks and drop the client.
    Retire,
    /// The server is in lame duck mode: connect a second client to another
    /// server, bind everything there and have it confirmed, then drain and
    /// retire the old one (make before break). Ends in
    /// [`Switched`](super::Event::Switched).
    Switch,
    /// A round of connect attempts. It ends in
    /// [`Established`](super::Event::Established),
    /// [`UsedUp`](super::Event::UsedUp), or
    /// [`Shutdown`](super::Event::Shutdown) if shutdown came first.
    Connect(Round),
    /// Drain the subscriptions, finish in-flight handlers, flush.
    Drain,
    /// `Supervisor::run` returns: `Ok` after shutdown, the error when attempts
    /// are used up and `on_exhausted` says exit.
    Exit(Result<(), Exhausted>),
}

/// The connection fields of the status the machine is the source of; `None`
/// leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub state: Option<ConnectionState>,
    pub consecutive_failures: Option<u32>,
    pub reconnect_attempts: Option<u32>,
    pub total_reconnects: Option<u64>,
    pub last_error: Option<String>,
    pub slow_consumer_events: Option<u64>,
    pub lame_duck_switches: Option<u64>,
}

impl Update {
    pub fn apply(self, s: &mut Status) {
        if let Some(state) = self.state {
            s.state = state;
        }
        if let Some(n) = self.consecutive_failures {
            s.consecutive_failures = n;
        }
        if let Some(n) = self.reconnect_attempts {
            s.reconnect_attempts = n;
        }
        if let Some(n) = self.total_reconnects {
            s.total_reconnects = n;
        }
        if let Some(e) = self.last_error {
            s.last_error = Some(e);
        }
        if let Some(n) = self.slow_consumer_events {
            s.slow_consumer_events = n;
        }
        if let Some(n) = self.lame_duck_switches {
            s.lame_duck_switches = n;
        }
    }

    pub(super) fn error(e: impl Into<String>) -> Update {
        Update {
            last_error: Some(e.into()),
            ..Update::default()
        }
    }
}

/// What to log; the supervisor words it.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    ConnectFailed {
        attempt: u32,
        error: String,
        wait: Duration,
    },
    Exhausted(Exhausted),
    Reconnecting {
        reason: String,
    },
    ProbeRecovered {
        after: u32,
    },
    ProbeFailed {
        failures: u32,
        threshold: u32,
        error: String,
    },
    /// The client reconnected, but the probe did not come back.
    Unconfirmed {
        error: String,
    },
    /// A config reload's bindings, not confirmed yet.
    RebindUnconfirmed {
        error: String,
    },
    ConnectionLost,
    Refused {
        refusals: usize,
        servers: usize,
        why: String,
    },
    SlowConsumer(u64),
    ServerError(String),
    /// The server entered lame duck mode; `switching` when the machine
    /// moves to another server now.
    LameDuck {
        switching: bool,
    },
    /// The move to another server failed: the client's own reconnect takes
    /// over when the server closes the connection.
    SwitchFailed {
        error: String,
    },
    OtherClientEvent(String),
    CallbackFailed {
        index: usize,
        error: String,
    },
}

/// One round of connect attempts as the machine decided it. The supervisor
/// runs it with `backoff::retry` and asks it what each attempt means.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// The state while the round lasts.
    pub state: ConnectionState,
    pub backoff: Backoff,
    /// 0: until an attempt succeeds.
    pub max_attempts: u32,
    /// A refusal (credentials, TLS) ends the round at once. Not so when
    /// keeping on trying: the operator asked to wait for them to be fixed.
    pub stop_on_refusal: bool,
}

impl Round {
    /// What the status shows as the round begins (the supervisor also
    /// forgets the server and marks every binding rebinding).
    pub fn started(&self) -> Update {
        Update {
            state: Some(self.state),
            reconnect_attempts: Some(0),
            ..Update::default()
        }
    }

    /// Attempt `n` (1-based) begins.
    pub fn attempt(&self, n: u32) -> Update {
        Update {
            reconnect_attempts: Some(n),
            ..Update::default()
        }
    }

    /// Whether this failure ends the round now, whatever attempts are left.
    pub fn gives_up_on(&self, failure: &ConnectFailure) -> bool {
        self.stop_on_refusal && failure.permanent
    }

    /// Attempt `attempt` failed; the next follows after `wait`.
    pub fn retrying(&self, attempt: u32, failure: &ConnectFailure, wait: Duration) -> Vec<Action> {
        let error = failure.to_string();
        vec![
            Action::Log(Note::ConnectFailed {
                attempt,
                error: error.clone(),
                wait,
            }),
            Action::Publish(Update::error(error)),
        ]
    }
}
