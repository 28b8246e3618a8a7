//! Draining a queue subscription while messages flow loses none of them:
//! every message the server sent the drained member before its UNSUB is
//! delivered, and the rest go to the other member (the client keeps the
//! subscription until the PONG after its UNSUB).

use futures::StreamExt;
use wasmgate_tests::*;

/// Rounds of the race: one round catches the unpatched client about once in
/// three, eight nearly always.
const ROUNDS: usize = 8;
const SENT: usize = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_queue_member_loses_no_message_the_server_sent_it() {
    let server = NatsServer::start();
    for round in 0..ROUNDS {
        let (a_got, b_got) = one_round(&server, round).await;
        assert!(a_got >= 1_000, "the drained member got its first 1,000");
        assert_eq!(
            a_got + b_got,
            SENT,
            "round {round}: every message reached one member ({a_got} the drained one, {b_got} the other)"
        );
    }
}

async fn one_round(server: &NatsServer, round: usize) -> (usize, usize) {
    let connect = || {
        async_nats::ConnectOptions::new()
            .subscription_capacity(2 * SENT)
            .connect(server.url())
    };
    let (a, b, publisher) = (
        connect().await.unwrap(),
        connect().await.unwrap(),
        client(server).await,
    );
    let subject = format!("q{round}.>");
    let mut drained = a
        .queue_subscribe(subject.clone(), "workers".into())
        .await
        .unwrap();
    let mut stays = b.queue_subscribe(subject, "workers".into()).await.unwrap();
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    // A round trip on each, so that the server has both subscriptions.
    for c in [&a, &b] {
        let _ = c.request("no.such.service", "".into()).await;
    }

    let publish = tokio::spawn(async move {
        for i in 0..SENT {
            publisher
                .publish(format!("q{round}.{i}"), "x".into())
                .await
                .unwrap();
        }
        publisher.flush().await.unwrap();
        // The last message's delivery is behind this round trip.
        let _ = publisher.request("no.such.service", "".into()).await;
    });
    let drained_count = tokio::spawn(async move {
        let mut n = 0usize;
        while drained.next().await.is_some() {
            n += 1;
            if n == 1_000 {
                drained.drain().await.unwrap();
            }
        }
        n
    });
    publish.await.unwrap();
    let a_got = drained_count.await.unwrap();
    let mut b_got = 0usize;
    while b_got + a_got < SENT {
        match tokio::time::timeout(std::time::Duration::from_secs(5), stays.next()).await {
            Ok(Some(_)) => b_got += 1,
            _ => break,
        }
    }
    (a_got, b_got)
}
