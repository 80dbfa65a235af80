//! `/healthz` (database and broker reachable) and Prometheus `/metrics`.

use crate::service::Health;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

/// The process-wide metrics recorder (installed once; several in-process recorders in tests
/// share it).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!("metrics recorder not installed: {e}");
                None
            }
        })
        .clone()
}

#[derive(Clone)]
struct AppState {
    pool: sqlx::PgPool,
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    pool: sqlx::PgPool,
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState {
            pool,
            health,
            metrics,
        });
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = r {
        tracing::error!("http server: {e}");
    }
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    let db = sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&s.pool)
        .await
        .is_ok();
    let broker = s.health.broker_connected.load(Ordering::Relaxed);
    let batches = s.health.database_ok.load(Ordering::Relaxed);
    let body = serde_json::json!({ "database": db, "broker": broker, "ingest": batches });
    let code = if db && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    match &s.metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n".to_string(),
        ),
    }
}
