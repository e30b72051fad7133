//! The one shape every stage has, as stream processors give their operators one
//! (arroyo's operators, vector's components): a stage is *started* by its own
//! constructor (connect, open its state, build its metrics), then the runner here
//! serves its endpoint and *runs* it until the shutdown signal, after which the stage
//! *drains* what it took in and *reports* its summary. Serve, log and the trainer differ
//! only in what they start and what a run does.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::http::{self, Exposition};
use super::StreamError;

/// A started stage.
pub trait Stage: Send + Sized + 'static {
    /// What the stage reports when it stops.
    type Summary: Send + 'static;
    /// What its endpoint shows: metrics, liveness, readiness.
    type Metrics: Exposition;
    /// Its name in the logs.
    const NAME: &'static str;

    fn metrics(&self) -> Arc<Self::Metrics>;

    /// How long the stage may make no progress, though it could, before `/livez`
    /// asks for a restart.
    fn stall(&self) -> Duration;

    /// Runs until `shutdown` turns true (or the stage fails), then drains what it took
    /// in: on a failure too, before the error is returned.
    fn run(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = Result<Self::Summary, StreamError>> + Send;
}

/// Serves `stage`'s endpoint on `endpoint` (none: no endpoint) and runs it until
/// `shutdown` turns true.
pub async fn run<S: Stage>(
    stage: S,
    endpoint: Option<SocketAddr>,
    shutdown: watch::Receiver<bool>,
) -> Result<S::Summary, StreamError> {
    if let Some(addr) = endpoint {
        http::spawn(addr, stage.metrics(), stage.stall()).await?;
    }
    tracing::info!(stage = S::NAME, "started");
    let summary = stage.run(shutdown).await?;
    tracing::info!(stage = S::NAME, "stopped");
    Ok(summary)
}
