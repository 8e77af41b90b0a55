//! The operations HTTP listener: `GET /metrics` (OpenMetrics when the
//! scraper asks for it, as Prometheus does; the Prometheus text format 0.0.4
//! otherwise), `GET /livez` (liveness: 200 while the process serves HTTP at
//! all, draining included: an orchestrator must not kill an instance that is
//! finishing its calls) and `GET /readyz` (readiness: 200 when new calls are
//! taken, 503 with the reason otherwise, draining included, so a load
//! balancer stops sending calls). `/healthz` is `/readyz` under its older
//! name.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Metrics;

/// The exposition's content type (OpenMetrics 1.0, which Prometheus asks for).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/healthz", get(readyz))
        .with_state(metrics)
}

/// Whether an `Accept` header takes OpenMetrics text (Prometheus sends
/// `application/openmetrics-text;version=1.0.0,…;q=0.75,text/plain;…`).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|kind| {
            let mut parts = kind.split(';').map(str::trim);
            let media = parts.next();
            // q=0 is "not acceptable" (RFC 9110 §12.4.2).
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media == Some("application/openmetrics-text") && !refused
        })
    })
}

async fn metrics_page(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    if wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, OPENMETRICS)], metrics.render()).into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            metrics.render_prometheus_text(),
        )
            .into_response()
    }
}

async fn livez() -> Response {
    (StatusCode::OK, "alive\n").into_response()
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.not_ready() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Binds now (a busy port is an error at start), serves until `stop`.
pub async fn spawn(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ListenError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })?;
    info!(%addr, "metrics on http://{addr}/metrics, liveness on /livez, readiness on /readyz");
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, router(metrics))
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            warn!(%error, "metrics listener stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::wants_openmetrics;

    #[test]
    fn openmetrics_only_to_those_who_ask() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(wants_openmetrics(Some("application/openmetrics-text")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
        assert!(!wants_openmetrics(None));
    }
}
