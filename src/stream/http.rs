//! A minimal HTTP endpoint of a stage: `GET /metrics` (Prometheus text) and the
//! Kubernetes probes `GET /livez` (restart me when 503) and `GET /readyz` (count me as
//! ready when 200), each 503 with the reason. They differ on purpose: a broker outage
//! makes every replica unready, but restarting them would not bring the broker back.
//! `GET /healthz` is `/livez` under the name earlier releases had.

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
    /// `Err(reason)` when only a restart can help: the stage failed, or made no
    /// progress for `stall` although it could.
    fn liveness(&self, stall: Duration) -> Result<(), String>;
    /// `Ok(status)` when the stage can do its work now, `Err(reason)` otherwise.
    fn readiness(&self) -> Result<String, String>;
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
                let Some(n) = read_head(&mut socket, &mut buf).await else {
                    return;
                };
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/metrics" => ("200 OK", metrics.render()),
                    "/livez" | "/healthz" => probe(metrics.liveness(stall).map(|()| "ok".into())),
                    "/readyz" => probe(metrics.readiness()),
                    _ => (
                        "404 Not Found",
                        "try /metrics, /livez or /readyz\n".to_owned(),
                    ),
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

/// A probe's status line and body.
fn probe(verdict: Result<String, String>) -> (&'static str, String) {
    match verdict {
        Ok(status) => ("200 OK", format!("{status}\n")),
        Err(reason) => ("503 Service Unavailable", format!("{reason}\n")),
    }
}

/// Reads a request's head into `buf` until its blank line, a full buffer (the request
/// line is all that is used) or 5 s; the bytes read, `None` when the client went away
/// or was too slow. A client may send its request in several segments.
async fn read_head(socket: &mut tokio::net::TcpStream, buf: &mut [u8]) -> Option<usize> {
    let read = async {
        let mut n = 0;
        while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        n
    };
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(n) if n > 0 => Some(n),
        _ => None,
    }
}
