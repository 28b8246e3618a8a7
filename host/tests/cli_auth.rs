//! `wasmgate run`, the real binary, against a nats-server that requires a
//! user and password: a refused start ends with exit code 1 and one line
//! naming the setting, and neither a refused nor an accepted run shows a
//! secret anywhere in its output at `RUST_LOG=trace` (async-nats's own
//! connect tracing included) or in `/status`.
//!
//! Here rather than in the tests crate because only the host's tests get
//! `CARGO_BIN_EXE_wasmgate`; the server is started by a few lines of our
//! own (the harness in `tests/src` needs that crate).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/plugins.rs"]
#[allow(dead_code)]
mod plugins;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use std::time::{Duration, Instant};

use plugins::{plugin_wasm, repo_root};

const USER: &str = "gw";
const PASSWORD: &str = "pw-right-3f9c1d";

/// A nats-server requiring `USER` / `PASSWORD`, on a free loopback port.
struct Server {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

fn nats_server_bin() -> PathBuf {
    let candidates = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            PathBuf::from("/usr/sbin/nats-server"),
            repo_root().join(".local/bin/nats-server"),
        ]);
    for p in candidates {
        if p.is_file() {
            return p;
        }
    }
    panic!("nats-server not found: set NATS_SERVER_BIN or run `bash scripts/setup.sh`");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("server.conf");
        std::fs::write(
            &conf,
            format!(
                "authorization {{ users = [ {{ user: {USER}, password: \"{PASSWORD}\" }} ] }}\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not open port {port}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Server {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write a config with `nats` as its `[nats]` body and the uppercase plugin.
fn config(dir: &Path, nats: &str, http: &str) -> PathBuf {
    let path = dir.join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "{nats}\n[http]\nlisten = \"{http}\"\n[runtime]\ncache_dir = \"\"\n\
             [reconnect]\nmax_attempts = 30\ninitial_backoff = \"50ms\"\n\
             [[plugin]]\nname = \"upper\"\npath = \"{}\"\n[[plugin.binding]]\nsubject = \"in.>\"\n",
            plugin_wasm("uppercase").display()
        ),
    )
    .unwrap();
    path
}

/// `wasmgate run` on `config` at `RUST_LOG=trace`. Its output goes to files
/// beside the config (trace output would fill a pipe nobody reads while the
/// test polls).
fn run(config: &Path) -> Command {
    let dir = config.parent().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmgate"));
    cmd.args(["run", "--no-watch", "--config"])
        .arg(config)
        .env("RUST_LOG", "trace")
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
    cmd
}

/// Wait for `child`, started by [`run`] on a config in `dir`, to exit by
/// itself within `limit`; its status and output.
fn wait(mut child: Child, dir: &Path, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wasmgate run did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(dir.join("stdout")).unwrap(),
        stderr: std::fs::read(dir.join("stderr")).unwrap(),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_secret(all: &str, secrets: &[&str]) {
    for s in secrets {
        if let Some(at) = all.find(s) {
            let line = all[..at].lines().count();
            panic!("secret {s:?} in the output, line {line}");
        }
    }
}

/// Start `wasmgate run` on a config with `nats` as its `[nats]` part (and
/// `env`) in `dir`, and wait for it to exit by itself.
fn run_to_exit(dir: &Path, nats: &str, env: &[(&str, &str)]) -> Output {
    let cfg = config(dir, nats, "");
    let mut cmd = run(&cfg);
    cmd.envs(env.iter().copied());
    wait(cmd.spawn().unwrap(), dir, Duration::from_secs(30))
}

/// A refused start: exit 1, and one stderr line `error: <want>`.
fn assert_refused(out: &Output, want: &str, secrets: &[&str]) {
    let all = text(out);
    assert_no_secret(&all, secrets);
    assert!(
        all.lines().count() > 20,
        "trace logging was on (the client's own connect tracing included)"
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Log lines (trace here) go to stderr too; the error is the one unprefixed line.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors, [format!("error: {want}")]);
}

#[test]
fn refused_starts_exit_1_with_one_line_and_no_secret_at_trace() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let port = server.port;

    // A wrong password written into the URL.
    let wrong = "pw-wrong-77aa01";
    let url = format!("nats://{USER}:{wrong}@127.0.0.1:{port}");
    let out = run_to_exit(dir.path(), &format!("[nats]\nservers = [\"{url}\"]"), &[]);
    let refused = "cannot connect to NATS: authorization violation: the server refused";
    assert_refused(
        &out,
        &format!("{refused} nats.auth.user \"gw\" with nats.auth.password"),
        &[wrong],
    );

    // A token read from the environment.
    let token = "tok-from-env-5e21b0";
    let nats = format!(
        "[nats]\nservers = [\"nats://127.0.0.1:{port}\"]\n\
         [nats.auth]\ntoken = \"${{WASMGATE_TEST_TOKEN}}\""
    );
    let out = run_to_exit(dir.path(), &nats, &[("WASMGATE_TEST_TOKEN", token)]);
    assert_refused(&out, &format!("{refused} nats.auth.token"), &[token]);

    // An nkey seed the server does not know.
    let key = nkeys::KeyPair::new_user();
    let seed = key.seed().unwrap();
    let nats = format!(
        "[nats]\nservers = [\"nats://127.0.0.1:{port}\"]\n[nats.auth]\nnkey_seed = \"{seed}\""
    );
    let out = run_to_exit(dir.path(), &nats, &[]);
    let public = key.public_key();
    assert_refused(
        &out,
        &format!("{refused} nats.auth.nkey_seed (public key {public})"),
        &[&seed],
    );

    // The variable unset: a config error (exit 2) naming key and variable.
    let nats = format!(
        "[nats]\nservers = [\"nats://127.0.0.1:{port}\"]\n\
         [nats.auth]\ntoken = \"${{WASMGATE_TEST_UNSET_TOKEN}}\""
    );
    let out = run_to_exit(dir.path(), &nats, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nats.auth.token: environment variable WASMGATE_TEST_UNSET_TOKEN is not set"),
        "{err}"
    );
}

/// `GET path` on `addr`: the whole response, headers and body.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn an_accepted_run_at_trace_shows_no_secret() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let cfg = config(
        dir.path(),
        &format!(
            "[nats]\nservers = [\"nats://{USER}:{PASSWORD}@127.0.0.1:{}\"]",
            server.port
        ),
        &http,
    );
    let child = run(&cfg).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http_get(&http, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"));
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not become ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = http_get(&http, "/status").unwrap();
    assert!(status.contains("\"state\":\"connected\""), "{status}");
    assert_no_secret(&status, &[PASSWORD]);

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = wait(child, dir.path(), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "drained and exited cleanly");
    let all = text(&out);
    assert!(
        all.contains("write operation: CONNECT"),
        "the client's CONNECT (which carries the password) was traced"
    );
    assert_no_secret(&all, &[PASSWORD]);
}
