//! The examples operators copy are checked: the systemd unit passes
//! `systemd-analyze verify` (no warning either) with the real binary in its
//! `ExecStart`, and every example config loads (its `${NAME}`s set).

use std::path::{Path, PathBuf};
use std::process::Command;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(examples().join("systemd/wasmgate.service"))
        .expect("examples/systemd/wasmgate.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/wasmgate run"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasmgate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/wasmgate", env!("CARGO_BIN_EXE_wasmgate")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) checks the example unit");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {text}");
    assert!(
        text.trim().is_empty(),
        "systemd-analyze verify warned:\n{text}"
    );
}

#[test]
fn the_cluster_config_loads_with_its_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["config", "validate"])
        .arg(examples().join("cluster/wasmgate.toml"))
        .env("NATS_URL_1", "nats://127.0.0.1:4301")
        .env("NATS_URL_2", "nats://127.0.0.1:4302")
        .env("NATS_URL_3", "nats://127.0.0.1:4303")
        .env("WASMGATE_HTTP", "127.0.0.1:8481")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Without them: the error names the variable.
    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["config", "validate"])
        .arg(examples().join("cluster/wasmgate.toml"))
        .env_remove("NATS_URL_1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NATS_URL_1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
