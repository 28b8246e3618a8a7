//! The gateway as operators run it: the real `wasmgate` binary, a separate
//! process with its TOML file, that a test starts, kills with SIGKILL and
//! starts again (the in-process [`Running`](crate::Running) cannot be
//! killed without killing the test).
//!
//! The binary is `target/debug/wasmgate` (`cargo test --workspace` builds it
//! before any test runs), or `WASMGATE_BIN`. Each process gets its own
//! folder with its `wasmgate.log` (one log across restarts, each start
//! marked) and, from a [`Config`](wasmgate::Config), its `wasmgate.toml`; or
//! it runs a given file as it is, such as an example operators copy. Its
//! HTTP listener is on a free loopback port; ready means `GET /readyz`
//! answers 200.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::http_get_blocking;
use crate::{WAIT, free_port, repo_root};

/// Where the examples operators copy live.
pub fn examples_dir() -> PathBuf {
    repo_root().join("examples")
}

/// The `wasmgate` binary the process tests run.
pub fn wasmgate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WASMGATE_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("debug").join("wasmgate");
    assert!(
        bin.is_file(),
        "no wasmgate binary at {}: build it with `cargo build -p wasmgate --bin wasmgate` \
         (`cargo test --workspace` does), or set WASMGATE_BIN",
        bin.display()
    );
    bin
}

/// One `wasmgate run` process.
pub struct GatewayProcess {
    dir: tempfile::TempDir,
    config: PathBuf,
    env: Vec<(String, String)>,
    http: SocketAddr,
    child: Option<Child>,
    starts: u32,
}

impl GatewayProcess {
    /// Write `config` (its `http.listen` replaced by a free loopback port)
    /// and start the binary on it; returns once it is ready.
    pub fn start(config: &wasmgate::Config) -> GatewayProcess {
        GatewayProcess::start_with_env(config, &[])
    }

    /// [`GatewayProcess::start`] with `env` added to its environment.
    pub fn start_with_env(config: &wasmgate::Config, env: &[(&str, String)]) -> GatewayProcess {
        let dir = tempfile::tempdir().expect("temp dir for a gateway process");
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut config = config.clone();
        config.http.listen = http.to_string();
        let text = toml::to_string(&config).expect("the config serializes");
        std::fs::write(dir.path().join("wasmgate.toml"), text).expect("write wasmgate.toml");
        let config = dir.path().join("wasmgate.toml");
        let mut gw = GatewayProcess {
            dir,
            config,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            http,
            child: None,
            starts: 0,
        };
        gw.spawn();
        gw.wait_ready(WAIT);
        gw
    }

    /// Start the binary on the config file `file` as it is, with `env` and
    /// `WASMGATE_HTTP` (a free loopback port) in its environment: the file
    /// must take its `http.listen` from `${WASMGATE_HTTP}`.
    pub fn start_file(file: &Path, env: &[(&str, String)]) -> GatewayProcess {
        let dir = tempfile::tempdir().expect("temp dir for a gateway process");
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        env.push(("WASMGATE_HTTP".into(), http.to_string()));
        let mut gw = GatewayProcess {
            dir,
            config: file.to_path_buf(),
            env,
            http,
            child: None,
            starts: 0,
        };
        gw.spawn();
        gw.wait_ready(WAIT);
        gw
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open wasmgate.log");
        let _ = writeln!(log, "===== wasmgate-tests: start {} =====", self.starts);
        let mut command = Command::new(wasmgate_bin());
        // Trace export only as the test says: none from the environment.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        let child = command
            .args(["run", "--no-watch", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", wasmgate_bin().display()));
        self.child = Some(child);
    }

    /// Wait until `GET /readyz` answers 200; panics with the log otherwise.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("wasmgate exited with {status}:\n{}", self.log());
            }
            if matches!(http_get_blocking(self.http, "/readyz"), Ok((200, _))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "wasmgate not ready within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the process and reap it: nothing is drained or flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the process (it drains and exits as in production) and wait
    /// for it; its exit status, `None` when it was not running.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "wasmgate did not exit within {WAIT:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start it again on the same file and port; returns once ready.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready(WAIT);
    }

    /// `GET /status` as JSON.
    pub fn status(&self) -> Result<serde_json::Value, String> {
        let (code, body) = http_get_blocking(self.http, "/status")?;
        if code != 200 {
            return Err(format!("GET /status: {code} {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET /status: {e}: {body}"))
    }

    /// The most memory the running process has held (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.proc_status("VmHWM:")
    }

    /// The running process's OS threads.
    pub fn threads(&self) -> Option<u64> {
        self.proc_status("Threads:")
    }

    /// A number from `/proc/<pid>/status` (units dropped).
    fn proc_status(&self, key: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// `GET path` on its HTTP listener: the status code and body.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        http_get_blocking(self.http, path)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("wasmgate.log")
    }

    /// The folder with its config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
