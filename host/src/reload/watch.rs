//! Watching the config file and every plugin's component, and turning a
//! settled burst of changes into one reload: of the whole config when the
//! config file is among them, else of each plugin whose file changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Reloader, load_file, swap_plugin};

/// How long changes must stop before reloading: an editor's save or a build
/// writes several events, sometimes several files.
const SETTLE: Duration = Duration::from_millis(200);

impl Reloader {
    /// Watch the folders of the config file and of every plugin (editors and
    /// build tools replace files by renaming, which a watch on the file itself
    /// would miss) and reload after changes settle for 200 ms.
    pub(crate) fn watch(
        &self,
        config_path: PathBuf,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        use notify::{RecursiveMode, Watcher};

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && matches!(
                        event.kind,
                        notify::EventKind::Create(_) | notify::EventKind::Modify(_)
                    )
                {
                    for path in event.paths {
                        let _ = tx.send(path);
                    }
                }
            })?;
        let config_path = config_path.canonicalize().unwrap_or(config_path);
        let mut dirs: Vec<PathBuf> =
            vec![config_path.parent().map(PathBuf::from).unwrap_or_default()];
        {
            let catalog = self
                .catalog
                .try_lock()
                .map_err(|_| anyhow::anyhow!("catalog busy"))?;
            for p in &catalog.config().plugins {
                let path = p.path.canonicalize().unwrap_or_else(|_| p.path.clone());
                if let Some(dir) = path.parent() {
                    dirs.push(dir.to_path_buf());
                }
            }
        }
        dirs.sort();
        dirs.dedup();
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        tracing::info!(?dirs, "watching for config and plugin changes");

        let reloader = self.clone();
        tokio::spawn(async move {
            // Dropping the watcher ends the watch, so the task keeps it.
            let _watcher = watcher;
            loop {
                let first = tokio::select! {
                    _ = stop.cancelled() => return,
                    p = rx.recv() => match p { Some(p) => p, None => return },
                };
                let mut changed = vec![first];
                loop {
                    match tokio::time::timeout(SETTLE, rx.recv()).await {
                        Ok(Some(p)) => changed.push(p),
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                changed.sort();
                changed.dedup();
                reloader.on_change(&config_path, &changed).await;
            }
        });
        Ok(())
    }

    /// One settled burst of changes. The catalog stays locked throughout, so
    /// no other reload lands between the plugins of one burst.
    async fn on_change(&self, config_path: &Path, changed: &[PathBuf]) {
        let config_changed = changed.iter().any(|p| same_file(p, config_path));
        let mut catalog = self.catalog.lock().await;
        if config_changed {
            // The new config covers any plugin files changed with it.
            let started = std::time::Instant::now();
            let result = load_file(&mut catalog, config_path);
            let _ = self.finish(&catalog, started, result).await;
            return;
        }
        let mut names: Vec<String> = changed.iter().flat_map(|p| catalog.plugins_at(p)).collect();
        names.sort();
        names.dedup();
        for name in names {
            let started = std::time::Instant::now();
            let result = swap_plugin(&mut catalog, &name);
            let _ = self.finish(&catalog, started, result).await;
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || (a.canonicalize().ok().is_some() && a.canonicalize().ok() == b.canonicalize().ok())
}
