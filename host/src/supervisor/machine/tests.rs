//! One test per arrow of the state table in the machine's docs, then the
//! failure counting, refusals, and the timing of attempts and probes under
//! tokio's paused clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::backoff;
use crate::connection::ConnectFailure;
use crate::supervisor::SupervisorError;
use ConnectionState::*;

const RTT: Duration = Duration::from_millis(3);

fn settings() -> Settings {
    Settings {
        failure_threshold: 3,
        max_attempts: 5,
        on_exhausted: OnExhausted::Exit,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            factor: 2.0,
            jitter: 0.0,
        },
        servers: 1,
    }
}

fn keep_trying() -> Settings {
    Settings {
        on_exhausted: OnExhausted::KeepTrying,
        ..settings()
    }
}

fn confirmed() -> Update {
    Update {
        state: Some(Connected),
        consecutive_failures: Some(0),
        reconnect_attempts: Some(0),
        ..Update::default()
    }
}

fn mark_connected() -> Action {
    Action::MarkConnected {
        publish: confirmed(),
        rtt: RTT,
    }
}

fn reconnected(path: ReconnectPath, total: u64) -> Action {
    Action::Reconnected {
        path,
        total,
        publish: Update {
            total_reconnects: Some(total),
            consecutive_failures: Some(0),
            reconnect_attempts: Some(0),
            ..Update::default()
        },
    }
}

fn round(state: ConnectionState) -> Round {
    Round {
        state,
        backoff: settings().backoff,
        max_attempts: 5,
        stop_on_refusal: true,
    }
}

fn slow_round() -> Round {
    Round {
        state: Failed,
        backoff: Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(2),
            factor: 1.0,
            jitter: 0.0,
        },
        max_attempts: 0,
        stop_on_refusal: false,
    }
}

fn used_up(e: &Exhausted) -> [Action; 3] {
    [
        Action::Log(Note::Exhausted(e.clone())),
        Action::Publish(Update {
            state: Some(Failed),
            last_error: Some(e.to_string()),
            ..Update::default()
        }),
        Action::MarkBindings(BindingState::Rebinding),
    ]
}

fn transient(attempts: u32) -> Exhausted {
    Exhausted {
        attempts,
        last_error: "connection refused".into(),
        permanent: false,
    }
}

fn refusal() -> ConnectFailure {
    ConnectFailure {
        permanent: true,
        message: "authorization violation: the server refused nats.auth.token".into(),
    }
}

/// Connected for the first time, with the client's own first `Connected`
/// event seen (it is not a reconnect).
fn connected(settings: Settings) -> Machine {
    let mut m = Machine::new(settings);
    m.on(Event::Start);
    m.on(Event::Established { rtt: RTT });
    assert!(m.on(Event::Client(ClientEvent::Connected)).is_empty());
    m
}

/// A failed health probe, from a tick.
fn fail_tick(m: &mut Machine) -> Vec<Action> {
    assert_eq!(m.on(Event::Tick), [Action::Probe]);
    m.on(Event::ProbeFailed(
        "no echo from the server within 1s".into(),
    ))
}

fn ok_tick(m: &mut Machine) -> Vec<Action> {
    assert_eq!(m.on(Event::Tick), [Action::Probe]);
    m.on(Event::ProbeOk(RTT))
}

fn reconnecting(settings: Settings) -> Machine {
    let mut m = connected(settings);
    m.on(Event::Client(ClientEvent::GaveUp(
        "connection closed".into(),
    )));
    assert_eq!(m.state(), Reconnecting);
    m
}

fn has_reconnect(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Connect(_)))
}

// ---- the arrows ----

#[test]
fn connecting_to_connected() {
    let mut m = Machine::new(settings());
    assert_eq!(m.state(), Connecting);
    assert_eq!(m.on(Event::Start), [Action::Connect(round(Connecting))]);
    assert_eq!(m.state(), Connecting);
    // The first connection is not a reconnect.
    assert_eq!(m.on(Event::Established { rtt: RTT }), [mark_connected()]);
    assert_eq!(m.state(), Connected);
    assert_eq!(m.total_reconnects(), 0);
    // Nor is the client's report of it.
    assert!(m.on(Event::Client(ClientEvent::Connected)).is_empty());
    assert_eq!(m.total_reconnects(), 0);
}

#[test]
fn connecting_to_failed_exits() {
    let mut m = Machine::new(settings());
    m.on(Event::Start);
    let e = transient(5);
    let mut expect = used_up(&e).to_vec();
    expect.push(Action::Exit(Err(e.clone())));
    assert_eq!(m.on(Event::UsedUp(e)), expect);
    assert_eq!(m.state(), Failed);
}

#[test]
fn connecting_to_failed_keeps_trying_slowly() {
    let mut m = Machine::new(keep_trying());
    m.on(Event::Start);
    let e = transient(5);
    let mut expect = used_up(&e).to_vec();
    expect.push(Action::Connect(slow_round()));
    assert_eq!(m.on(Event::UsedUp(e)), expect);
    assert_eq!(m.state(), Failed, "failed while keeping on trying");
}

#[test]
fn failed_to_connected_with_keep_trying_at_start_is_no_reconnect() {
    let mut m = Machine::new(keep_trying());
    m.on(Event::Start);
    m.on(Event::UsedUp(transient(5)));
    assert_eq!(m.on(Event::Established { rtt: RTT }), [mark_connected()]);
    assert_eq!(m.state(), Connected);
    assert_eq!(m.total_reconnects(), 0);
}

#[test]
fn failed_to_connected_with_keep_trying_is_a_supervisor_reconnect() {
    let mut m = reconnecting(keep_trying());
    let actions = m.on(Event::UsedUp(transient(5)));
    assert_eq!(actions.last(), Some(&Action::Connect(slow_round())));
    assert_eq!(m.state(), Failed);
    assert_eq!(
        m.on(Event::Established { rtt: RTT }),
        [mark_connected(), reconnected(ReconnectPath::Supervisor, 1)]
    );
    assert_eq!(m.state(), Connected);
}

#[test]
fn connected_to_degraded() {
    let mut m = connected(settings());
    let actions = fail_tick(&mut m);
    assert_eq!(
        actions,
        [
            Action::Publish(Update {
                state: Some(Degraded),
                consecutive_failures: Some(1),
                last_error: Some("health probe: no echo from the server within 1s".into()),
                ..Update::default()
            }),
            Action::Log(Note::ProbeFailed {
                failures: 1,
                threshold: 3,
                error: "no echo from the server within 1s".into(),
            }),
            Action::ProbeAgainNow,
        ]
    );
    assert_eq!(m.state(), Degraded);
    assert_eq!(m.consecutive_failures(), 1);
}

#[test]
fn degraded_to_connected_when_a_probe_comes_back() {
    let mut m = connected(settings());
    fail_tick(&mut m);
    fail_tick(&mut m);
    assert_eq!(
        ok_tick(&mut m),
        [
            Action::Log(Note::ProbeRecovered { after: 2 }),
            Action::BindMissing,
            mark_connected(),
        ]
    );
    assert_eq!(m.state(), Connected);
    assert_eq!(m.consecutive_failures(), 0);
}

#[test]
fn a_healthy_tick_retries_missing_bindings_and_confirms() {
    let mut m = connected(settings());
    assert_eq!(ok_tick(&mut m), [Action::BindMissing, mark_connected()]);
}

#[test]
fn degraded_to_reconnecting_at_the_threshold() {
    let mut m = connected(settings());
    assert!(!has_reconnect(&fail_tick(&mut m)));
    assert!(!has_reconnect(&fail_tick(&mut m)));
    let actions = fail_tick(&mut m);
    let reason = "3 consecutive health probes failed (last: no echo from the server within 1s)";
    assert_eq!(
        actions[2..],
        [
            Action::ProbeAgainNow,
            Action::Retire,
            Action::Log(Note::Reconnecting {
                reason: reason.into()
            }),
            Action::Publish(Update::error(reason)),
            Action::Connect(round(Reconnecting)),
        ]
    );
    assert_eq!(m.state(), Reconnecting);
}

#[test]
fn reconnecting_to_connected() {
    let mut m = reconnecting(settings());
    assert_eq!(
        m.on(Event::Established { rtt: RTT }),
        [mark_connected(), reconnected(ReconnectPath::Supervisor, 1)]
    );
    assert_eq!(m.state(), Connected);
    assert_eq!(m.consecutive_failures(), 0);
    // A new client: its first Connected event is not a reconnect either.
    assert!(m.on(Event::Client(ClientEvent::Connected)).is_empty());
    assert_eq!(m.total_reconnects(), 1);
}

#[test]
fn reconnecting_to_failed_when_attempts_are_used_up() {
    let mut m = reconnecting(settings());
    let e = transient(5);
    let actions = m.on(Event::UsedUp(e.clone()));
    assert_eq!(actions[..3], used_up(&e));
    assert_eq!(actions[3], Action::Exit(Err(e)));
    assert_eq!(m.state(), Failed);
}

#[test]
fn connected_to_disconnected_when_the_client_lost_the_connection() {
    let mut m = connected(settings());
    fail_tick(&mut m);
    assert_eq!(
        m.on(Event::Client(ClientEvent::Disconnected)),
        [
            Action::Log(Note::ConnectionLost),
            Action::Publish(Update {
                state: Some(Disconnected),
                consecutive_failures: Some(0),
                last_error: Some("connection lost".into()),
                ..Update::default()
            }),
            Action::MarkBindings(BindingState::Rebinding),
        ]
    );
    assert_eq!(m.state(), Disconnected);
    assert_eq!(
        m.consecutive_failures(),
        0,
        "reset: the client owns recovery"
    );
    // Probes pause while the client reconnects.
    assert!(m.on(Event::Tick).is_empty());
    assert!(m.on(Event::Tick).is_empty());
}

#[test]
fn disconnected_to_connected_when_the_client_reconnected_and_bindings_verified() {
    let mut m = connected(settings());
    m.on(Event::Client(ClientEvent::Disconnected));
    assert_eq!(
        m.on(Event::Client(ClientEvent::Connected)),
        [Action::ForgetStreams, Action::Probe]
    );
    assert_eq!(
        m.on(Event::ProbeOk(RTT)),
        [
            mark_connected(),
            Action::VerifyJetStream,
            Action::BindMissing,
            reconnected(ReconnectPath::Client, 1),
        ]
    );
    assert_eq!(m.state(), Connected);
    // Probes resume.
    assert_eq!(m.on(Event::Tick), [Action::Probe]);
}

#[test]
fn disconnected_to_degraded_when_the_bindings_are_not_confirmed() {
    let mut m = connected(settings());
    m.on(Event::Client(ClientEvent::Disconnected));
    m.on(Event::Client(ClientEvent::Connected));
    assert_eq!(
        m.on(Event::ProbeFailed(
            "no echo from the server within 1s".into()
        )),
        [
            Action::Log(Note::Unconfirmed {
                error: "no echo from the server within 1s".into()
            }),
            Action::Publish(Update {
                state: Some(Degraded),
                consecutive_failures: Some(1),
                last_error: Some("after reconnect: no echo from the server within 1s".into()),
                ..Update::default()
            }),
        ],
        "counted, but the next probe waits for its tick"
    );
    assert_eq!(m.state(), Degraded);
    assert_eq!(m.total_reconnects(), 0, "not a reconnect until confirmed");
    // It counts towards the threshold.
    assert!(!has_reconnect(&fail_tick(&mut m)));
    assert!(has_reconnect(&fail_tick(&mut m)));
}

#[test]
fn the_client_giving_up_is_an_application_level_reconnect() {
    for from in ["connected", "degraded", "disconnected"] {
        let mut m = connected(settings());
        match from {
            "degraded" => {
                fail_tick(&mut m);
            }
            "disconnected" => {
                m.on(Event::Client(ClientEvent::Disconnected));
            }
            _ => {}
        }
        assert_eq!(
            m.on(Event::Client(ClientEvent::GaveUp(
                "connection closed".into()
            ))),
            [
                Action::Retire,
                Action::Log(Note::Reconnecting {
                    reason: "connection closed".into()
                }),
                Action::Publish(Update::error("connection closed")),
                Action::Connect(round(Reconnecting)),
            ],
            "from {from}"
        );
        assert_eq!(m.state(), Reconnecting);
    }
}

#[test]
fn the_clients_own_reconnect_using_up_its_attempts_fails() {
    let mut m = connected(settings());
    m.on(Event::Client(ClientEvent::Disconnected));
    let e = Exhausted {
        attempts: 5,
        last_error: "the client's own reconnect failed every attempt".into(),
        permanent: false,
    };
    let actions = m.on(Event::Client(ClientEvent::Exhausted));
    assert_eq!(actions[0], Action::Retire);
    assert_eq!(actions[1..4], used_up(&e));
    assert_eq!(actions[4..], [Action::Exit(Err(e))]);
    assert_eq!(m.state(), Failed);
}

// ---- refusals ----

#[test]
fn a_refusal_ends_the_first_connect_at_once() {
    let mut m = Machine::new(settings());
    let [Action::Connect(round)] = &m.on(Event::Start)[..] else {
        panic!("a round");
    };
    assert!(round.gives_up_on(&refusal()));
    assert!(!round.gives_up_on(&ConnectFailure {
        permanent: false,
        message: "connection refused".into()
    }));
    let e = Exhausted {
        attempts: 1,
        last_error: refusal().message,
        permanent: true,
    };
    let actions = m.on(Event::UsedUp(e.clone()));
    assert_eq!(actions.last(), Some(&Action::Exit(Err(e.clone()))));
    assert!(matches!(
        SupervisorError::from(e),
        SupervisorError::Refused(_)
    ));
    assert_eq!(m.state(), Failed);
}

#[test]
fn keeping_on_trying_retries_refusals_too() {
    let mut m = Machine::new(keep_trying());
    m.on(Event::Start);
    let actions = m.on(Event::UsedUp(Exhausted {
        attempts: 1,
        last_error: refusal().message,
        permanent: true,
    }));
    let Some(Action::Connect(round)) = actions.last() else {
        panic!("another round");
    };
    assert!(!round.gives_up_on(&refusal()));
}

#[test]
fn refusals_by_every_server_in_a_row_fail() {
    let mut m = connected(Settings {
        servers: 3,
        ..settings()
    });
    m.on(Event::Client(ClientEvent::Disconnected));
    let why = "authorization violation: the server refused nats.auth.token";
    let refused = || Event::Client(ClientEvent::Refused(why.into()));
    for n in 1..=2 {
        assert_eq!(
            m.on(refused()),
            [
                Action::Log(Note::Refused {
                    refusals: n,
                    servers: 3,
                    why: why.into()
                }),
                Action::Publish(Update::error(why)),
            ]
        );
    }
    // The client got in again: the count starts over.
    m.on(Event::Client(ClientEvent::Connected));
    m.on(Event::ProbeOk(RTT));
    m.on(Event::Client(ClientEvent::Disconnected));
    m.on(refused());
    m.on(refused());
    assert_eq!(m.state(), Disconnected);
    let actions = m.on(refused());
    let e = Exhausted {
        attempts: 5,
        last_error: format!("{why} (on reconnect, by every server)"),
        permanent: true,
    };
    assert_eq!(actions[2], Action::Retire);
    assert_eq!(actions[3..6], used_up(&e));
    assert_eq!(actions[6..], [Action::Exit(Err(e))]);
    assert_eq!(m.state(), Failed);
}

#[test]
fn one_server_refusing_once_is_every_server() {
    let mut m = connected(settings());
    m.on(Event::Client(ClientEvent::Disconnected));
    let actions = m.on(Event::Client(ClientEvent::Refused(
        "TLS setup failed".into(),
    )));
    assert!(actions.contains(&Action::Retire));
    assert_eq!(m.state(), Failed);
}

// ---- shutdown ----

#[test]
fn shutdown_drains_a_connection_then_stops() {
    let stop = [
        Action::Publish(Update {
            state: Some(Draining),
            ..Update::default()
        }),
        Action::Drain,
        Action::Publish(Update {
            state: Some(Stopped),
            ..Update::default()
        }),
        Action::MarkBindings(BindingState::Stopped),
        Action::Exit(Ok(())),
    ];
    for from in [Connected, Degraded, Disconnected] {
        let mut m = connected(settings());
        match from {
            Degraded => {
                fail_tick(&mut m);
            }
            Disconnected => {
                m.on(Event::Client(ClientEvent::Disconnected));
            }
            _ => {}
        }
        assert_eq!(m.state(), from);
        assert_eq!(m.on(Event::Shutdown), stop, "from {from:?}");
        assert_eq!(m.state(), Stopped);
        assert!(m.on(Event::Shutdown).is_empty(), "once");
    }
}

#[test]
fn shutdown_during_attempts_stops_without_draining() {
    let stop = super::stopped();
    let mut m = Machine::new(settings());
    m.on(Event::Start);
    assert_eq!(m.on(Event::Shutdown), stop, "from connecting");
    let mut m = reconnecting(settings());
    assert_eq!(m.on(Event::Shutdown), stop, "from reconnecting");
    let mut m = Machine::new(keep_trying());
    m.on(Event::Start);
    m.on(Event::UsedUp(transient(5)));
    assert_eq!(m.on(Event::Shutdown), stop, "from failed");
    assert_eq!(m.state(), Stopped);
}

// ---- failure counting ----

#[test]
fn the_threshold_is_reached_exactly_at_failure_threshold() {
    for threshold in [1, 2, 3, 7] {
        let mut m = connected(Settings {
            failure_threshold: threshold,
            ..settings()
        });
        for n in 1..threshold {
            assert!(
                !has_reconnect(&fail_tick(&mut m)),
                "failure {n} of {threshold}"
            );
            assert_eq!(m.consecutive_failures(), n);
        }
        assert!(has_reconnect(&fail_tick(&mut m)), "failure {threshold}");
    }
}

#[test]
fn failures_count_in_a_row_and_reset_on_success() {
    let mut m = connected(settings());
    fail_tick(&mut m);
    fail_tick(&mut m);
    ok_tick(&mut m);
    assert_eq!(m.consecutive_failures(), 0);
    assert!(!has_reconnect(&fail_tick(&mut m)));
    assert!(!has_reconnect(&fail_tick(&mut m)));
    assert_eq!(m.consecutive_failures(), 2);
    // A reconnect resets them too.
    assert!(has_reconnect(&fail_tick(&mut m)));
    m.on(Event::Established { rtt: RTT });
    assert_eq!(m.consecutive_failures(), 0);
    assert!(!has_reconnect(&fail_tick(&mut m)));
    // As does a disconnect: the client owns recovery.
    m.on(Event::Client(ClientEvent::Disconnected));
    assert_eq!(m.consecutive_failures(), 0);
}

#[test]
fn a_rebind_is_confirmed_by_a_probe_that_does_not_count() {
    let mut m = connected(settings());
    assert_eq!(m.on(Event::Rebound), [Action::Probe]);
    assert_eq!(m.on(Event::ProbeOk(RTT)), [mark_connected()]);
    assert_eq!(m.on(Event::Rebound), [Action::Probe]);
    assert_eq!(
        m.on(Event::ProbeFailed("no echo".into())),
        [Action::Log(Note::RebindUnconfirmed {
            error: "no echo".into()
        })]
    );
    assert_eq!(m.consecutive_failures(), 0);
    assert_eq!(m.state(), Connected);
}

#[test]
fn a_probe_answer_nobody_asked_for_changes_nothing() {
    let mut m = connected(settings());
    assert!(m.on(Event::ProbeFailed("late".into())).is_empty());
    assert!(m.on(Event::ProbeOk(RTT)).is_empty());
    assert_eq!(m.consecutive_failures(), 0);
}

#[test]
fn other_client_events_are_recorded() {
    let mut m = connected(settings());
    for n in 1..=2 {
        assert_eq!(
            m.on(Event::Client(ClientEvent::SlowConsumer(7))),
            [
                Action::Log(Note::SlowConsumer(7)),
                Action::Publish(Update {
                    slow_consumer_events: Some(n),
                    ..Update::default()
                }),
            ]
        );
    }
    let e = "Permissions Violation for Subscription to \"in.>\"";
    assert_eq!(
        m.on(Event::Client(ClientEvent::ServerError(e.into()))),
        [
            Action::Log(Note::ServerError(e.into())),
            Action::MarkFailedSubscription(e.into()),
            Action::Publish(Update::error(format!("server: {e}"))),
        ]
    );
    assert_eq!(
        m.on(Event::CallbackFailed {
            index: 1,
            error: "nope".into()
        }),
        [
            Action::Log(Note::CallbackFailed {
                index: 1,
                error: "nope".into()
            }),
            Action::Publish(Update::error("reconnect callback 1 failed: nope")),
        ]
    );
    assert_eq!(m.state(), Connected);
}

#[test]
fn a_round_reports_each_attempt() {
    let r = round(Reconnecting);
    assert_eq!(
        r.started(),
        Update {
            state: Some(Reconnecting),
            reconnect_attempts: Some(0),
            ..Update::default()
        }
    );
    assert_eq!(r.attempt(3).reconnect_attempts, Some(3));
    let failure = ConnectFailure {
        permanent: false,
        message: "connection refused".into(),
    };
    assert_eq!(
        r.retrying(2, &failure, Duration::from_millis(200)),
        [
            Action::Log(Note::ConnectFailed {
                attempt: 2,
                error: "connection refused".into(),
                wait: Duration::from_millis(200),
            }),
            Action::Publish(Update::error("connection refused")),
        ]
    );
}

// ---- timing, under the paused clock ----

/// Run `round` as the supervisor does, with an attempt that fails as
/// `outcome(n)` says (`None`: it connects); returns when each attempt began.
async fn run_round(
    round: &Round,
    outcome: impl Fn(u32) -> Option<ConnectFailure>,
) -> (Result<u32, Exhausted>, Vec<Duration>) {
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let result = backoff::retry(
        &round.backoff,
        round.max_attempts,
        |n| {
            times.lock().unwrap().push(start.elapsed());
            let result = match outcome(n) {
                None => Ok(n),
                Some(failure) => Err(failure),
            };
            async move { result }
        },
        |failure| round.gives_up_on(failure),
        |_, _, _| {},
    )
    .await;
    let times = times.lock().unwrap().clone();
    (result, times)
}

fn down(_: u32) -> Option<ConnectFailure> {
    Some(ConnectFailure {
        permanent: false,
        message: "connection refused".into(),
    })
}

fn ms(times: &[Duration]) -> Vec<u128> {
    times.iter().map(|t| t.as_millis()).collect()
}

#[tokio::test(start_paused = true)]
async fn reconnect_attempts_wait_the_backoff_capped() {
    let mut m = Machine::new(Settings {
        max_attempts: 8,
        ..settings()
    });
    let [Action::Connect(round)] = &m.on(Event::Start)[..] else {
        panic!("a round");
    };
    let (result, times) = run_round(round, down).await;
    // Waits of initial × factor^(n-1): 100, 200, 400, 800, 1600, then the 2 s cap.
    assert_eq!(
        ms(&times),
        [0, 100, 300, 700, 1500, 3100, 5100, 7100],
        "attempt n starts after the sum of the waits before it"
    );
    let exhausted = result.unwrap_err();
    assert_eq!(exhausted.attempts, 8);
    let actions = m.on(Event::UsedUp(exhausted.clone()));
    assert_eq!(actions.last(), Some(&Action::Exit(Err(exhausted))));
}

#[tokio::test(start_paused = true)]
async fn a_round_ends_when_an_attempt_connects() {
    let mut m = reconnecting(settings());
    let Some(Action::Connect(round)) = m
        .on(Event::Client(ClientEvent::GaveUp("closed".into())))
        .pop()
    else {
        panic!("a round");
    };
    let (result, times) = run_round(&round, |n| if n < 4 { down(n) } else { None }).await;
    assert_eq!(result, Ok(4));
    assert_eq!(ms(&times), [0, 100, 300, 700]);
    assert_eq!(m.on(Event::Established { rtt: RTT })[0], mark_connected());
}

#[tokio::test(start_paused = true)]
async fn a_refused_attempt_ends_the_round_without_waiting() {
    let mut m = Machine::new(settings());
    let [Action::Connect(round)] = &m.on(Event::Start)[..] else {
        panic!("a round");
    };
    let start = Instant::now();
    let (result, times) = run_round(round, |n| if n < 2 { down(n) } else { Some(refusal()) }).await;
    assert_eq!(ms(&times), [0, 100]);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "no wait after it"
    );
    let exhausted = result.unwrap_err();
    assert!(exhausted.permanent);
    assert_eq!(exhausted.attempts, 2, "not max_attempts");
}

#[tokio::test(start_paused = true)]
async fn keeping_on_trying_waits_max_backoff_between_attempts() {
    let mut m = Machine::new(keep_trying());
    m.on(Event::Start);
    let Some(Action::Connect(round)) = m.on(Event::UsedUp(transient(5))).pop() else {
        panic!("a slow round");
    };
    // Refused for a while (credentials being fixed), then in.
    let (result, times) = run_round(&round, |n| if n < 6 { Some(refusal()) } else { None }).await;
    assert_eq!(result, Ok(6), "no attempt limit, refusals retried");
    assert_eq!(ms(&times), [0, 2000, 4000, 6000, 8000, 10000]);
}

/// The supervisor's health loop against a server that hangs right after a
/// good probe at 0: ticks every `interval`, a probe waits `timeout` for an
/// echo that never comes. Returns when each probe went out and when the
/// machine gave up on the client.
async fn hang(interval: Duration, timeout: Duration, threshold: u32) -> (Vec<Duration>, Duration) {
    let mut m = connected(Settings {
        failure_threshold: threshold,
        ..settings()
    });
    let start = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut probes = Vec::new();
    loop {
        ticker.tick().await;
        assert_eq!(m.on(Event::Tick), [Action::Probe]);
        probes.push(start.elapsed());
        tokio::time::sleep(timeout).await;
        let actions = m.on(Event::ProbeFailed(format!(
            "no echo from the server within {timeout:?}"
        )));
        if actions.contains(&Action::ProbeAgainNow) {
            ticker.reset_immediately();
        }
        if actions.contains(&Action::Retire) {
            return (probes, start.elapsed());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_server_is_confirmed_within_interval_plus_threshold_timeouts() {
    // The defaults: 2 s interval, 1 s timeout, threshold 3.
    let (interval, timeout, threshold) = (Duration::from_secs(2), Duration::from_secs(1), 3);
    let (probes, confirmed) = hang(interval, timeout, threshold).await;
    // The first failure at the next tick, then each failure re-probes at once.
    assert_eq!(ms(&probes), [2000, 3000, 4000]);
    assert_eq!(confirmed, interval + timeout * threshold);
    // timeout ≤ interval × (threshold - 1) / threshold: within interval × threshold.
    assert!(confirmed <= interval * threshold);

    // A slow timeout: still interval + threshold × timeout, not threshold × (interval + timeout).
    let (interval, timeout, threshold) = (Duration::from_secs(1), Duration::from_secs(3), 4);
    let (probes, confirmed) = hang(interval, timeout, threshold).await;
    assert_eq!(ms(&probes), [1000, 4000, 7000, 10000]);
    assert_eq!(confirmed, interval + timeout * threshold);
}

#[tokio::test(start_paused = true)]
async fn after_a_probe_recovers_the_ticks_keep_the_interval() {
    let mut m = connected(settings());
    let interval = Duration::from_secs(2);
    let start = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut probes = Vec::new();
    // Fails once, then answers.
    for answer in [false, true, true] {
        ticker.tick().await;
        assert_eq!(m.on(Event::Tick), [Action::Probe]);
        probes.push(start.elapsed());
        let actions = if answer {
            m.on(Event::ProbeOk(RTT))
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            m.on(Event::ProbeFailed("no echo".into()))
        };
        if actions.contains(&Action::ProbeAgainNow) {
            ticker.reset_immediately();
        }
    }
    assert_eq!(ms(&probes), [2000, 3000, 5000]);
}

#[test]
fn connected_to_connected_through_a_lame_duck_switch() {
    let mut m = connected(settings());
    assert_eq!(
        m.on(Event::Client(ClientEvent::LameDuck)),
        [
            Action::Log(Note::LameDuck { switching: true }),
            Action::Switch
        ]
    );
    assert_eq!(m.state(), Connected, "the old connection serves meanwhile");
    let mut publish = confirmed();
    publish.lame_duck_switches = Some(1);
    assert_eq!(
        m.on(Event::Switched(Ok(RTT))),
        [
            Action::MarkConnected { publish, rtt: RTT },
            reconnected(ReconnectPath::LameDuck, 1),
        ]
    );
    assert_eq!(m.state(), Connected);
    assert_eq!(m.total_reconnects(), 1);
    // The new client reports its own first connection: not a reconnect.
    assert!(m.on(Event::Client(ClientEvent::Connected)).is_empty());
    let mut second = confirmed();
    second.lame_duck_switches = Some(2);
    m.on(Event::Client(ClientEvent::LameDuck));
    assert_eq!(
        m.on(Event::Switched(Ok(RTT)))[0],
        Action::MarkConnected {
            publish: second,
            rtt: RTT
        },
        "switches are counted"
    );
}

#[test]
fn degraded_switches_too_and_a_failed_switch_keeps_the_connection() {
    let mut m = connected(settings());
    fail_tick(&mut m);
    assert_eq!(m.state(), Degraded);
    assert_eq!(
        m.on(Event::Client(ClientEvent::LameDuck)),
        [
            Action::Log(Note::LameDuck { switching: true }),
            Action::Switch
        ]
    );
    assert_eq!(
        m.on(Event::Switched(Err("no server but 127.0.0.1:4222".into()))),
        [
            Action::Log(Note::SwitchFailed {
                error: "no server but 127.0.0.1:4222".into()
            }),
            Action::Publish(Update::error(
                "lame duck: could not move to another server: no server but 127.0.0.1:4222"
            )),
        ]
    );
    assert_eq!(m.state(), Degraded, "unchanged: the old connection goes on");
    assert_eq!(m.total_reconnects(), 0);
}

#[test]
fn a_lame_duck_while_disconnected_is_only_noted() {
    let mut m = connected(settings());
    m.on(Event::Client(ClientEvent::Disconnected));
    assert_eq!(
        m.on(Event::Client(ClientEvent::LameDuck)),
        [Action::Log(Note::LameDuck { switching: false })]
    );
}
