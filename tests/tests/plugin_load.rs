//! Bad `.wasm` files are refused at load time with an error that names the
//! plugin and the file; `golden/plugin/*.err` holds the expected text (with the
//! path shown as `<path>`). `UPDATE_GOLDEN=1` rewrites them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmgate::plugin::{LoadError, LoadErrorKind, Plugin, Runtime};
use wasmgate_tests::*;

fn load(path: &Path) -> Result<Plugin, LoadError> {
    let runtime = Runtime::new(Duration::from_millis(10)).unwrap();
    let mut config = plugin("demo", "uppercase", &["in.>"], &[]);
    config.path = path.to_path_buf();
    Plugin::load(&runtime, &config, 0)
}

fn check_golden(name: &str, path: &Path, err: &LoadError) {
    let text = format!("{err}\n").replace(&path.display().to_string(), "<path>");
    let golden = PathBuf::from("golden/plugin").join(format!("{name}.err"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&golden)
        .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_GOLDEN=1", golden.display()));
    assert_eq!(text, want, "{name}");
}

#[test]
fn missing_file() {
    let path = PathBuf::from("/nonexistent/plugin.wasm");
    let err = load(&path).unwrap_err();
    assert!(matches!(err.kind, LoadErrorKind::Missing), "{err}");
    check_golden("missing", &path, &err);
}

#[test]
fn not_webassembly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, "this is a text file, not a component").unwrap();
    let err = load(&path).unwrap_err();
    assert!(matches!(err.kind, LoadErrorKind::NotWasm), "{err}");
    check_golden("not_wasm", &path, &err);
}

#[test]
fn corrupt_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    let mut bytes = std::fs::read(plugin_wasm("uppercase")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&path, &bytes).unwrap();
    let err = load(&path).unwrap_err();
    assert!(matches!(err.kind, LoadErrorKind::Invalid(_)), "{err}");
    // wasmtime's own reason carries byte offsets of this build: check the frame only.
    let text = err.to_string();
    let prefix = format!("plugin \"demo\": {}: invalid component: ", path.display());
    assert!(text.starts_with(&prefix), "{text}");
}

#[test]
fn core_module_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let err = load(&path).unwrap_err();
    assert!(matches!(err.kind, LoadErrorKind::CoreModule), "{err}");
    check_golden("core_module", &path, &err);
}

#[test]
fn wrong_world() {
    let path = plugin_wasm("wrong-world");
    let err = load(&path).unwrap_err();
    assert!(
        matches!(err.kind, LoadErrorKind::WrongWorld { .. }),
        "{err}"
    );
    check_golden("wrong_world", &path, &err);
}

#[test]
fn good_plugin_loads_and_handles() {
    let plugin = Arc::new(load(&plugin_wasm("uppercase")).unwrap());
    let mut instance = plugin.instantiate().unwrap();
    let msg = wasmgate::plugin::Message {
        subject: "in.x".into(),
        payload: b"abc".to_vec(),
        headers: vec![],
        reply_to: Some("r".into()),
    };
    let handled = instance.handle(&msg).unwrap();
    assert_eq!(
        handled.outcome,
        wasmgate::plugin::Outcome::Ok(Some(b"ABC".to_vec()))
    );
    assert_eq!(handled.outbox.len(), 1);
    assert_eq!(handled.outbox[0].subject.as_str(), "out.in.x");
}

#[tokio::test]
async fn gateway_refuses_to_start_with_a_bad_plugin() {
    let mut config = test_config(&["nats://127.0.0.1:1".into()]);
    let mut p = plugin("broken", "uppercase", &["in.>"], &[]);
    p.path = PathBuf::from("/nonexistent/broken.wasm");
    config.plugins.push(p);
    let err = match wasmgate::Gateway::start(config, Default::default()).await {
        Ok(_) => panic!("a missing plugin must stop start-up"),
        Err(e) => e,
    };
    assert_eq!(
        format!("{err:#}"),
        "plugin \"broken\": /nonexistent/broken.wasm: file not found"
    );
}

#[test]
fn plugin_built_against_wit_0_1_0_still_loads_and_handles() {
    // Built from plugins/uppercase before `delivery` was added in 0.1.1; its
    // imports and export name say @0.1.0.
    let old = Path::new("fixtures/uppercase-wit-0.1.0.wasm");
    let plugin = Arc::new(load(old).expect("a 0.1.0 plugin loads in a 0.1.5 host"));
    let mut instance = plugin.instantiate().unwrap();
    let msg = wasmgate::plugin::Message {
        subject: "in.old".into(),
        payload: b"compat".to_vec(),
        headers: vec![],
        reply_to: Some("r".into()),
    };
    let handled = instance.handle(&msg).unwrap();
    assert_eq!(
        handled.outcome,
        wasmgate::plugin::Outcome::Ok(Some(b"COMPAT".to_vec()))
    );
    assert_eq!(handled.outbox[0].subject.as_str(), "out.in.old");
}

#[test]
fn plugin_built_against_wit_0_1_3_gets_the_batch_encoding_it_reads() {
    // `echo` built with the SDK of WIT 0.1.3: it exports batch-handler@0.1.3,
    // whose messages do not end with JetStream metadata.
    let old = Path::new("fixtures/echo-wit-0.1.3.wasm");
    let plugin = Arc::new(load(old).expect("a 0.1.3 plugin loads in a 0.1.5 host"));
    assert!(plugin.batched() && !plugin.reads_delivery() && plugin.batches_jetstream());
    let mut instance = plugin.instantiate().unwrap();
    let mut results = wasmgate::plugin::BatchResults::default();

    let mut batch = plugin.new_batch();
    assert!(!batch.carries_jetstream());
    for subject in ["in.a", "in.b"] {
        batch.push(subject, None, std::iter::empty(), b"old");
    }
    instance.handle_batch(&mut batch, &mut results).unwrap();
    let subjects: Vec<&str> = results
        .publishes
        .iter()
        .map(|p| p.subject.as_str())
        .collect();
    assert_eq!(subjects, ["out.in.a", "out.in.b"]);

    // The 0.1.4 encoding is refused before the guest could misread it.
    let mut new = wasmgate::plugin::Batch::new();
    new.push("in.a", None, std::iter::empty(), b"new");
    let err = instance.handle_batch(&mut new, &mut results).unwrap_err();
    assert!(
        matches!(&err, wasmgate::plugin::CallError::Contract(why) if why.contains("encoding")),
        "{err:?}"
    );
}

#[test]
fn plugin_built_against_wit_0_1_4_batches_in_the_current_encoding() {
    // `echo` built with the SDK of WIT 0.1.4, before `requester` (0.1.5):
    // its names say @0.1.4 and its batches carry JetStream metadata.
    let old = Path::new("fixtures/echo-wit-0.1.4.wasm");
    let plugin = Arc::new(load(old).expect("a 0.1.4 plugin loads in a 0.1.5 host"));
    assert!(plugin.batched() && plugin.batches_jetstream());
    let mut instance = plugin.instantiate().unwrap();
    let mut batch = plugin.new_batch();
    assert!(batch.carries_jetstream());
    batch.push("in.a", Some("r"), std::iter::empty(), b"old");
    let mut results = wasmgate::plugin::BatchResults::default();
    instance.handle_batch(&mut batch, &mut results).unwrap();
    assert_eq!(results.publishes[0].subject.as_str(), "out.in.a");
    assert_eq!(
        results.results[0].outcome,
        wasmgate::plugin::Outcome::Ok(Some(b"old".to_vec()))
    );
}
