//! Hot reload: swapping a plugin's component or settings without dropping
//! its subscriptions, and reloading the whole config.
//!
//! Every binding reaches its plugin through a [`PluginSlot`]. A reload loads
//! and checks the new version first — a bad one is refused and the old one
//! keeps running — then swaps it into the slot and bumps the slot's version.
//! Dispatch workers look at the version between batches: the batch in hand
//! finishes on the old instance, the next one starts on a new instance of the
//! new version. Nothing is unsubscribed, so nothing is lost.
//!
//! A whole-config reload (SIGHUP, or the config file changing) swaps changed
//! plugins the same way; when bindings are added, removed or changed the
//! supervisor re-binds: it stops the current workers (after the message in
//! hand) and subscribes the new binding set on the same connection.
//!
//! The parts:
//! - `catalog`: [`Catalog`], the loaded plugins and the binding set built
//!   from the config (the first load and every re-binding build it the same
//!   way).
//! - `apply`: what a reload changes in the catalog — which plugins to swap,
//!   add or drop, whether the bindings changed, which sections need a
//!   restart — summed up in a [`ReloadReport`].
//! - `watch`: the file watcher, debouncing changes into reloads.
//! - [`Reloader`], here: the one entry point every trigger goes through (the
//!   embedding API, SIGHUP, the watcher). It serialises reloads on the
//!   catalog's lock, hands a new binding set to the supervisor and records
//!   the outcome in the status.
//!
//! [`PluginSlot`]: crate::plugin::PluginSlot

mod apply;
mod catalog;
mod watch;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Mutex, mpsc, oneshot};

pub use apply::ReloadReport;
pub use catalog::Catalog;

use crate::GatewayError;
use crate::config::Config;
use crate::plugin::Plugin;
use crate::status::{LastReload, StatusHub};
use crate::supervisor::Command;
use apply::Applied;

/// How long a reload waits for the supervisor to re-bind before reporting
/// anyway; the supervisor may be reconnecting and re-binds once connected.
const REBIND_WAIT: Duration = Duration::from_secs(30);

/// What applies reloads: shared by the embedding API, SIGHUP and the watcher.
/// Cheap to clone; every clone applies to the same catalog. Get one from
/// [`Gateway::reloader`](crate::Gateway::reloader) to reload from another
/// task (a signal handler, an admin endpoint).
#[derive(Clone)]
pub struct Reloader {
    catalog: Arc<Mutex<Catalog>>,
    commands: mpsc::UnboundedSender<Command>,
    status: StatusHub,
}

impl Reloader {
    /// `commands` reaches the supervisor running the catalog's binding set;
    /// `status` is where reloads are recorded.
    pub(crate) fn new(
        catalog: Catalog,
        commands: mpsc::UnboundedSender<Command>,
        status: StatusHub,
    ) -> Reloader {
        Reloader {
            catalog: Arc::new(Mutex::new(catalog)),
            commands,
            status,
        }
    }

    /// The running version of a plugin.
    pub async fn plugin(&self, name: &str) -> Option<Arc<Plugin>> {
        self.catalog.lock().await.plugin(name)
    }

    /// Apply a new config, as [`Gateway::reload`](crate::Gateway::reload)
    /// does. It may be built in code, so it gets the checks
    /// `Gateway::start` makes: credentials moved out of its URLs, validation.
    pub async fn reload(&self, mut config: Config) -> Result<ReloadReport, GatewayError> {
        let mut catalog = self.catalog.lock().await;
        let started = Instant::now();
        let result = config
            .move_url_credentials("config")
            .and_then(|()| config.validate("config"))
            .map_err(anyhow::Error::from)
            .and_then(|()| catalog.reload(config));
        self.finish(&catalog, started, result)
            .await
            .map_err(GatewayError::Reload)
    }

    /// Reload one plugin's component from its file (the old one stays on error).
    pub async fn reload_plugin(&self, name: &str) -> Result<ReloadReport, GatewayError> {
        let mut catalog = self.catalog.lock().await;
        let started = Instant::now();
        let result = swap_plugin(&mut catalog, name);
        self.finish(&catalog, started, result)
            .await
            .map_err(GatewayError::Reload)
    }

    /// Reload the config file at `path` (what SIGHUP does).
    pub async fn reload_file(&self, path: &Path) -> Result<ReloadReport, GatewayError> {
        let mut catalog = self.catalog.lock().await;
        let started = Instant::now();
        let result = load_file(&mut catalog, path);
        self.finish(&catalog, started, result)
            .await
            .map_err(GatewayError::Reload)
    }

    /// Record a reload's outcome in the status and hand a new binding set to
    /// the supervisor, waiting until it has re-bound. Callers still hold the
    /// catalog's lock, so the next reload sees the re-bound set.
    async fn finish(
        &self,
        catalog: &Catalog,
        started: Instant,
        result: anyhow::Result<Applied>,
    ) -> anyhow::Result<ReloadReport> {
        match result {
            Ok((mut report, set)) => {
                report.load_time = started.elapsed();
                if let Some(set) = set {
                    let rebinding = Instant::now();
                    let (done, applied) = oneshot::channel();
                    if self.commands.send(Command::Rebind(set, done)).is_ok()
                        && let Ok(Ok(r)) = tokio::time::timeout(REBIND_WAIT, applied).await
                    {
                        report.bindings_kept = r.kept;
                        report.bindings_started = r.started;
                        report.bindings_stopped = r.stopped;
                    }
                    report.rebind_time = rebinding.elapsed();
                }
                if !report.needs_restart.is_empty() {
                    tracing::warn!(sections = ?report.needs_restart, "these config sections changed but apply only after a restart");
                }
                tracing::info!(?report, "reload applied");
                self.status.set_plugins(catalog.slots());
                let last = last_reload(&report);
                self.status.update(|s| {
                    s.config_reloads += 1;
                    s.last_reload_error = None;
                    s.last_reload = Some(last);
                });
                Ok(report)
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reload refused; the running version stays");
                self.status
                    .update(|s| s.last_reload_error = Some(format!("{e:#}")));
                Err(e)
            }
        }
    }
}

/// What `/status` shows of a reload applied now.
fn last_reload(r: &ReloadReport) -> LastReload {
    LastReload {
        at: SystemTime::now(),
        load_ms: r.load_time.as_secs_f64() * 1e3,
        rebind_ms: r.rebind_time.as_secs_f64() * 1e3,
        swapped: r.swapped.len(),
        added: r.added.len(),
        removed: r.removed.len(),
        bindings_kept: r.bindings_kept,
        bindings_started: r.bindings_started,
        bindings_stopped: r.bindings_stopped,
    }
}

/// A whole-config reload from a file.
fn load_file(catalog: &mut Catalog, path: &Path) -> anyhow::Result<Applied> {
    Config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|c| catalog.reload(c))
}

/// A one-plugin reload, reported like a config reload that swapped it.
fn swap_plugin(catalog: &mut Catalog, name: &str) -> anyhow::Result<Applied> {
    catalog.reload_plugin(name).map(|_| {
        (
            ReloadReport {
                swapped: vec![name.to_string()],
                ..Default::default()
            },
            None,
        )
    })
}
