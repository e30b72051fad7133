//! The HTTP endpoint of a stage (axum): `GET /metrics` (Prometheus text) and the
//! Kubernetes probes `GET /livez` (restart me when 503) and `GET /readyz` (count me as
//! ready when 200), each 503 with the reason. They differ on purpose: a broker outage
//! makes every replica unready, but restarting them would not bring the broker back.
//! `GET /healthz` is `/livez` under the name earlier releases had.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::StreamError;

/// What a stage exposes on its endpoint.
pub trait Exposition: Send + Sync + 'static {
    /// Prometheus text format.
    fn render(&self) -> String;
    /// `Err(reason)` when only a restart can help: the stage failed, or made no
    /// progress for `stall` although it could.
    fn liveness(&self, stall: Duration) -> Result<(), String>;
    /// `Ok(status)` when the stage can do its work now, `Err(reason)` otherwise.
    fn readiness(&self) -> Result<String, String>;
}

/// The Prometheus text exposition format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the handlers share: the stage's exposition and its stall bound.
struct Endpoint<M> {
    metrics: Arc<M>,
    stall: Duration,
}

/// Binds `addr` and serves in the background; returns once listening.
pub async fn spawn<M: Exposition>(
    addr: SocketAddr,
    metrics: Arc<M>,
    stall: Duration,
) -> Result<SocketAddr, StreamError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| StreamError::External {
            what: format!("bind the metrics port {addr}"),
            message: e.to_string(),
        })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "metrics and health endpoint");
    let app = Router::new()
        .route("/metrics", get(metrics_page::<M>))
        .route("/livez", get(livez::<M>))
        .route("/healthz", get(livez::<M>))
        .route("/readyz", get(readyz::<M>))
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics, /livez or /readyz\n") })
        .with_state(Arc::new(Endpoint { metrics, stall }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}

async fn metrics_page<M: Exposition>(State(e): State<Arc<Endpoint<M>>>) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        e.metrics.render(),
    )
        .into_response()
}

async fn livez<M: Exposition>(State(e): State<Arc<Endpoint<M>>>) -> Response {
    probe(e.metrics.liveness(e.stall).map(|()| "ok".into()))
}

async fn readyz<M: Exposition>(State(e): State<Arc<Endpoint<M>>>) -> Response {
    probe(e.metrics.readiness())
}

/// A probe's answer: 200 with the status, or 503 with the reason.
fn probe(verdict: Result<String, String>) -> Response {
    match verdict {
        Ok(status) => (StatusCode::OK, format!("{status}\n")).into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stage that is live but not ready.
    struct Stage;

    impl Exposition for Stage {
        fn render(&self) -> String {
            "# TYPE eglr_x counter\neglr_x 1\n".into()
        }
        fn liveness(&self, _: Duration) -> Result<(), String> {
            Ok(())
        }
        fn readiness(&self) -> Result<String, String> {
            Err("no broker connection is up (yet)".into())
        }
    }

    /// The whole response to `request`, sent in two parts.
    async fn ask(addr: SocketAddr, request: &str) -> String {
        let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (a, b) = request.split_at(request.len() / 2);
        socket.write_all(a.as_bytes()).await.expect("first part");
        tokio::time::sleep(Duration::from_millis(50)).await;
        socket.write_all(b.as_bytes()).await.expect("second part");
        let mut text = String::new();
        socket.read_to_string(&mut text).await.expect("response");
        text
    }

    #[tokio::test]
    async fn metrics_probes_and_unknown_paths_answer_as_documented() {
        let addr = spawn(
            "127.0.0.1:0".parse().expect("addr"),
            Arc::new(Stage),
            Duration::ZERO,
        )
        .await
        .expect("listening");
        let get =
            |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let metrics = ask(addr, &get("/metrics")).await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains(PROMETHEUS_TEXT) && metrics.ends_with("eglr_x 1\n"),
            "{metrics}"
        );
        let live = ask(addr, &get("/livez")).await;
        assert!(
            live.starts_with("HTTP/1.1 200") && live.ends_with("ok\n"),
            "{live}"
        );
        let ready = ask(addr, &get("/readyz")).await;
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(
            ready.ends_with("no broker connection is up (yet)\n"),
            "{ready}"
        );
        let other = ask(addr, &get("/nope")).await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    }
}
