//! `wasmgate run`: load the config, run the gateway until SIGINT/SIGTERM, then
//! drain; reload on SIGHUP and (unless `--no-watch`) when the config file or a
//! plugin's `.wasm` changes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::exit;

pub(super) fn run(path: &Path, watch: bool, log_json: bool) -> ExitCode {
    let config = match wasmgate::Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    // Before the runtime: the exporter's HTTP client has its own thread.
    let otlp = match wasmgate::otel::Otlp::from_config(&config.telemetry) {
        Ok(otlp) => otlp,
        Err(e) => {
            eprintln!("error: {}", wasmgate::errors::chain(&e));
            return ExitCode::from(exit::USAGE);
        }
    };
    super::init_logs_exporting(log_json, "info", otlp.as_ref());
    if let Some(otlp) = &otlp {
        tracing::info!(endpoint = otlp.endpoint(), "exporting traces over OTLP");
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        match serve(config, path.to_path_buf(), watch, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let e = wasmgate::errors::anyhow_chain(&e);
                tracing::error!("{e}");
                eprintln!("error: {e}");
                ExitCode::from(exit::FAILURE)
            }
        }
    });
    if let Some(otlp) = otlp {
        otlp.shutdown(std::time::Duration::from_secs(5));
    }
    code
}

async fn serve(
    config: wasmgate::Config,
    path: PathBuf,
    watch: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let gateway = wasmgate::Gateway::start(config, shutdown).await?;
    if watch {
        gateway.watch(path.clone())?;
    }
    let reloader = gateway.reloader();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!(config = %path.display(), "SIGHUP: reloading");
            let _ = reloader.reload_file(&path).await;
        }
    });
    Ok(gateway.wait().await?)
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: draining subscriptions");
    shutdown.cancel();
}
