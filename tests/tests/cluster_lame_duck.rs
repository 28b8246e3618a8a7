//! A rolling restart of a 3-node cluster, each node in turn put in lame duck
//! mode, restarted and given time to rejoin, under a steady core stream to
//! a queue group and a JetStream stream (the driver: `tests/src/rolling.rs`).
//! The gateway moves to another node before each lame duck node closes it
//! (make before break): no core message is lost, every JetStream input's
//! output arrives, handled once, and `/status` and `/metrics` count the
//! switches.

use wasmgate_tests::cluster::Cluster;
use wasmgate_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_nothing() {
    init_logs();
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(3));
    let gw = Running::start(rolling::prepare(&cluster).await).await;
    let r = rolling::run(&mut cluster).await;
    let s = gw.status();
    let js_handled = s.bindings[1].handled;
    eprintln!(
        "lame duck: {} core messages sent, {} handled, lost {}; {} JetStream inputs, \
         {} outputs, handled {js_handled} (redeliveries {}); switches {}, reconnects {}",
        r.sent,
        s.bindings[0].handled,
        r.lost.len(),
        r.js_sent,
        r.js_seen,
        js_handled.saturating_sub(r.js_sent),
        s.lame_duck_switches,
        s.total_reconnects,
    );
    assert!(
        r.lost.is_empty(),
        "lost {} core messages (first {:?})",
        r.lost.len(),
        &r.lost[..r.lost.len().min(20)]
    );
    assert_eq!(r.js_seen, r.js_sent, "every JetStream input's output");
    assert!(
        s.lame_duck_switches >= 1,
        "the gateway's node went lame duck at least once: {s:?}"
    );
    assert_metrics(
        gw.http_addr().unwrap(),
        &[format!(
            "wasmgate_lame_duck_switches_total {}",
            s.lame_duck_switches
        )],
    )
    .await;
    gw.stop().await;
}
