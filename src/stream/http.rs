//! A minimal HTTP endpoint of a stage: `GET /metrics` (Prometheus text) and
//! `GET /healthz` (200 when healthy, 503 with the reason otherwise).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::StreamError;

/// What a stage exposes on its endpoint.
pub trait Exposition: Send + Sync + 'static {
    /// Prometheus text format.
    fn render(&self) -> String;
    /// `Err(reason)` when the stage made no progress for `stall` although it should.
    fn health(&self, stall: Duration) -> Result<(), String>;
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
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/metrics" => ("200 OK", metrics.render()),
                    "/healthz" => match metrics.health(stall) {
                        Ok(()) => ("200 OK", "ok\n".to_owned()),
                        Err(reason) => ("503 Service Unavailable", format!("{reason}\n")),
                    },
                    _ => ("404 Not Found", "try /metrics or /healthz\n".to_owned()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}
