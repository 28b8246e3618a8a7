//! The compile cache: a restart loads plugins without compiling them, and a
//! corrupt or foreign entry is never trusted — the plugin is compiled again
//! and the entry overwritten.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use wasmgate::Gateway;
use wasmgate::config::RuntimeConfig;
use wasmgate::plugin::{CacheOutcome, Message, Outcome, Plugin, Runtime};
use wasmgate_tests::*;

/// A fresh runtime (as after a restart) using `cache_dir`.
fn runtime(cache_dir: &Path) -> Runtime {
    Runtime::from_config(&RuntimeConfig {
        cache_dir: cache_dir.to_path_buf(),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn load(runtime: &Runtime, wasm: &str) -> (Arc<Plugin>, Duration) {
    let config = plugin("p", wasm, &["in.>"], &[]);
    let started = Instant::now();
    let plugin = Plugin::load(runtime, &config, 0).unwrap();
    (Arc::new(plugin), started.elapsed())
}

/// The uppercase plugin's answer to `abc`, to show a loaded component runs
/// (and is the component it should be).
fn upper_reply(plugin: &Arc<Plugin>) -> Outcome {
    let msg = Message {
        subject: "in.x".into(),
        payload: b"abc".to_vec(),
        headers: vec![],
        reply_to: Some("r".into()),
    };
    plugin.instantiate().unwrap().handle(&msg).unwrap().outcome
}

#[test]
fn a_restart_loads_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (first, miss_time) = load(&runtime(dir.path()), "uppercase");
    assert_eq!(first.cache_outcome(), CacheOutcome::Miss);
    let restarted = runtime(dir.path());
    let (second, hit_time) = load(&restarted, "uppercase");
    assert_eq!(second.cache_outcome(), CacheOutcome::Hit);
    assert_eq!(upper_reply(&second), Outcome::Ok(Some(b"ABC".to_vec())));
    let stats = restarted.cache().expect("cache on").stats();
    assert_eq!((stats.hits, stats.misses, stats.rejected), (1, 0, 0));
    println!("uppercase load: compile (miss) {miss_time:?}, from cache (hit) {hit_time:?}");

    // Another component is its own entry.
    let (other, _) = load(&restarted, "faulty");
    assert_eq!(other.cache_outcome(), CacheOutcome::Miss);
    let entries = std::fs::read_dir(restarted.cache().unwrap().dir())
        .unwrap()
        .count();
    assert_eq!(entries, 2, "one entry per component, no temp files left");
}

#[test]
fn a_corrupt_entry_is_compiled_again_and_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(plugin_wasm("uppercase")).unwrap();
    let rt = runtime(dir.path());
    assert_eq!(load(&rt, "uppercase").0.cache_outcome(), CacheOutcome::Miss);
    let entry = rt.cache().unwrap().entry_path(&wasm);

    // Flip a byte in the middle of the compiled code.
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&entry, &bytes).unwrap();
    let rt = runtime(dir.path());
    let (p, _) = load(&rt, "uppercase");
    assert_eq!(p.cache_outcome(), CacheOutcome::Rejected);
    assert_eq!(upper_reply(&p), Outcome::Ok(Some(b"ABC".to_vec())));
    assert_eq!(
        load(&runtime(dir.path()), "uppercase").0.cache_outcome(),
        CacheOutcome::Hit,
        "the corrupt entry was replaced"
    );

    // Garbage and empty files.
    for garbage in [&b""[..], &b"not a cache entry at all"[..], &bytes[..100]] {
        std::fs::write(&entry, garbage).unwrap();
        let (p, _) = load(&runtime(dir.path()), "uppercase");
        assert_eq!(p.cache_outcome(), CacheOutcome::Rejected);
        assert_eq!(upper_reply(&p), Outcome::Ok(Some(b"ABC".to_vec())));
    }
}

#[test]
fn an_entry_of_another_component_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let cache = rt.cache().unwrap();
    let upper = std::fs::read(plugin_wasm("uppercase")).unwrap();
    let faulty = std::fs::read(plugin_wasm("faulty")).unwrap();
    load(&rt, "faulty");
    // Put faulty's valid entry where uppercase's belongs.
    std::fs::copy(cache.entry_path(&faulty), cache.entry_path(&upper)).unwrap();
    let (p, _) = load(&runtime(dir.path()), "uppercase");
    assert_eq!(p.cache_outcome(), CacheOutcome::Rejected);
    // It really is uppercase that runs, not faulty (which would echo `abc`).
    assert_eq!(upper_reply(&p), Outcome::Ok(Some(b"ABC".to_vec())));
}

#[test]
fn an_empty_cache_dir_turns_the_cache_off() {
    let rt = runtime(Path::new(""));
    assert!(rt.cache().is_none());
    assert_eq!(
        load(&rt, "uppercase").0.cache_outcome(),
        CacheOutcome::Disabled
    );
}

#[test]
fn an_unusable_cache_dir_only_costs_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let rt = runtime(&file);
    assert!(rt.cache().is_none());
    assert_eq!(
        load(&rt, "uppercase").0.cache_outcome(),
        CacheOutcome::Disabled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_hits_the_cache() {
    init_logs();
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = upper_config(&[server.url()]);
    config.runtime.cache_dir = dir.path().to_path_buf();
    let nc = client(&server).await;

    for expected in [CacheOutcome::Miss, CacheOutcome::Hit] {
        let shutdown = CancellationToken::new();
        let gw = Gateway::start(config.clone(), shutdown.clone())
            .await
            .unwrap();
        assert_eq!(gw.plugin("upper").await.unwrap().cache_outcome(), expected);
        gw.ready(WAIT).await.unwrap();
        let mut out = nc.subscribe("out.>").await.unwrap();
        nc.flush().await.unwrap();
        nc.publish("in.x", "cached".into()).await.unwrap();
        let msg = tokio::time::timeout(WAIT, out.next())
            .await
            .expect("output arrives")
            .unwrap();
        assert_eq!(msg.payload.as_ref(), b"CACHED");

        // Operators see the cache at work in /status and /metrics.
        let (hit, miss) = match expected {
            CacheOutcome::Hit => (1, 0),
            _ => (0, 1),
        };
        let addr = gw.http_addr().unwrap();
        let (_, status) = http_get(addr, "/status").await;
        let counts = &status["compile_cache"];
        assert_eq!(
            (&counts["hits"], &counts["misses"]),
            (&hit.into(), &miss.into()),
            "{status}"
        );
        assert_metrics(
            addr,
            &[
                format!("wasmgate_compile_cache_loads_total{{outcome=\"hit\"}} {hit}"),
                format!("wasmgate_compile_cache_loads_total{{outcome=\"miss\"}} {miss}"),
                "wasmgate_compile_cache_evictions_total 0".to_string(),
            ],
        )
        .await;
        shutdown.cancel();
        gw.wait().await.unwrap();
    }
}
