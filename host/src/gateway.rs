//! The embedding API: start a whole gateway from a [`Config`], read its
//! status, register reconnect callbacks, and wait for it to drain.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = wasmgate::Config::load("wasmgate.toml")?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let gateway = wasmgate::Gateway::start(config, shutdown.clone()).await?;
//! gateway.on_reconnect(|event| async move {
//!     tracing::info!(total = event.total_reconnects, "reconnected");
//!     Ok(())
//! }).await;
//! println!("{:?}", gateway.status().state);
//! shutdown.cancel();
//! gateway.wait().await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use anyhow::Context;
use async_nats::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::plugin::Plugin;
use crate::runtime::Runtime;
use crate::status::{Status, StatusHub};
use crate::supervisor::{Binding, Callbacks, ReconnectEvent, Supervisor};

/// A running gateway.
pub struct Gateway {
    status: StatusHub,
    plugins: Vec<Arc<Plugin>>,
    callbacks: Callbacks,
    current: watch::Receiver<Option<Client>>,
    http_addr: Option<SocketAddr>,
    http_stop: CancellationToken,
    http_task: Option<tokio::task::JoinHandle<()>>,
    supervisor: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Cancelled with the caller's token, or when the `Gateway` is dropped.
    stop: CancellationToken,
}

impl Gateway {
    /// Load every plugin, bind the HTTP endpoints, then start the supervisor,
    /// which connects and binds in the background. Fails before touching the
    /// network when the config or a plugin is bad.
    pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Gateway> {
        config.validate("config")?;
        let runtime =
            Runtime::from_config(&config.runtime).context("starting the WebAssembly runtime")?;
        let max_payload = Arc::new(AtomicUsize::new(0));

        let mut plugins = Vec::with_capacity(config.plugins.len());
        for p in &config.plugins {
            plugins.push(Arc::new(Plugin::load(&runtime, p, max_payload.clone())?));
        }
        let specs: Vec<(String, String, Option<String>)> = config
            .plugins
            .iter()
            .flat_map(|p| {
                p.bindings
                    .iter()
                    .map(|b| (p.name.clone(), b.subject.clone(), b.queue.clone()))
            })
            .collect();
        let (status, counters) = StatusHub::new(&specs);
        let mut counters = counters.into_iter();
        let mut bindings = Vec::with_capacity(specs.len());
        for (plugin, p) in plugins.iter().zip(&config.plugins) {
            for b in &p.bindings {
                bindings.push(Binding {
                    plugin: plugin.clone(),
                    subject: b.subject.clone(),
                    queue: b.queue.clone(),
                    counters: counters.next().expect("one counter per binding"),
                });
            }
        }

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
        let (current_tx, current) = watch::channel(None);
        let supervisor = Supervisor::new(
            Arc::new(config),
            bindings.into(),
            status.clone(),
            callbacks.clone(),
            stop.clone(),
            max_payload,
            current_tx,
        );

        let supervisor =
            tokio::spawn(async move { supervisor.run().await.map_err(anyhow::Error::from) });

        Ok(Gateway {
            status,
            plugins,
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

    /// A loaded plugin by name: its publish counters and how it was compiled.
    pub fn plugin(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.iter().find(|p| p.name() == name)
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

    /// Where the status endpoints listen (useful with port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Wait until the supervisor ends: after shutdown has drained everything
    /// (`Ok`), or when reconnect attempts ran out with `on_exhausted = "exit"`.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let result = (&mut self.supervisor)
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("supervisor task failed: {e}")));
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
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Gateway::start(config, shutdown).await?.wait().await
}
