//! The embedding API: start a whole gateway from a [`Config`], read its
//! status, register reconnect callbacks, reload it, and wait for it to
//! drain. The crate docs show it in use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use anyhow::Context;
use async_nats::Client;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::plugin::{LoadError, Plugin};
use crate::reload::{Catalog, ReloadReport, Reloader};
use crate::runtime::Runtime;
use crate::status::{Status, StatusHub};
use crate::supervisor::{Callbacks, ReconnectEvent, Supervisor, SupervisorError};

/// Why a gateway could not start, could not reload, or stopped with an
/// error. Each variant keeps its cause as the error's source.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The config is invalid (names the file, key and reason).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A plugin cannot be loaded (names the plugin and its file).
    #[error(transparent)]
    Plugin(#[from] LoadError),
    /// The connection gave up: attempts used up, or the server refused the
    /// gateway (credentials, TLS) with `on_exhausted = "exit"`.
    #[error(transparent)]
    Connection(#[from] SupervisorError),
    /// A reload was refused; the running version stays.
    #[error(transparent)]
    Reload(anyhow::Error),
    /// Anything else: the WebAssembly runtime, the HTTP listener, a task
    /// that failed.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A running gateway: its plugins loaded, its HTTP endpoints bound (when
/// `[http] listen` is set), and the supervisor connecting and binding in the
/// background.
///
/// Cancelling the token given to [`start`](Self::start) drains it: bindings
/// unsubscribe, in-flight handlers finish; [`wait`](Self::wait) returns once
/// that is done. Dropping a `Gateway` without `wait` drains it too, in the
/// background.
pub struct Gateway {
    reloader: Reloader,
    status: StatusHub,
    callbacks: Callbacks,
    current: watch::Receiver<Option<Client>>,
    http_addr: Option<SocketAddr>,
    http_stop: CancellationToken,
    http_task: Option<tokio::task::JoinHandle<()>>,
    supervisor: tokio::task::JoinHandle<Result<(), SupervisorError>>,
    /// Cancelled with the caller's token, or when the `Gateway` is dropped.
    stop: CancellationToken,
}

impl Gateway {
    /// Load every plugin, bind the HTTP endpoints, then start the supervisor,
    /// which connects and binds in the background. Fails before touching the
    /// network when the config or a plugin is bad. A config built in code is
    /// validated here as [`Config::load`] validates a file (credentials in
    /// server URLs are moved into `[nats.auth]` first). Must be called
    /// within a Tokio runtime.
    pub async fn start(
        mut config: Config,
        shutdown: CancellationToken,
    ) -> Result<Gateway, GatewayError> {
        // A config built in code may still carry credentials in its URLs.
        config.move_url_credentials("config")?;
        config.validate("config")?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let runtime =
            Runtime::from_config(&config.runtime).context("starting the WebAssembly runtime")?;
        let max_payload = Arc::new(AtomicUsize::new(0));
        let cache = runtime.cache_handle();
        let (current_tx, current) = watch::channel(None);
        let nats = crate::runtime::NatsLink::new(current.clone());
        let (catalog, set) = Catalog::load(runtime, max_payload.clone(), nats, config.clone())
            .map_err(|e| match e.downcast::<LoadError>() {
                Ok(load) => GatewayError::Plugin(load),
                Err(other) => GatewayError::Other(other),
            })?;
        let status = StatusHub::new(
            &set.specs,
            set.bindings.iter().map(|b| b.counters.clone()).collect(),
        )
        .with_compile_cache(cache);
        status.set_plugins(catalog.slots());
        let bindings = set.bindings;

        let http_stop = CancellationToken::new();
        let (http_addr, http_task) = if config.http.listen.is_empty() {
            (None, None)
        } else {
            let (addr, task) =
                crate::http::serve(&config.http.listen, status.clone(), http_stop.clone()).await?;
            tracing::info!(%addr, "status endpoints listening");
            (Some(addr), Some(task))
        };

        // Dropping the Gateway without `wait` still drains it, in the background.
        let stop = shutdown.child_token();
        let callbacks: Callbacks = Default::default();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let supervisor = Supervisor::new(
            Arc::new(config),
            bindings,
            commands_rx,
            status.clone(),
            callbacks.clone(),
            stop.clone(),
            max_payload,
            current_tx,
        );

        let supervisor = tokio::spawn(supervisor.run());

        Ok(Gateway {
            reloader: Reloader::new(catalog, commands, status.clone()),
            status,
            callbacks,
            current,
            http_addr,
            http_stop,
            http_task,
            supervisor,
            stop,
        })
    }

    /// The current status, with fresh counters.
    pub fn status(&self) -> Status {
        self.status.snapshot()
    }

    /// The running version of a plugin: its publish counters and how it was compiled.
    pub async fn plugin(&self, name: &str) -> Option<Arc<Plugin>> {
        self.reloader.plugin(name).await
    }

    /// A receiver that wakes on every status change (state, bindings, errors).
    pub fn status_watch(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Wait until `pred` holds for the status, or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Status) -> bool,
    ) -> anyhow::Result<Status> {
        let mut rx = self.status.subscribe();
        let result = tokio::time::timeout(timeout, rx.wait_for(|s| pred(s))).await;
        match result {
            Ok(Ok(s)) => Ok(s.clone()),
            Ok(Err(_)) => anyhow::bail!("the gateway stopped"),
            Err(_) => anyhow::bail!(
                "status condition not met within {timeout:?}; status: {:?}",
                self.status()
            ),
        }
    }

    /// Wait until connected with every binding confirmed.
    pub async fn ready(&self, timeout: Duration) -> anyhow::Result<Status> {
        self.wait_for(timeout, |s| s.ready).await
    }

    /// Run `callback` after every reconnect, after the bindings are restored,
    /// in registration order. An error is logged and recorded; it does not
    /// undo the reconnect or stop later callbacks.
    pub async fn on_reconnect<F, Fut>(&self, callback: F)
    where
        F: Fn(ReconnectEvent) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.callbacks
            .lock()
            .await
            .push(Arc::new(move |event| Box::pin(callback(event))));
    }

    /// The NATS client in use, when connected.
    pub fn client(&self) -> Option<Client> {
        self.current.borrow().clone()
    }

    /// Apply a new config without a restart: changed plugins are loaded and
    /// checked first (a bad one refuses the whole reload and the old config
    /// keeps running), then swapped in between batches; a changed binding set
    /// is re-bound on the current connection. `[nats]`, `[health]`,
    /// `[reconnect]`, `[http]` and `[runtime]` changes need a restart and are
    /// reported in `needs_restart`.
    pub async fn reload(&self, config: Config) -> Result<ReloadReport, GatewayError> {
        self.reloader.reload(config).await
    }

    /// Reload one plugin's `.wasm` from its file (the old version stays on error).
    pub async fn reload_plugin(&self, name: &str) -> Result<ReloadReport, GatewayError> {
        self.reloader.reload_plugin(name).await
    }

    /// Reload the config file at `path` (what SIGHUP does).
    pub async fn reload_file(&self, path: &std::path::Path) -> Result<ReloadReport, GatewayError> {
        self.reloader.reload_file(path).await
    }

    /// Watch the config file and every plugin's `.wasm` and reload on change
    /// (debounced). Runs until the gateway stops.
    pub fn watch(&self, config_path: std::path::PathBuf) -> anyhow::Result<()> {
        self.reloader.watch(config_path, self.stop.clone())
    }

    /// A handle that reloads this gateway from other tasks (a SIGHUP handler).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Where the status endpoints listen (useful with port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Wait until the supervisor ends: after shutdown has drained everything
    /// (`Ok`), or when reconnect attempts ran out with `on_exhausted = "exit"`.
    pub async fn wait(mut self) -> Result<(), GatewayError> {
        let result = match (&mut self.supervisor).await {
            Ok(result) => result.map_err(GatewayError::from),
            Err(e) => Err(GatewayError::Other(
                anyhow::Error::new(e).context("the supervisor task failed"),
            )),
        };
        self.http_stop.cancel();
        if let Some(task) = self.http_task.take() {
            let _ = task.await;
        }
        result
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
        self.http_stop.cancel();
    }
}

/// Start a gateway and run it until `shutdown` is cancelled and everything
/// has drained (or until reconnects are exhausted with `on_exhausted = "exit"`).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), GatewayError> {
    Gateway::start(config, shutdown).await?.wait().await
}
