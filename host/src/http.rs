//! The operator endpoints: `GET /metrics` (Prometheus), `GET /status` (the reconnect status as JSON),
//! `GET /healthz` (200 while the process runs) and `GET /readyz` (200 only when
//! connected and every binding is confirmed by the server, else 503).

use anyhow::Context as _;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::status::StatusHub;

pub fn router(status: StatusHub) -> Router {
    let registry = std::sync::Arc::new(crate::telemetry::registry(status.clone()));
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    crate::telemetry::render(&registry),
                )
            }),
        )
        .route("/status", get(status_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(status)
}

async fn status_handler(State(status): State<StatusHub>) -> impl IntoResponse {
    Json(status.snapshot())
}

async fn ready_handler(State(status): State<StatusHub>) -> impl IntoResponse {
    let s = status.snapshot();
    let code = if s.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": s.ready, "state": s.state });
    (code, Json(body))
}

/// Bind `listen` now (so a taken port fails start-up) and serve until `stop`.
pub async fn serve(
    listen: &str,
    status: StatusHub,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("http.listen {listen}: cannot bind"))?;
    let addr = listener.local_addr()?;
    let app = router(status);
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "http server failed");
        }
    });
    Ok((addr, task))
}
