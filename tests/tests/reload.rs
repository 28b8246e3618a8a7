//! Hot reload against a real nats-server: a plugin's `.wasm` replaced under
//! load, a bad new version refused, and a config reload that adds, changes
//! and removes plugins and bindings, leaving the bindings it did not change
//! running.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use wasmgate_tests::*;

/// Replace a file the way build tools do: write beside it, then rename over it.
fn replace_file(target: &Path, bytes: &[u8]) {
    let tmp = target.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, target).unwrap();
}

async fn ask(nc: &async_nats::Client, subject: String, payload: &'static str) -> String {
    let reply = tokio::time::timeout(WAIT, nc.request(subject, payload.into()))
        .await
        .expect("a reply in time")
        .expect("request answered");
    String::from_utf8_lossy(&reply.payload).to_string()
}

/// A gateway running a copy of the uppercase plugin from a temp folder, with
/// its config file there too, watching both.
struct Watched {
    server: NatsServer,
    dir: tempfile::TempDir,
    wasm: std::path::PathBuf,
    gw: Running,
}

async fn watched_uppercase() -> Watched {
    init_logs();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("plugin.wasm");
    std::fs::copy(plugin_wasm("uppercase"), &wasm).unwrap();
    let mut config = test_config(&[server.url()]);
    let mut p = plugin("swap", "uppercase", &["in.>"], &[]);
    p.path = wasm.clone();
    config.plugins.push(p);
    let config_path = dir.path().join("wasmgate.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let gw = Running::start(config).await;
    gw.watch(config_path).unwrap();
    Watched {
        server,
        dir,
        wasm,
        gw,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_wasm_under_load_swaps_without_losing_a_message() {
    let Watched {
        server,
        dir: _dir,
        wasm,
        gw,
    } = watched_uppercase().await;
    let nc = client(&server).await;

    // Keep the load going through the swap: before it, while the watcher
    // debounces and the new version compiles, and after it.
    let (mut upper, mut lower, mut sent) = (0, 0, 0);
    let mut chunks_after_swap = 0;
    for chunk in 0..1000 {
        if chunk == 5 {
            // The echo plugin replies with the payload unchanged.
            replace_file(&wasm, &std::fs::read(plugin_wasm("echo")).unwrap());
        }
        let replies = join_all((0..100).map(|i| ask(&nc, format!("in.{chunk}.{i}"), "abc"))).await;
        sent += 100;
        for r in replies {
            match r.as_str() {
                "ABC" => upper += 1,
                "abc" => lower += 1,
                other => panic!("unexpected reply {other:?}"),
            }
        }
        if gw.status().plugins[0].version == 2 {
            chunks_after_swap += 1;
            if chunks_after_swap == 5 {
                break;
            }
        }
    }
    assert_eq!(
        upper + lower,
        sent,
        "every request answered across the swap"
    );
    assert!(upper >= 500, "the old version served until the swap");
    assert!(lower >= 400, "the new version took over: {lower}");
    let status = gw.status();
    assert_eq!(status.plugins[0].version, 2);
    assert_eq!(status.config_reloads, 1);
    assert_eq!(status.bindings[0].handled, sent as u64);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_new_version_is_refused_and_the_old_one_keeps_running() {
    let Watched {
        server,
        dir: _dir,
        wasm,
        gw,
    } = watched_uppercase().await;
    let nc = client(&server).await;
    assert_eq!(ask(&nc, "in.1".into(), "abc").await, "ABC");

    replace_file(&wasm, b"\0asm\x0d\0\x01\0 this is not a component");
    let refused = gw
        .wait_for(WAIT, |s| s.last_reload_error.is_some())
        .await
        .expect("the refused reload is reported");
    let error = refused.last_reload_error.unwrap();
    assert!(
        error.contains("plugin \"swap\"") && error.contains("invalid component"),
        "{error}"
    );
    assert_eq!(refused.plugins[0].version, 1);
    assert_eq!(
        ask(&nc, "in.2".into(), "abc").await,
        "ABC",
        "the old version still answers"
    );

    // A good version afterwards is taken.
    replace_file(&wasm, &std::fs::read(plugin_wasm("echo")).unwrap());
    gw.wait_for(WAIT, |s| {
        s.plugins[0].version == 2 && s.last_reload_error.is_none()
    })
    .await
    .unwrap();
    assert_eq!(ask(&nc, "in.3".into(), "abc").await, "abc");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_reload_adds_changes_and_removes_plugins_and_bindings() {
    init_logs();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&[server.url()]);
    config
        .plugins
        .push(plugin("upper", "uppercase", &["a.>"], &[("prefix", "out")]));
    config.plugins.push(plugin("gone", "echo", &["g.>"], &[]));
    let config_path = dir.path().join("wasmgate.toml");

    let gw = Running::start(config.clone()).await;
    let nc = client(&server).await;
    assert_eq!(ask(&nc, "a.1".into(), "abc").await, "ABC");
    assert_eq!(ask(&nc, "g.1".into(), "abc").await, "abc");

    // What SIGHUP does: `upper` moves to a2.>, `gone` goes, `added` arrives.
    let mut next = config.clone();
    next.plugins[0].bindings[0].subject = "a2.>".into();
    next.plugins.remove(1);
    next.plugins.push(plugin("added", "echo", &["b.>"], &[]));
    std::fs::write(&config_path, toml::to_string(&next).unwrap()).unwrap();
    let report = gw.reload_file(&config_path).await.unwrap();
    assert!(report.rebound);
    assert_eq!(report.added, vec!["added".to_string()]);
    assert_eq!(report.removed, vec!["gone".to_string()]);

    let status = gw.ready(WAIT).await.unwrap();
    let subjects: Vec<_> = status
        .bindings
        .iter()
        .map(|b| (b.plugin.as_str(), b.subject.as_str()))
        .collect();
    assert_eq!(subjects, [("upper", "a2.>"), ("added", "b.>")]);
    assert_eq!(ask(&nc, "a2.1".into(), "abc").await, "ABC");
    assert_eq!(ask(&nc, "b.1".into(), "xyz").await, "xyz");
    let gone = nc.request("g.2", "abc".into()).await;
    assert!(gone.is_err(), "nobody serves a removed binding any more");

    // An invalid config is refused whole; everything keeps running.
    std::fs::write(&config_path, "[nats]\nservers = []\n").unwrap();
    let err = gw.reload_file(&config_path).await.unwrap_err();
    assert!(format!("{err:#}").contains("nats.servers"), "{err:#}");
    assert!(gw.status().last_reload_error.is_some());
    assert_eq!(ask(&nc, "b.2".into(), "still").await, "still");
    gw.stop().await;
}

/// A reload re-binds only what it changed: a binding it left alone keeps its
/// subscription and workers, so a stream of messages on it, published as
/// fast as a client can across the reload, is handled whole (stopping and re-subscribing every binding
/// lost the messages sent in between: core NATS keeps nothing for a
/// subscription that is not there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_leaves_the_bindings_it_did_not_change_running() {
    init_logs();
    let server = NatsServer::start();
    let mut config = test_config(&[server.url()]);
    config.plugins.push(plugin(
        "steady",
        "uppercase",
        &["steady.*"],
        &[("prefix", "out")],
    ));
    config.plugins.push(plugin("gone", "echo", &["g.>"], &[]));
    let gw = Running::start(config.clone()).await;
    let nc = client(&server).await;
    // Room for every output while the test is busy publishing.
    let reader = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 22)
        .connect(server.url())
        .await
        .unwrap();
    let mut outputs = reader.subscribe("out.steady.*").await.unwrap();
    reader.flush().await.unwrap();

    // As fast as the client goes, from before the reload until after it:
    // any moment without the subscription loses messages.
    let done = tokio_util::sync::CancellationToken::new();
    let publisher = {
        let (nc, done) = (nc.clone(), done.clone());
        tokio::spawn(async move {
            let mut sent = 0usize;
            while !done.is_cancelled() {
                for _ in 0..500 {
                    nc.publish(format!("steady.{}", sent % 10), format!("m{sent}").into())
                        .await
                        .unwrap();
                    sent += 1;
                }
                nc.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            sent
        })
    };
    // Reload while the messages flow: `gone` goes and ten plugins arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut next = config.clone();
    next.plugins.remove(1);
    for n in 0..10 {
        next.plugins.push(plugin(
            &format!("added{n}"),
            "echo",
            &[format!("added.{n}").as_str()],
            &[],
        ));
    }
    let report = gw.reload(next).await.unwrap();
    assert!(report.rebound);
    assert_eq!(
        (
            report.bindings_kept,
            report.bindings_started,
            report.bindings_stopped
        ),
        (1, 10, 1),
        "{report:?}"
    );
    assert!(report.rebind_time > Duration::ZERO, "{report:?}");
    let last = gw
        .status()
        .last_reload
        .expect("the reload is in the status");
    assert_eq!((last.added, last.removed, last.swapped), (10, 1, 0));
    assert_eq!(
        (
            last.bindings_kept,
            last.bindings_started,
            last.bindings_stopped
        ),
        (1, 10, 1)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !publisher.is_finished(),
        "the reload happened while messages flowed"
    );
    done.cancel();
    let sent = publisher.await.unwrap();

    let mut seen = BTreeSet::new();
    let _ = tokio::time::timeout(WAIT, async {
        while seen.len() < sent {
            match outputs.next().await {
                Some(m) => {
                    seen.insert(m.payload.to_vec());
                }
                None => break,
            }
        }
    })
    .await;
    assert_eq!(
        seen.len(),
        sent,
        "every message on the untouched binding was handled"
    );
    gw.ready(WAIT).await.unwrap();
    let status = gw.status();
    assert_eq!(status.bindings.len(), 11);
    assert_eq!(
        status.bindings[0].handled, sent as u64,
        "its counters go on"
    );
    assert_eq!(ask(&nc, "added.7".into(), "new").await, "new");
    gw.stop().await;
}
