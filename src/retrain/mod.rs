//! The continuous trainer's round: read the newest lists of the log (a sliding window),
//! refresh the serving model's evaluator (warm start), rerun GRPO for its generator
//! against the refreshed evaluator, gate the candidate, then publish it as the next
//! version of the model store — or keep it aside with the reason it was rejected.
//!
//! Gates, all on the newest `holdout_share` of the window (never trained on):
//! 1. the refreshed evaluator's click AUC / log-loss do not regress past a tolerance
//!    compared with the serving evaluator on the same lists;
//! 2. judged by a **gate judge** — an evaluator refreshed like the candidate's but on a
//!    disjoint part of the window's training lists (`judge_share`, by a hash of
//!    request_id), so not the evaluator the candidate was trained against and blind to
//!    its errors — the candidate's lists beat the serving model's by `score_margin`
//!    (relative Evaluator Score);
//! 3. the candidate does not just copy the upstream order (share of the lists it
//!    generates itself identical to the first L candidates at most `max_copy_share`;
//!    upstream lists served by generator-evaluator selection are fallbacks, not copies).
//!
//! The feature normaliser stays the serving bundle's: warm-started weights were trained
//! on inputs scaled that way.

mod candidate;
mod gate;
mod window;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::check::Problem;
use crate::model::{Bundle, BundleMeta, DataPart, Evaluator, ModelStore, TrainingInfo};
use crate::offline::audit::ModelAudit;
use crate::offline::OfflineError;
use crate::train::{snapshot, TrainError, TrainingConfig};
use candidate::Trained;
pub use gate::OffPolicyComparison;
use gate::{click_metrics, gates, judged, off_policy_comparison};
use window::Window;
pub use window::{count_lists, read_window};

/// Pipeline section `[trainer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerConfig {
    /// Newest lists read per round.
    pub window_lists: usize,
    /// Newest share of the window held out for the gates.
    pub holdout_share: f64,
    /// A round starts once this many lists were logged since the last one.
    pub min_new_lists: usize,
    /// Seconds between checks of the log for new lists.
    pub check_every_s: f64,
    /// Evaluator epochs per round (warm start: a few are enough).
    pub evaluator_epochs: usize,
    /// GRPO updates per round.
    pub grpo_steps: usize,
    /// Updates of the search warm start per round (`training.search_warm_start_steps`
    /// is the first model's): the warm-started generator imitates the refreshed
    /// evaluator's searched lists before GRPO. 0: rounds refine by GRPO alone.
    pub search_warm_start_steps: usize,
    /// Largest accepted drop of the held-out click AUC.
    pub auc_tolerance: f64,
    /// Largest accepted rise of the held-out click log-loss.
    pub logloss_tolerance: f64,
    /// Relative Evaluator Score gain over the serving model required to publish.
    pub score_margin: f64,
    /// Largest accepted share of lists identical to the upstream order.
    pub max_copy_share: f64,
    /// Share of the window's training lists that train the gate judge instead of the
    /// candidate (by a hash of request_id).
    pub judge_share: f64,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            window_lists: 20_000,
            holdout_share: 0.2,
            min_new_lists: 2_000,
            check_every_s: 10.0,
            evaluator_epochs: 3,
            grpo_steps: 150,
            search_warm_start_steps: 0,
            auc_tolerance: 0.01,
            logloss_tolerance: 0.01,
            score_margin: 0.0,
            max_copy_share: 0.9,
            judge_share: 0.3,
        }
    }
}

impl TrainerConfig {
    pub(crate) fn validate(&self) -> Result<(), Problem> {
        if !(self.holdout_share > 0.0 && self.holdout_share < 1.0) {
            return Err((
                "trainer.holdout_share",
                format!("{} is not in (0, 1)", self.holdout_share),
            ));
        }
        if !(self.judge_share > 0.0 && self.judge_share < 1.0) {
            return Err((
                "trainer.judge_share",
                format!("{} is not in (0, 1)", self.judge_share),
            ));
        }
        if !(0.0..=1.0).contains(&self.max_copy_share) {
            return Err((
                "trainer.max_copy_share",
                format!("{} is not in [0, 1]", self.max_copy_share),
            ));
        }
        for (key, v) in [
            ("trainer.window_lists", self.window_lists),
            ("trainer.min_new_lists", self.min_new_lists),
            ("trainer.evaluator_epochs", self.evaluator_epochs),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        for (key, v) in [
            ("trainer.check_every_s", self.check_every_s),
            ("trainer.auc_tolerance", self.auc_tolerance),
            ("trainer.logloss_tolerance", self.logloss_tolerance),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err((key, format!("{v} must be finite and >= 0")));
            }
        }
        if !self.score_margin.is_finite() {
            return Err(("trainer.score_margin", "must be finite".into()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Offline(#[from] OfflineError),
    #[error("model error: {0}")]
    Model(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the window holds {0} lists: too few to train and hold out")]
    TooFewLists(usize),
    #[error("cannot encode the round report (a bug in eglr): {0}")]
    Report(String),
}

impl crate::fault::HasFault for RoundError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            RoundError::Train(e) => e.fault(),
            RoundError::Offline(e) => e.fault(),
            RoundError::Model(e) => e.fault(),
            RoundError::Io { source, .. } => Fault::of_io(source),
            // More lists arrive with time: the next round may have enough.
            RoundError::TooFewLists(_) => Fault::Input,
            RoundError::Report(_) => Fault::Bug,
        }
    }
}

/// Click metrics of an evaluator on the held-out lists.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ClickMetrics {
    pub auc: f64,
    pub logloss: f64,
}

/// What a round measured and decided.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub serving_version: String,
    pub candidate_version: String,
    pub train_lists: usize,
    pub holdout_lists: usize,
    pub serving_evaluator: ClickMetrics,
    pub candidate_evaluator: ClickMetrics,
    /// Held-out Evaluator Score (by the gate judge, an evaluator the candidate was not
    /// trained against) of each model's lists.
    pub serving_score: f64,
    pub candidate_score: f64,
    pub candidate_copy_share: f64,
    /// The candidate's evaluator against the oracle on held-out pools (simulated
    /// logs only): does the evaluator it was trained against order lists like the truth?
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_fidelity: Option<crate::offline::fidelity::Fidelity>,
    pub serving_copy_share: f64,
    /// The candidate against the serving model by the held-out window's uniform
    /// exploration lists (absent without any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub off_policy: Option<OffPolicyComparison>,
    pub published: bool,
    /// Why the candidate was rejected (empty when published).
    pub rejected_because: Vec<String>,
    /// Where the candidate bundle is: the store's new version, or under `rejected/`.
    pub bundle: PathBuf,
    pub seconds: f64,
}

/// Everything a round needs.
#[derive(Debug, Clone)]
pub struct Round<'a> {
    pub store: &'a Path,
    pub logs: &'a str,
    pub trainer: &'a TrainerConfig,
    pub training: &'a TrainingConfig,
    pub list_len: usize,
    pub git_revision: Option<String>,
    /// The simulated world, when the logs come from one (`demo --loop`): the round
    /// report then carries the candidate evaluator's fidelity against the oracle.
    pub world: Option<&'a crate::sim::World>,
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RoundError + '_ {
    move |source| RoundError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One round against the store's newest version (`serving_version`): reads the window,
/// trains a candidate, stages it, judges it, and publishes it or sets it aside.
pub fn run_round(
    round: &Round<'_>,
    serving_version: &str,
    device: &Device,
) -> Result<RoundReport, RoundError> {
    let started = std::time::Instant::now();
    let serving_dir = round.store.join(serving_version);
    let serving = Bundle::load(&serving_dir, device).map_err(TrainError::from)?;
    let window = Window::read(round, &serving.encoder)?;
    let trained = Trained::train(round, &serving, &serving_dir, &window, device)?;
    let version = ModelStore::new(round.store).next_version();
    let staging = stage(
        round,
        &serving,
        serving_version,
        &version,
        &trained,
        &window,
    )?;
    let candidate = Bundle::load(&staging, device).map_err(TrainError::from)?;
    let versions = (serving_version, version.as_str());
    let mut report = judge(
        round, versions, &serving, &candidate, &trained, &window, device,
    )?;
    report.seconds = started.elapsed().as_secs_f64();
    publish(round, &staging, report)
}

/// Writes the candidate as a bundle in the store's staging directory.
fn stage(
    round: &Round<'_>,
    serving: &Bundle,
    serving_version: &str,
    version: &str,
    trained: &Trained,
    window: &Window,
) -> Result<PathBuf, RoundError> {
    let staging = round.store.join(".candidates").join(version);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let meta = BundleMeta {
        version: version.to_owned(),
        training: TrainingInfo {
            data: format!("{} (newest {} lists)", round.logs, window.lists),
            seed: trained.settings.seed,
            part: DataPart::All,
            judge_share: 0.0,
            cold_item_share: 0.0,
            git_revision: round.git_revision.clone(),
            created_unix_ms: crate::clock::unix_millis(),
            metrics: serde_json::json!({
                "warm_start_from": serving_version,
                "evaluator": trained.evaluator_report,
                "ranker": trained.ranker_report,
            }),
        },
        ..serving.meta.clone()
    };
    Bundle::save(
        &staging,
        &meta,
        &trained.evaluator_vars,
        &trained.generator_vars,
    )
    .map_err(TrainError::from)?;
    Ok(staging)
}

/// Measures both models on the hold-out and applies the gates. `versions`: (serving,
/// candidate). The report's duration and bundle path are filled in later.
fn judge(
    round: &Round<'_>,
    versions: (&str, &str),
    serving: &Bundle,
    candidate: &Bundle,
    trained: &Trained,
    window: &Window,
    device: &Device,
) -> Result<RoundReport, RoundError> {
    let meta = &serving.meta;
    let serving_clicks = click_metrics(&serving.evaluator, serving, &window.holdout, device)?;
    let candidate_clicks = click_metrics(&trained.evaluator, serving, &window.holdout, device)?;
    let judge = Bundle {
        evaluator: Evaluator::new(
            &meta.evaluator,
            &serving.encoder,
            meta.max_list_len,
            VarBuilder::from_tensors(snapshot(&trained.gate_judge_vars)?, DType::F32, device),
        )?,
        ..candidate.clone()
    };
    let holdout = &window.holdout_rows;
    let cand_audit = judged(candidate, &judge, holdout, round.list_len, device)?;
    let serv_audit = judged(serving, &judge, holdout, round.list_len, device)?;
    let judge_score = |a: &ModelAudit| a.judge.as_ref().map_or(f64::NAN, |j| j.model_score);
    let (candidate_score, serving_score) = (judge_score(&cand_audit), judge_score(&serv_audit));
    let fidelity = round
        .world
        .map(|w| {
            crate::offline::fidelity::fidelity(
                &candidate.evaluator,
                &serving.encoder,
                &window.holdout,
                w,
                crate::offline::fidelity::Sample::standard(trained.settings.seed),
                device,
            )
        })
        .transpose()
        .map_err(TrainError::from)?;
    let off_policy = off_policy_comparison(&serv_audit, &cand_audit);
    let reasons = gates(
        round.trainer,
        (serving_clicks, candidate_clicks),
        (serving_score, candidate_score),
        cand_audit.copies_input_order,
        off_policy.as_ref(),
    );
    Ok(RoundReport {
        serving_version: versions.0.to_owned(),
        candidate_version: versions.1.to_owned(),
        train_lists: window.train_lists,
        holdout_lists: window.holdout_rows.len(),
        serving_evaluator: serving_clicks,
        candidate_evaluator: candidate_clicks,
        serving_score,
        candidate_score,
        candidate_copy_share: cand_audit.copies_input_order,
        candidate_fidelity: fidelity,
        serving_copy_share: serv_audit.copies_input_order,
        off_policy,
        published: reasons.is_empty(),
        rejected_because: reasons,
        bundle: PathBuf::new(),
        seconds: 0.0,
    })
}

/// Moves the staged candidate, with its `round.json`, to the store's next version when
/// it passed the gates, else under `rejected/`; one rename publishes both at once.
fn publish(
    round: &Round<'_>,
    staging: &Path,
    mut report: RoundReport,
) -> Result<RoundReport, RoundError> {
    report.bundle = if report.published {
        round.store.join(&report.candidate_version)
    } else {
        let millis = crate::clock::unix_millis();
        round
            .store
            .join("rejected")
            .join(format!("{}-{millis}", report.candidate_version))
    };
    let report_path = staging.join("round.json");
    let json = serde_json::to_vec_pretty(&report).map_err(|e| RoundError::Report(e.to_string()))?;
    std::fs::write(&report_path, json).map_err(io(&report_path))?;
    if let Some(parent) = report.bundle.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::rename(staging, &report.bundle).map_err(io(&report.bundle))?;
    Ok(report)
}

#[cfg(test)]
mod tests;
