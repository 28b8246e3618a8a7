//! A JetStream cluster of real `nats-server` processes on loopback, for tests
//! that need replication: R3 streams, leader elections, a node killed,
//! paused, restarted or put in lame duck mode while clients keep publishing.
//!
//! [`Cluster`] owns every process, port and folder. Each [`Node`] has its own
//! client, route and HTTP monitoring ports (all picked at once, so that no
//! two nodes collide), its own temporary JetStream folder and its own config
//! file (`server.conf`, beside the store and the log in the node's folder),
//! in the shape of nats-server's own cluster test template
//! (`server/jetstream_helpers_test.go`). Clustered JetStream refuses to start
//! without `server_name` and `cluster.name`, so both are always set. A node
//! restarts with the same ports, folder and file; dropping the cluster kills
//! every process.
//!
//! `jetstream.sync_interval: always` (fsync every write) is written only for
//! servers that accept it: 2.9 rejects the key (`unknown field
//! "sync_interval"`), 2.10 and later know it. The harness asks the binary
//! once, with `nats-server -c <file> -t` on a small probe file
//! ([`sync_interval_supported`]), rather than by version number. Kill tests on one machine keep the page cache
//! anyway, so the setting changes durability against power loss, not what
//! these tests can observe.
//!
//! Readiness: [`Cluster::start`] returns once every node accepts clients,
//! answers `GET /healthz` with `{"status":"ok"}`, and every node reports the
//! same JetStream meta leader, whose `/jsz` lists every other node as a
//! current peer. `/healthz?js-enabled-only=true` is not enough: it says "ok"
//! as soon as JetStream is switched on, before there is any meta leader. A
//! new R3 stream can still be refused for a moment after that (its peers are
//! picked by the meta leader from what it has heard), so
//! [`create_stream_with_retry`] retries with backoff instead of sleeping.
//!
//! Lame duck: `lame_duck_grace_period: 1s`, `lame_duck_duration: 30s` (the
//! least a config file allows; the grace must be smaller). [`Node::lame_duck`]
//! sends SIGUSR2, which is what `nats-server --signal ldm=<pid>` sends.
//!
//! What to expect (2.9.10 and 2.15.1 on loopback): the cluster forms in
//! 0.2–0.5 s (once 2.4 s). A killed or paused stream leader is replaced only
//! after the Raft election timeout, 4–9 s, so publish with retries
//! ([`publish_with_retry`]) and bound waits at tens of seconds. A lame duck
//! node hands its leaderships over first (no publish had to be retried), tells
//! its clients when the 1 s grace ends and exits 2–2.5 s after the signal.
//! A stream's `cluster.replicas[].current` is the leader's view only: on
//! 2.9.10 a resumed former leader was listed current while its own copy
//! lacked messages acked during its pause, for good; compare copies with
//! [`Node::local_stream_state`].

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::nats_server_bin;

/// `cluster.name` of every cluster the harness starts.
pub const CLUSTER_NAME: &str = "wasmgate-test";

/// How long [`Cluster::start`] waits for the cluster to form.
pub const FORM_WAIT: Duration = Duration::from_secs(30);

/// Ports the harness never uses: the machine's own nats-server.
const RESERVED_PORTS: [u16; 3] = [4222, 6222, 8222];

/// One `nats-server` process of a [`Cluster`].
pub struct Node {
    /// `server_name`: `n1`, `n2`, ...
    pub name: String,
    /// Client port.
    pub port: u16,
    /// Cluster (route) port.
    pub route_port: u16,
    /// HTTP monitoring port.
    pub monitor_port: u16,
    dir: tempfile::TempDir,
    config: String,
    child: Option<Child>,
    paused: bool,
}

/// A JetStream cluster of [`Node`]s that all route to each other.
///
/// [`start`](Self::start), [`wait_ready`](Self::wait_ready) and the
/// [`Node`] controls block the calling thread (for milliseconds, or up to
/// their timeout): in a `multi_thread` Tokio test, wrap the longer waits in
/// `tokio::task::block_in_place`.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

/// Whether this nats-server binary accepts `jetstream.sync_interval`
/// (2.10 and later; 2.9 refuses to start with it). Asked once with `-t`.
pub fn sync_interval_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir for the config probe");
        let conf = dir.path().join("probe.conf");
        let text = format!(
            "jetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
            dir.path().join("js")
        );
        std::fs::write(&conf, text).expect("write probe.conf");
        let out = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .arg("-t")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {} -t: {e}", nats_server_bin().display()));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            true
        } else if said.contains("sync_interval") {
            false
        } else {
            panic!(
                "{} -t refused a minimal JetStream config: {said}",
                nats_server_bin().display()
            )
        }
    })
}

/// The nats-server binary's version, from `nats-server --version`
/// (`nats-server: v2.9.10`): `(major, minor, patch)`.
pub fn server_version() -> (u32, u32, u32) {
    static VERSION: OnceLock<(u32, u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let out = Command::new(nats_server_bin())
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {} --version: {e}", nats_server_bin().display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let parsed = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix('v'))
            .map(|v| {
                v.split(|c: char| !c.is_ascii_digit())
                    .take(3)
                    .map(|n| n.parse().unwrap_or(0))
                    .collect::<Vec<u32>>()
            })
            .filter(|v| v.len() == 3);
        match parsed {
            Some(v) => (v[0], v[1], v[2]),
            None => panic!("no version in `nats-server --version`: {text:?}"),
        }
    })
}

/// `count` distinct free loopback ports: all listeners are held at once, so
/// no two are the same, and all are closed before returning.
fn free_ports(count: usize) -> Vec<u16> {
    let mut listeners = Vec::with_capacity(count);
    while listeners.len() < count {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
        let port = l.local_addr().expect("local address").port();
        if RESERVED_PORTS.contains(&port) {
            continue;
        }
        listeners.push(l);
    }
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// The config file of node `index` (0-based) of a cluster whose nodes have
/// route ports `route_ports`.
fn node_config(
    index: usize,
    port: u16,
    monitor_port: u16,
    route_ports: &[u16],
    store: &Path,
) -> String {
    let routes = route_ports
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != index)
        .map(|(_, p)| format!("nats-route://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sync = if sync_interval_supported() {
        "  sync_interval: always\n"
    } else {
        ""
    };
    format!(
        "server_name: n{n}\n\
         listen: 127.0.0.1:{port}\n\
         http: 127.0.0.1:{monitor_port}\n\
         jetstream {{\n  store_dir: {store:?}\n  max_mem_store: 256MB\n  max_file_store: 1GB\n{sync}}}\n\
         cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n\
         lame_duck_grace_period: 1s\n\
         lame_duck_duration: 30s\n",
        n = index + 1,
        route = route_ports[index],
    )
}

impl Cluster {
    /// Start `n` nodes (at least 2; tests use 3) and wait until they form a
    /// JetStream cluster with a meta leader (see the module docs). Panics
    /// with every node's log if that takes longer than [`FORM_WAIT`].
    pub fn start(n: usize) -> Cluster {
        assert!(n >= 2, "a cluster needs at least 2 nodes, asked for {n}");
        let mut last = String::new();
        // A port picked here can be taken by someone else before the node
        // binds it: then start over on new ports.
        for _ in 0..3 {
            let ports = free_ports(3 * n);
            let (client, rest) = ports.split_at(n);
            let (route, monitor) = rest.split_at(n);
            let mut cluster = Cluster { nodes: Vec::new() };
            for i in 0..n {
                let dir = tempfile::tempdir().expect("temp dir for a cluster node");
                let config = node_config(i, client[i], monitor[i], route, &dir.path().join("js"));
                std::fs::write(dir.path().join("server.conf"), &config).expect("write server.conf");
                cluster.nodes.push(Node {
                    name: format!("n{}", i + 1),
                    port: client[i],
                    route_port: route[i],
                    monitor_port: monitor[i],
                    dir,
                    config,
                    child: None,
                    paused: false,
                });
            }
            // Spawn all before waiting on any: each node's routes dial the
            // others, and the meta group needs a quorum.
            let spawned: Result<(), String> = cluster.nodes.iter_mut().try_for_each(Node::spawn);
            let opened = spawned.and_then(|_| {
                cluster
                    .nodes
                    .iter_mut()
                    .try_for_each(|node| node.wait_port(Duration::from_secs(10)).map(|_| ()))
            });
            match opened {
                Ok(()) => {
                    cluster.wait_ready(FORM_WAIT);
                    return cluster;
                }
                Err(e) => last = format!("{e}\n{}", cluster.logs()),
            }
        }
        panic!("could not start a {n}-node nats-server cluster: {last}");
    }

    /// Every node's client URL, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// [`urls`](Self::urls) joined with commas (a `--server` argument, a
    /// config string).
    pub fn client_urls_csv(&self) -> String {
        self.urls().join(",")
    }

    /// The node whose `server_name` is `name` (e.g. a stream's
    /// `cluster.leader`); panics if there is none.
    pub fn node(&self, name: &str) -> &Node {
        &self.nodes[self.index_of(name)]
    }

    /// [`node`](Self::node), mutably (to kill or restart it).
    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        let i = self.index_of(name);
        &mut self.nodes[i]
    }

    /// Index in [`nodes`](Self::nodes) of the node named `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node named {name:?} in the cluster"))
    }

    /// A client for the test's own use, given every node's URL, that
    /// retries its first connect and reconnects quickly (50 ms growing to
    /// 500 ms between attempts).
    pub async fn client(&self) -> async_nats::Client {
        test_connect_options()
            .connect(self.urls())
            .await
            .expect("test client connects to the cluster")
    }

    /// Wait until every running, unpaused node answers `/healthz` with
    /// "ok", they all name the same meta leader (itself running), and that
    /// leader's `/jsz` lists the other live nodes as current peers. Call it
    /// after [`Node::restart`] or [`Node::resume`] to know the node has
    /// rejoined the meta group (streams: [`wait_stream_current`]). Panics
    /// with every node's log after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut why;
        loop {
            match self.ready() {
                Ok(()) => return,
                Err(e) => why = e,
            }
            if Instant::now() >= deadline {
                panic!(
                    "JetStream cluster not ready after {:?}: {why}\n{}",
                    started.elapsed(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One readiness check (see [`wait_ready`](Self::wait_ready)).
    fn ready(&self) -> Result<(), String> {
        let live: Vec<&Node> = self.nodes.iter().filter(|n| n.is_live()).collect();
        if live.is_empty() {
            return Err("no node is running".into());
        }
        let mut leaders = HashSet::new();
        for node in &live {
            let (code, body) = node.http_get("/healthz")?;
            let health: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if code != 200 || health["status"] != "ok" {
                return Err(format!("{} /healthz: {code} {body}", node.name));
            }
            let meta = node.meta_cluster()?;
            match meta["leader"].as_str() {
                Some(l) if !l.is_empty() => leaders.insert(l.to_string()),
                _ => return Err(format!("{} knows no meta leader: {meta}", node.name)),
            };
        }
        if leaders.len() != 1 {
            return Err(format!("nodes disagree on the meta leader: {leaders:?}"));
        }
        let leader_name = leaders.into_iter().next().unwrap();
        let leader = live
            .iter()
            .find(|n| n.name == leader_name)
            .ok_or_else(|| format!("meta leader {leader_name} is not a live node"))?;
        let meta = leader.meta_cluster()?;
        let current: HashSet<&str> = meta["replicas"]
            .as_array()
            .map(|peers| {
                peers
                    .iter()
                    .filter(|p| p["current"] == true && p["offline"] != true)
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for node in &live {
            if node.name != leader_name && !current.contains(node.name.as_str()) {
                return Err(format!(
                    "meta leader {leader_name} does not list {} as a current peer: {meta}",
                    node.name
                ));
            }
        }
        Ok(())
    }

    /// Every node's log, headed by its name, for panic messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("----- {} log -----\n{}", n.name, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Node {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Base URL of the HTTP monitoring endpoint.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The node's temporary folder: `server.conf`, `server.log`, `js/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node's config file (the same for every restart).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("server.conf")
    }

    /// The text of [`config_path`](Self::config_path).
    pub fn config(&self) -> &str {
        &self.config
    }

    /// The process id, while a process runs (also while paused).
    pub fn process_id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<(), String> {
        use std::fs::OpenOptions;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .map_err(|e| e.to_string())?;
        // One log across restarts, each start marked.
        let _ = writeln!(log, "===== wasmgate-tests: starting {} =====", self.name);
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", nats_server_bin().display()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Wait until the client port accepts a connection; the moment it did.
    /// An exited process is an error (the callers add its log).
    fn wait_port(&mut self, timeout: Duration) -> Result<Instant, String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let Some(child) = self.child.as_mut() else {
                return Err(format!("{} is not running", self.name));
            };
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                self.child = None;
                return Err(format!("{} exited with {status}", self.name));
            }
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(100)).is_ok() {
                return Ok(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(format!(
            "{} did not open port {} within {timeout:?}",
            self.name, self.port
        ))
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.process_id().expect("node is running") as i32)
    }

    /// Whether the process still runs (a paused one does), reaping it if it
    /// has exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                self.paused = false;
                false
            }
            None => false,
        }
    }

    /// Running and not paused, without reaping (for read-only checks).
    fn is_live(&self) -> bool {
        !self.paused
            && self.process_id().is_some_and(|pid| {
                // Signal 0: does the process exist? A zombie still does, so
                // the HTTP checks that follow decide.
                kill(Pid::from_raw(pid as i32), None).is_ok()
            })
    }

    /// Wait up to `timeout` for the process to exit on its own (e.g. after
    /// [`lame_duck`](Self::lame_duck)), reaping it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                self.paused = false;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL the process and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Start the node again (killing it first if it runs) with the same
    /// ports, folder and config file, retrying while a port is still held
    /// by the dying process. Returns the moment its client port first
    /// accepted a connection. It has not necessarily rejoined the cluster
    /// yet: see [`Cluster::wait_ready`].
    pub fn restart(&mut self) -> Instant {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = self
                .spawn()
                .and_then(|_| self.wait_port(Duration::from_secs(10)));
            match attempt {
                Ok(open) => return open,
                Err(_) if Instant::now() < deadline => {
                    self.kill();
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("restart of {} failed: {e}\n{}", self.name, self.log()),
            }
        }
    }

    /// SIGSTOP: the process hangs, its connections (clients, routes) stay
    /// open and silent.
    pub fn pause(&mut self) {
        kill(self.pid(), Signal::SIGSTOP).expect("SIGSTOP");
        self.paused = true;
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&mut self) {
        kill(self.pid(), Signal::SIGCONT).expect("SIGCONT");
        self.paused = false;
    }

    /// Lame duck mode (SIGUSR2, as `nats-server --signal ldm=<pid>` sends):
    /// the node stops accepting clients, hands its Raft leaderships over,
    /// waits the grace period (1 s), closes its clients and exits.
    pub fn lame_duck(&self) {
        kill(self.pid(), Signal::SIGUSR2).expect("SIGUSR2");
    }

    /// The node's log so far, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// GET `path` on the monitoring port: status code and body. Bounded to
    /// about 2 s, so a paused node is an error rather than a hang.
    pub fn http_get(&self, path: &str) -> Result<(u16, String), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.monitor_port));
        http_get_blocking(addr, path).map_err(|e| format!("{} {e}", self.name))
    }

    /// GET `path` and parse the body as JSON.
    pub fn http_json(&self, path: &str) -> Result<serde_json::Value, String> {
        let (code, body) = self.http_get(path)?;
        if code != 200 {
            return Err(format!("{} GET {path}: {code} {body}", self.name));
        }
        serde_json::from_str(&body).map_err(|e| format!("{} GET {path}: {e}: {body}", self.name))
    }

    /// `meta_cluster` of this node's `/jsz`: the meta group's leader and,
    /// on the leader, its peers.
    fn meta_cluster(&self) -> Result<serde_json::Value, String> {
        Ok(self.http_json("/jsz")?["meta_cluster"].clone())
    }

    /// This node's own `state` of `stream` (account `$G`) from its
    /// `/jsz`: messages, bytes, first and last sequence of its local copy,
    /// whichever node leads. `None` if the node does not report the stream.
    pub fn local_stream_state(&self, stream: &str) -> Result<Option<serde_json::Value>, String> {
        let jsz = self.http_json("/jsz?accounts=true&streams=true")?;
        let found = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == stream)
            .map(|s| s["state"].clone());
        Ok(found)
    }

    /// How many messages [`local_stream_state`](Self::local_stream_state)
    /// counts.
    pub fn local_stream_messages(&self, stream: &str) -> Result<Option<u64>, String> {
        Ok(self
            .local_stream_state(stream)?
            .and_then(|s| s["messages"].as_u64()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(pid) = self.process_id() {
            // SIGKILL works on a stopped process too; resume for tidiness.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        }
        self.kill();
    }
}

/// Connect options for test clients of a cluster: first connect retried,
/// reconnects 50 ms apart growing to 500 ms, 1 s connect timeout.
pub fn test_connect_options() -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(1))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50 * attempts as u64).clamp(50, 500))
        })
}

/// How long [`create_stream_with_retry`] keeps trying.
pub const CREATE_WAIT: Duration = Duration::from_secs(20);

/// Create a stream (or get it, if one with this config exists), retrying
/// with backoff (50 ms doubling to 1 s, for up to [`CREATE_WAIT`]) while
/// the cluster cannot place it yet: no meta leader, not enough peers known
/// (`insufficient resources`), no responders, timeouts. Errors in the
/// request itself (bad name, invalid config, a stream of that name with
/// another config, overlapping subjects) panic at once.
pub async fn create_stream_with_retry(
    js: &jetstream::Context,
    config: stream::Config,
) -> stream::Stream {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::CreateStreamErrorKind as Kind;
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(50);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let err = match js.create_stream(config.clone()).await {
            Ok(stream) => return stream,
            Err(e) => e,
        };
        let permanent = match err.kind() {
            Kind::EmptyStreamName | Kind::InvalidStreamName | Kind::DomainAndExternalSet => true,
            Kind::JetStream(e) => [
                ErrorCode::STREAM_NAME_EXIST,
                ErrorCode::STREAM_INVALID_CONFIG,
                ErrorCode::STREAM_SUBJECT_OVERLAP,
            ]
            .contains(&e.error_code()),
            _ => false,
        };
        if permanent || started.elapsed() + backoff > CREATE_WAIT {
            panic!(
                "create stream {:?} failed after {attempts} attempts in {:?}: {err}",
                config.name,
                started.elapsed()
            );
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// JetStream publish with a `Nats-Msg-Id`, retried (100 ms apart) until the
/// stream acks it or `timeout` passes. The id makes a retry of a message that
/// was in fact stored a duplicate the stream drops (`PubAck.duplicate`), so
/// the stream holds each id once. Returns the ack and how many attempts it
/// took. Give `js` a short timeout ([`jetstream::Context::set_timeout`]) so
/// that an ack lost with a dying leader is retried soon.
pub async fn publish_with_retry(
    js: &jetstream::Context,
    subject: &str,
    msg_id: &str,
    payload: bytes::Bytes,
    timeout: Duration,
) -> (jetstream::publish::PublishAck, u32) {
    let started = tokio::time::Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        let result = match js
            .publish_with_headers(subject.to_string(), headers, payload.clone())
            .await
        {
            Ok(ack) => ack.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(ack) => return (ack, attempts),
            Err(e) if started.elapsed() >= timeout => panic!(
                "publish {msg_id} to {subject} not acked after {attempts} attempts in {:?}: {e}",
                started.elapsed()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Poll `stream`'s info until it has a leader and all its followers
/// (`num_replicas - 1`) are listed as current and online, and (if given) it
/// holds `messages` messages; returns that info. While a node is down the
/// leader keeps listing it, not current: this waits for it to be back and
/// caught up. Panics with the last info (or error) after `timeout`.
///
/// `current` is the leader's view, not a comparison of copies: 2.9.10 has
/// listed a resumed former leader as current while its copy lacked
/// messages acked during its pause. To check a node's copy itself, use
/// [`wait_local_messages`] or [`Node::local_stream_state`].
pub async fn wait_stream_current(
    js: &jetstream::Context,
    stream: &str,
    messages: Option<u64>,
    timeout: Duration,
) -> stream::Info {
    let started = tokio::time::Instant::now();
    loop {
        let last = match js.get_stream(stream).await {
            Ok(mut s) => match s.info().await {
                Ok(info) => {
                    let followers = info.config.num_replicas.saturating_sub(1);
                    let ok = info.cluster.as_ref().is_some_and(|c| {
                        c.leader.as_deref().is_some_and(|l| !l.is_empty())
                            && c.replicas.len() == followers
                            && c.replicas.iter().all(|p| p.current && !p.offline)
                    }) && messages.is_none_or(|m| info.state.messages == m);
                    if ok {
                        return info.clone();
                    }
                    format!("{:?} with {} messages", info.cluster, info.state.messages)
                }
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= timeout {
            panic!(
                "stream {stream} not current after {:?}: {last}",
                started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Poll `node`'s own `/jsz` until it holds `messages` messages of `stream`
/// (its local copy, whichever node leads); panics after `timeout`.
pub async fn wait_local_messages(node: &Node, stream: &str, messages: u64, timeout: Duration) {
    let started = tokio::time::Instant::now();
    loop {
        let last = node.local_stream_state(stream);
        if let Ok(Some(state)) = &last
            && state["messages"].as_u64() == Some(messages)
        {
            return;
        }
        if started.elapsed() >= timeout {
            panic!(
                "{}'s copy of {stream} is {last:?}, not {messages} messages, after {:?}\n{}",
                node.name,
                started.elapsed(),
                node.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stream's leader (`server_name`), from its info; `None` while it has
/// none or the request fails.
pub async fn stream_leader(js: &jetstream::Context, stream: &str) -> Option<String> {
    let mut s = js.get_stream(stream).await.ok()?;
    let info = s.info().await.ok()?;
    info.cluster
        .as_ref()?
        .leader
        .clone()
        .filter(|l| !l.is_empty())
}

/// GET `path` on `addr` over plain HTTP/1.0, blocking: status code and body.
/// Bounded to about 2 s, so a paused process is an error rather than a hang.
pub(crate) fn http_get_blocking(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let what = |e: std::io::Error| format!("GET {path}: {e}");
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(what)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(what)?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(what)?;
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(what)?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).map_err(what)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status line in {head:?}"))?;
    Ok((code, body.to_string()))
}
