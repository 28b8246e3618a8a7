//! Many bindings on one gateway (the real binary, as operators run it):
//! well past tokio's 512 blocking threads every binding handles its
//! messages, and the process's threads do not grow with the bindings.

use std::collections::BTreeSet;

use futures::StreamExt;
use wasmgate::config::BindingConfig;
use wasmgate_tests::*;

/// Four times the blocking pool that once held one thread per binding.
const BINDINGS: usize = 2_000;

#[test]
fn two_thousand_bindings_each_handle_their_messages_on_a_bounded_set_of_threads() {
    let server = NatsServer::start();
    let mut config = test_config(&[server.url()]);
    let mut p = plugin("upper", "uppercase", &[], &[("prefix", "out")]);
    p.bindings = (0..BINDINGS)
        .map(|i| BindingConfig {
            subject: format!("scale.{i}"),
            queue: None,
            jetstream: None,
            buffer: None,
        })
        .collect();
    config.plugins.push(p);
    let gw = process::GatewayProcess::start(&config);
    let threads = gw.threads().expect("the process's threads");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = rt.block_on(async {
        let nc = client(&server).await;
        let mut outputs = nc.subscribe("out.scale.*").await.unwrap();
        nc.flush().await.unwrap();
        for round in 0..2 {
            for i in 0..BINDINGS {
                nc.publish(format!("scale.{i}"), format!("{round}").into())
                    .await
                    .unwrap();
            }
        }
        nc.flush().await.unwrap();
        let mut seen = BTreeSet::new();
        let _ = tokio::time::timeout(WAIT, async {
            while seen.len() < 2 * BINDINGS {
                match outputs.next().await {
                    Some(m) => {
                        seen.insert((m.subject.to_string(), m.payload.to_vec()));
                    }
                    None => break,
                }
            }
        })
        .await;
        seen
    });
    let status = gw.status().expect("status");
    let idle: Vec<String> = status["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["handled"].as_u64() != Some(2))
        .map(|b| format!("{} handled {}", b["subject"], b["handled"]))
        .collect();
    assert!(
        idle.is_empty(),
        "every binding handled its two messages; these did not ({} of {BINDINGS}): {:?}",
        idle.len(),
        &idle[..idle.len().min(10)]
    );
    assert_eq!(seen.len(), 2 * BINDINGS, "every output arrived");
    let after = gw.threads().expect("the process's threads");
    eprintln!("{BINDINGS} bindings: {threads} threads when ready, {after} after the traffic");
    // Tokio's workers (one per core), the worker pool (two per core, at
    // least four), the epoch ticker, the compile and reload helpers: a few
    // dozen at most on any machine this runs on, not one per binding.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let bound = 16 + 4 * cores;
    assert!(
        after <= bound,
        "{after} threads for {BINDINGS} bindings (at most {bound} on {cores} cores)"
    );
}
