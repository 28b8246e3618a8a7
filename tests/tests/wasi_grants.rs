//! WASI is opt-in per plugin: the `probe-wasi` plugin reports what it can see,
//! and it must see exactly what `[plugin.wasi]` grants — by default only
//! clocks and random numbers: no environment, files, network or stdio.
//!
//! Environment and stdio tests run the plugin in a child process
//! (`probe-host`) with an environment and output streams the test controls.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use wasmgate::config::{PluginConfig, PreopenConfig, WasiConfig};
use wasmgate::plugin::{Instance, Message, Outcome, Plugin, Runtime};
use wasmgate_tests::*;

fn probe(wasi: WasiConfig) -> Instance {
    let runtime = Runtime::new(Duration::from_millis(10)).unwrap();
    let mut config = plugin("probe", "probe-wasi", &["probe"], &[]);
    config.wasi = wasi;
    let plugin = Plugin::load(&runtime, &config, 0).unwrap();
    Arc::new(plugin).instantiate().unwrap()
}

fn ask(instance: &mut Instance, command: &str) -> String {
    let msg = Message {
        subject: "probe".into(),
        payload: command.as_bytes().to_vec(),
        headers: vec![],
        reply_to: Some("r".into()),
    };
    match instance
        .handle(&msg)
        .expect("the probe does not trap")
        .outcome
    {
        Outcome::Ok(Some(reply)) => String::from_utf8(reply).unwrap(),
        other => panic!("{command}: unexpected outcome {other:?}"),
    }
}

#[test]
fn nothing_but_clocks_is_granted_by_default() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file.txt"), "host file").unwrap();
    let file = dir.path().join("file.txt");

    let mut p = probe(WasiConfig::default());
    assert_eq!(ask(&mut p, "clock"), "ok:true", "clocks are always there");
    assert_eq!(ask(&mut p, "env"), "ok:", "no environment at all");
    for path in ["/", ".", "/etc", "/tmp"] {
        let reply = ask(&mut p, &format!("ls:{path}"));
        assert!(reply.starts_with("err:"), "ls {path}: {reply}");
    }
    let reply = ask(&mut p, &format!("read:{}", file.display()));
    assert!(reply.starts_with("err:"), "read a host file: {reply}");
    let target = dir.path().join("written.txt");
    let reply = ask(&mut p, &format!("write:{}", target.display()));
    assert!(reply.starts_with("err:"), "write a host file: {reply}");
    assert!(!target.exists());
    let reply = ask(&mut p, &format!("connect:{addr}"));
    assert!(reply.starts_with("err:"), "connect: {reply}");
    assert!(
        listener.accept().is_err(),
        "no connection reached the listener"
    );
    // stdout and stderr are open but go nowhere; printing is not an error.
    assert_eq!(ask(&mut p, "print:into the void"), "ok:printed");
}

#[test]
fn preopened_directories_are_read_only_and_confined() {
    let root = tempfile::tempdir().unwrap();
    let granted = root.path().join("granted");
    std::fs::create_dir_all(granted.join("sub")).unwrap();
    std::fs::write(granted.join("hello.txt"), "hello from the host").unwrap();
    std::fs::write(granted.join("sub/deep.txt"), "deep").unwrap();
    std::fs::write(root.path().join("secret.txt"), "outside the grant").unwrap();

    let mut p = probe(WasiConfig {
        preopen: vec![PreopenConfig {
            host: granted.clone(),
            guest: "/data".into(),
        }],
        ..WasiConfig::default()
    });
    assert_eq!(
        ask(&mut p, "read:/data/hello.txt"),
        "ok:hello from the host"
    );
    assert_eq!(ask(&mut p, "read:/data/sub/deep.txt"), "ok:deep");
    assert_eq!(ask(&mut p, "ls:/data"), "ok:hello.txt\nsub");
    assert_eq!(ask(&mut p, "env"), "ok:", "a preopen grants no environment");

    // Read-only: no new files, no overwriting.
    let reply = ask(&mut p, "write:/data/new.txt");
    assert!(
        reply.starts_with("err:"),
        "create in a read-only dir: {reply}"
    );
    assert!(!granted.join("new.txt").exists());
    let reply = ask(&mut p, "write:/data/hello.txt");
    assert!(reply.starts_with("err:"), "overwrite: {reply}");
    assert_eq!(
        std::fs::read_to_string(granted.join("hello.txt")).unwrap(),
        "hello from the host"
    );

    // Confined: nothing outside the granted folder, by any path.
    for path in [
        "/data/../secret.txt".to_string(),
        root.path().join("secret.txt").display().to_string(),
        granted.join("hello.txt").display().to_string(),
    ] {
        let reply = ask(&mut p, &format!("read:{path}"));
        assert!(reply.starts_with("err:"), "read {path}: {reply}");
    }
}

#[cfg(unix)]
#[test]
fn a_symlink_out_of_the_preopen_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let granted = root.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(root.path().join("secret.txt"), "outside the grant").unwrap();
    std::os::unix::fs::symlink(root.path().join("secret.txt"), granted.join("link.txt")).unwrap();
    let mut p = probe(WasiConfig {
        preopen: vec![PreopenConfig {
            host: granted,
            guest: "/data".into(),
        }],
        ..WasiConfig::default()
    });
    let reply = ask(&mut p, "read:/data/link.txt");
    assert!(reply.starts_with("err:"), "followed a symlink out: {reply}");
}

/// Run `probe-host` on a config file with `[plugin.wasi]` set to `wasi_toml`,
/// with the environment given (nothing else of the test's environment
/// except PATH), and return its stdout and stderr.
fn run_probe_host(
    dir: &Path,
    wasi_toml: &str,
    env: &[(&str, &str)],
    payloads: &[&str],
) -> (String, String) {
    let config = dir.join("probe.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\ncache_dir = \"\"\n\n[[plugin]]\nname = \"probe\"\npath = {:?}\n\n[plugin.wasi]\n{wasi_toml}\n\n[[plugin.binding]]\nsubject = \"probe\"\n",
            plugin_wasm("probe-wasi").display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_probe-host"));
    cmd.arg(&config).arg("probe").args(payloads).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run probe-host");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "probe-host failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn replies(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("reply: "))
        .collect()
}

#[test]
fn only_listed_environment_variables_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, _) = run_probe_host(
        dir.path(),
        "env = [\"PROBE_GRANTED\", \"PROBE_EMPTY\", \"PROBE_GRANTED_BUT_UNSET\"]",
        &[
            ("PROBE_GRANTED", "granted value"),
            ("PROBE_EMPTY", ""),
            ("PROBE_SECRET", "secret value"),
        ],
        &["env"],
    );
    assert_eq!(
        replies(&stdout),
        ["ok:PROBE_EMPTY=\\nPROBE_GRANTED=granted value"],
        "exactly the granted variables that are set; stdout:\n{stdout}"
    );
    assert!(!stdout.contains("secret value"));
}

#[test]
fn stdout_and_stderr_are_inherited_only_when_granted() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = run_probe_host(dir.path(), "", &[], &["print:MARKER-NONE"]);
    assert_eq!(replies(&stdout), ["ok:printed"]);
    assert!(!stdout.contains("MARKER-NONE"), "stdout:\n{stdout}");
    assert!(!stderr.contains("MARKER-NONE"), "stderr:\n{stderr}");

    let (stdout, stderr) = run_probe_host(
        dir.path(),
        "inherit_stdout = true",
        &[],
        &["print:MARKER-OUT"],
    );
    assert!(
        stdout.lines().any(|l| l == "MARKER-OUT"),
        "stdout:\n{stdout}"
    );
    assert!(!stderr.contains("MARKER-OUT"), "stderr:\n{stderr}");

    let (stdout, stderr) = run_probe_host(
        dir.path(),
        "inherit_stderr = true",
        &[],
        &["print:MARKER-ERR"],
    );
    assert!(!stdout.contains("MARKER-ERR"), "stdout:\n{stdout}");
    assert!(
        stderr.lines().any(|l| l == "MARKER-ERR (stderr)"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn relative_preopen_paths_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/a.txt"), "relative").unwrap();
    // The child runs in another working directory: the config's folder decides.
    let (stdout, _) = run_probe_host(
        dir.path(),
        "preopen = [{ host = \"assets\", guest = \"/assets\" }]",
        &[],
        &["read:/assets/a.txt", "env"],
    );
    assert_eq!(
        replies(&stdout),
        ["ok:relative", "ok:"],
        "stdout:\n{stdout}"
    );
}

#[test]
fn a_preopen_that_vanished_stops_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let gone: PathBuf = dir.path().join("gone");
    let runtime = Runtime::new(Duration::from_millis(10)).unwrap();
    let config = PluginConfig {
        wasi: WasiConfig {
            preopen: vec![PreopenConfig {
                host: gone.clone(),
                guest: "/gone".into(),
            }],
            ..WasiConfig::default()
        },
        ..plugin("probe", "probe-wasi", &["probe"], &[])
    };
    let err = Plugin::load(&runtime, &config, 0).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "plugin \"probe\": wasi.preopen {}: cannot open:",
            gone.display()
        )),
        "{text}"
    );
}
