//! `eglr pipeline`: serve, log and trainer in one process for single-machine users.
//! Each stage is the same code as its own command and keeps its own consumer group,
//! so any of them can later be scaled out as separate processes.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::model::LiveModel;

use super::{
    log, serve, trainer, LogSettings, LogSummary, ServeSettings, ServeSummary, StreamError,
    TrainerSettings, TrainerSummary,
};

/// What each stage reported at exit.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineSummary {
    pub serve: ServeSummary,
    pub log: LogSummary,
    pub trainer: TrainerSummary,
}

/// Runs one stage; if it fails, the others are stopped (they drain and commit as on a
/// signal).
async fn stage<T>(
    run: impl std::future::Future<Output = Result<T, StreamError>>,
    stop_all: Arc<watch::Sender<bool>>,
) -> Result<T, StreamError> {
    let outcome = run.await;
    if outcome.is_err() {
        let _ = stop_all.send(true);
    }
    outcome
}

/// Runs the three stages until `shutdown` turns true; the first stage to fail stops
/// the others.
pub async fn pipeline(
    serving: ServeSettings,
    live: Arc<LiveModel>,
    logging: LogSettings,
    training: TrainerSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<PipelineSummary, StreamError> {
    let (stop_all, stopped) = watch::channel(false);
    let stop_all = Arc::new(stop_all);
    let relay = {
        let (stop_all, mut outer) = (Arc::clone(&stop_all), shutdown);
        tokio::spawn(async move {
            let _ = outer.changed().await;
            let _ = stop_all.send(true);
        })
    };
    let serve = tokio::spawn(stage(
        serve(serving, live, stopped.clone()),
        Arc::clone(&stop_all),
    ));
    let log = tokio::spawn(stage(log(logging, stopped.clone()), Arc::clone(&stop_all)));
    let trainer = tokio::spawn(stage(trainer(training, stopped), Arc::clone(&stop_all)));
    let lost = |_| StreamError::Internal("a pipeline stage panicked");
    let (serve, log, trainer) = (
        serve.await.map_err(lost)?,
        log.await.map_err(lost)?,
        trainer.await.map_err(lost)?,
    );
    relay.abort();
    Ok(PipelineSummary {
        serve: serve?,
        log: log?,
        trainer: trainer?,
    })
}
