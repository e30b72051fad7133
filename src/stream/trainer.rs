//! `eglr trainer`: the continuous trainer as a long-running stage. It watches the list
//! log, runs a round ([`crate::retrain::run_round`]) once `trainer.min_new_lists` new
//! lists were published, and announces a published version on the control topic.
//! Rounds run on a blocking thread of their own: serving never waits for training
//! (a serve instance picks the new version up from the store between batches).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use tokio::sync::watch;

use super::http::Exposition;
use super::kafka::producer_config;
use super::prometheus::{FloatGauge, LabelledCounter, Metrics};
use super::stage::{self, Stage};
use super::StreamError;
use crate::config::PipelineConfig;
use crate::fault::{Fault, HasFault};
use crate::model::ModelStore;
use crate::retrain::{count_lists, run_round, Round, RoundReport};

/// How the trainer runs.
#[derive(Debug, Clone)]
pub struct TrainerSettings {
    pub pipeline: PipelineConfig,
    /// Where published versions are announced; `None`: not announced.
    pub brokers: Option<String>,
    pub git_revision: Option<String>,
    /// The simulated world the logs come from, if any (fidelity in the round report).
    pub world: Option<std::sync::Arc<crate::sim::World>>,
    /// Where training runs (`--device`).
    pub device: Device,
    /// Address of `/metrics`, `/livez` and `/readyz` (`None`: no endpoint).
    pub metrics_addr: Option<SocketAddr>,
}

/// What the trainer's endpoint shows: its rounds and their verdicts, for the alert on
/// rounds rejected in a row and the dashboard's gate panel.
#[derive(Debug)]
pub struct TrainerMetrics {
    /// Rounds by verdict: `published`, `rejected` (by the gate) or `failed` (an error;
    /// retried after the next lists).
    rounds: LabelledCounter,
    /// Rounds rejected or failed since the last published one.
    consecutive_rejections: Gauge,
    /// Lists in the log at the last check.
    logged_lists: Gauge,
    /// When the last round finished and the last version was published (Unix seconds;
    /// 0: none yet).
    last_round: FloatGauge,
    last_published: FloatGauge,
    metrics: Metrics,
}

impl Default for TrainerMetrics {
    fn default() -> Self {
        let mut m = Self {
            rounds: LabelledCounter::new("verdict", &["published", "rejected", "failed"]),
            consecutive_rejections: Gauge::default(),
            logged_lists: Gauge::default(),
            last_round: FloatGauge::default(),
            last_published: FloatGauge::default(),
            metrics: Metrics::default(),
        };
        let mut r = Metrics::default();
        r.register_labelled(
            "eglr_trainer_rounds",
            "Training rounds by verdict: published, rejected by the gate (kept under STORE/rejected/), or failed (retried after the next lists).",
            &m.rounds,
        );
        r.register(
            "eglr_trainer_consecutive_rejections",
            "Rounds rejected or failed since the last published version.",
            m.consecutive_rejections.clone(),
        );
        r.register(
            "eglr_trainer_logged_lists",
            "Lists in the list log at the trainer's last check.",
            m.logged_lists.clone(),
        );
        r.register(
            "eglr_trainer_last_round_timestamp_seconds",
            "When the last round finished (Unix seconds; 0: none yet).",
            m.last_round.clone(),
        );
        r.register(
            "eglr_trainer_last_published_timestamp_seconds",
            "When the last version was published (Unix seconds; 0: none yet).",
            m.last_published.clone(),
        );
        m.metrics = r.with_build_info();
        m
    }
}

impl TrainerMetrics {
    /// A finished round: `Some(published)`, or `None` when it failed.
    fn round(&self, published: Option<bool>) {
        let now = crate::clock::unix_millis() as f64 / 1000.0;
        self.last_round.set(now);
        match published {
            Some(true) => {
                self.rounds.add("published");
                self.consecutive_rejections.set(0);
                self.last_published.set(now);
            }
            Some(false) | None => {
                self.rounds.add(if published.is_some() {
                    "rejected"
                } else {
                    "failed"
                });
                self.consecutive_rejections.inc();
            }
        }
    }
}

impl Exposition for TrainerMetrics {
    fn render(&self) -> String {
        self.metrics.render()
    }

    /// A round runs for minutes on its own thread and failures are retried, so only
    /// the process being up is asked of it.
    fn liveness(&self, _stall: Duration) -> Result<(), String> {
        Ok(())
    }

    fn readiness(&self) -> Result<String, String> {
        Ok("ready".into())
    }
}

/// The rounds run, in order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrainerSummary {
    pub rounds: Vec<RoundReport>,
}

/// The control-topic message of a published version.
#[derive(Debug, Serialize)]
struct Announcement<'a> {
    event: &'static str,
    version: &'a str,
    path: &'a std::path::Path,
    round: &'a RoundReport,
}

/// One round on a blocking thread; a published version is announced.
pub async fn round_once(settings: &TrainerSettings) -> Result<RoundReport, StreamError> {
    let report = train_round(settings).await?;
    if report.published {
        tracing::info!(version = %report.candidate_version, score = report.candidate_score, serving_score = report.serving_score, "published");
        if let Some(brokers) = &settings.brokers {
            if let Err(e) = announce(settings, brokers, &report).await {
                tracing::warn!(error = %e, "version published but not announced");
            }
        }
    } else {
        tracing::info!(reasons = ?report.rejected_because, "candidate rejected");
    }
    Ok(report)
}

async fn train_round(settings: &TrainerSettings) -> Result<RoundReport, StreamError> {
    let p = settings.pipeline.clone();
    let git = settings.git_revision.clone();
    let world = settings.world.clone();
    let device = settings.device.clone();
    let store = ModelStore::new(&p.model.store);
    let serving = store
        .serving()?
        .ok_or_else(|| crate::model::StoreError::Empty(p.model.store.clone()))?;
    let outcome = tokio::task::spawn_blocking(move || {
        let logs = p.logs.dir.display().to_string();
        let round = Round {
            store: &p.model.store,
            logs: &logs,
            trainer: &p.trainer,
            training: &p.training,
            list_len: p.limits.list_len,
            git_revision: git,
            world: world.as_deref(),
        };
        run_round(&round, &serving, &device)
    })
    .await
    .map_err(|_| StreamError::Internal("the training thread panicked"))?;
    Ok(outcome?)
}

async fn announce(
    settings: &TrainerSettings,
    brokers: &str,
    report: &RoundReport,
) -> Result<(), StreamError> {
    let p = &settings.pipeline;
    let producer: FutureProducer = producer_config(&p.kafka, brokers)
        .create()
        .map_err(StreamError::kafka("create the control producer"))?;
    let payload = serde_json::to_vec(&Announcement {
        event: "model_published",
        version: &report.candidate_version,
        path: &report.bundle,
        round: report,
    })
    .map_err(|_| StreamError::Internal("cannot encode the announcement"))?;
    producer
        .send(
            FutureRecord::to(&p.kafka.topics.control)
                .key(&report.candidate_version)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| StreamError::External {
            what: "announce on the control topic".into(),
            message: e.to_string(),
        })?;
    Ok(())
}

/// Runs rounds as lists accumulate until `shutdown` turns true (a round in progress
/// is finished first).
pub async fn trainer(
    settings: TrainerSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<TrainerSummary, StreamError> {
    let endpoint = settings.metrics_addr;
    let stage = TrainerStage {
        settings,
        metrics: Arc::new(TrainerMetrics::default()),
    };
    stage::run(stage, endpoint, shutdown).await
}

/// The trainer stage: it holds no connection between rounds.
struct TrainerStage {
    settings: TrainerSettings,
    metrics: Arc<TrainerMetrics>,
}

impl Stage for TrainerStage {
    type Summary = TrainerSummary;
    type Metrics = TrainerMetrics;
    const NAME: &'static str = "trainer";

    fn metrics(&self) -> Arc<TrainerMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Not consulted: a round runs for minutes, so the trainer's liveness asks only
    /// that the process is up.
    fn stall(&self) -> Duration {
        Duration::from_secs(60)
    }

    /// Counts the logged lists every `trainer.check_every_s` and runs a round once
    /// `trainer.min_new_lists` new ones arrived.
    async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<TrainerSummary, StreamError> {
        let Self { settings, metrics } = self;
        let p = &settings.pipeline;
        let logs: PathBuf = p.logs.dir.clone();
        let every = Duration::from_secs_f64(p.trainer.check_every_s.max(0.1));
        let mut summary = TrainerSummary::default();
        let mut trained_on = 0usize;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(every) => {}
            }
            let dir = logs.clone();
            let logged = match tokio::task::spawn_blocking(move || count_lists(&dir)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot count the logged lists");
                    continue;
                }
                Err(_) => return Err(StreamError::Internal("the log counter panicked")),
            };
            metrics.logged_lists.set(logged as i64);
            if logged < trained_on + p.trainer.min_new_lists {
                continue;
            }
            trained_on = logged;
            tracing::info!(lists = logged, "training round");
            match round_once(&settings).await {
                Ok(report) => {
                    metrics.round(Some(report.published));
                    summary.rounds.push(report);
                }
                // A bug stops the stage (its exit code says so); bad input (a corrupt file,
                // too few lists) or an outside failure is retried after the next lists.
                Err(e) if e.fault() == Fault::Bug => return Err(e),
                Err(e) => {
                    metrics.round(None);
                    tracing::error!(error = %e, fault = ?e.fault(), "training round failed; retried after the next lists")
                }
            }
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_in_a_row_count_until_a_version_is_published() {
        let m = TrainerMetrics::default();
        let text = m.render();
        assert!(
            text.contains("eglr_trainer_rounds_total{verdict=\"rejected\"} 0"),
            "{text}"
        );
        m.round(Some(false));
        m.round(None);
        let text = m.render();
        for line in [
            "eglr_trainer_consecutive_rejections 2",
            "eglr_trainer_rounds_total{verdict=\"failed\"} 1",
            "eglr_trainer_last_published_timestamp_seconds 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        m.round(Some(true));
        let text = m.render();
        assert!(
            text.contains("eglr_trainer_consecutive_rejections 0"),
            "{text}"
        );
        assert!(
            !text.contains("eglr_trainer_last_published_timestamp_seconds 0\n"),
            "{text}"
        );
    }

    #[test]
    fn the_library_exposition_shows_what_the_hand_written_one_did() {
        super::super::prometheus::parsed::assert_same_series(
            include_str!("../../tests/fixtures/metrics/trainer.prom"),
            &TrainerMetrics::default().render(),
        );
    }
}
