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

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::check::Problem;
use crate::list_log::{LogReader, LoggedList};
use crate::model::{Bundle, BundleMeta, DataPart, Evaluator, Ranker, TrainingInfo};
use crate::offline::audit::{AuditOptions, Auditor, ModelAudit};
use crate::offline::{encode_rows, OfflineError};
use crate::train::{
    is_validation, snapshot, train_evaluator, train_ranker, validate, Example, TrainError,
    TrainingConfig,
};

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
pub enum TrainerError {
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
    pub published: bool,
    /// Why the candidate was rejected (empty when published).
    pub rejected_because: Vec<String>,
    /// Where the candidate bundle is: the store's new version, or under `rejected/`.
    pub bundle: PathBuf,
    pub seconds: f64,
}

/// Published list-log files of `logs` (a directory or glob) with their row counts
/// (from the Parquet footers, nothing decoded), oldest publish first.
fn files_by_publish_time(logs: &str) -> Result<Vec<(PathBuf, usize)>, TrainerError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = LogReader::open(logs, 1).map_err(TrainError::from)?;
    let mut files = Vec::new();
    for path in reader.files() {
        let published = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(io(path))?;
        let file = std::fs::File::open(path).map_err(io(path))?;
        let rows = SerializedFileReader::new(file)
            .map_err(|e| {
                TrainError::from(crate::list_log::LogError::BadFile {
                    path: path.clone(),
                    message: e.to_string(),
                })
            })?
            .metadata()
            .file_metadata()
            .num_rows()
            .max(0) as usize;
        files.push((published, path.clone(), rows));
    }
    // Publish time, not name: instances of the logger name their files apart.
    files.sort();
    Ok(files.into_iter().map(|(_, p, n)| (p, n)).collect())
}

/// The newest `window` lists of the log (by publish time of their files), oldest
/// first; only the newest files that hold them are read, one batch at a time, and
/// duplicates are removed on read.
pub fn read_window(logs: &str, window: usize) -> Result<Vec<LoggedList>, TrainerError> {
    let files = files_by_publish_time(logs)?;
    let mut newest = Vec::new();
    let mut rows_in = 0;
    for (path, rows) in files.into_iter().rev() {
        if rows_in >= window {
            break;
        }
        rows_in += rows;
        newest.push(path);
    }
    newest.reverse();
    let reader = LogReader::from_files(newest, 4096).map_err(TrainError::from)?;
    let mut rows: std::collections::VecDeque<LoggedList> = std::collections::VecDeque::new();
    for batch in reader.batches() {
        for row in batch.map_err(TrainError::from)? {
            if rows.len() == window {
                rows.pop_front();
            }
            rows.push_back(row);
        }
    }
    Ok(rows.into())
}

/// Lists in the log (from the files' footers, nothing decoded); 0 when there is no
/// log yet.
pub fn count_lists(logs: &Path) -> Result<usize, TrainerError> {
    match files_by_publish_time(&logs.display().to_string()) {
        Ok(files) => Ok(files.iter().map(|(_, n)| n).sum()),
        Err(TrainerError::Train(TrainError::Log(crate::list_log::LogError::NoFiles(_)))) => Ok(0),
        Err(e) => Err(e),
    }
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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainerError + '_ {
    move |source| TrainerError::Io {
        path: path.to_owned(),
        source,
    }
}

fn click_metrics(
    evaluator: &Evaluator,
    bundle: &Bundle,
    holdout: &[Example],
    device: &Device,
) -> Result<ClickMetrics, TrainError> {
    let v = validate(
        evaluator,
        &bundle.meta.evaluator,
        holdout,
        &bundle.encoder,
        device,
    )?;
    Ok(ClickMetrics {
        auc: v.auc,
        logloss: v.logloss,
    })
}

/// Held-out audit of `model`'s lists judged by `judge`.
fn judged(
    model: &Bundle,
    judge: &Bundle,
    holdout: &[LoggedList],
    list_len: usize,
    device: &Device,
) -> Result<ModelAudit, OfflineError> {
    let opts = AuditOptions {
        batch: 512,
        list_len,
        bootstrap: 0,
        seed: 0,
        tolerance: f64::INFINITY,
    };
    let mut auditor = Auditor::new(model, Some(judge), &opts);
    for chunk in holdout.chunks(512) {
        auditor.add(chunk, "held-out window", device)?;
    }
    Ok(auditor.finish())
}

/// One round against the store's newest version (`serving`): trains, gates, publishes
/// or rejects.
pub fn run_round(
    round: &Round<'_>,
    serving_version: &str,
    device: &Device,
) -> Result<RoundReport, TrainerError> {
    let started = std::time::Instant::now();
    let serving =
        Bundle::load(&round.store.join(serving_version), device).map_err(TrainError::from)?;
    let rows = read_window(round.logs, round.trainer.window_lists)?;
    let holdout_len = ((rows.len() as f64) * round.trainer.holdout_share).ceil() as usize;
    if rows.len() < 10 || holdout_len == 0 || holdout_len >= rows.len() {
        return Err(TrainerError::TooFewLists(rows.len()));
    }
    let (train_rows, holdout_rows) = rows.split_at(rows.len() - holdout_len);
    let enc = &serving.encoder;
    let train_examples = encode_rows(train_rows, enc, round.logs)?;
    let holdout = encode_rows(holdout_rows, enc, round.logs)?;
    // Early stopping inside the training part: the hold-out only judges.
    let validation_share = round.training.validation_share.max(0.05);
    let (mut fit, mut early, mut judge_fit) = (Vec::new(), Vec::new(), Vec::new());
    for (row, e) in train_rows.iter().zip(train_examples) {
        if is_validation(&row.request_id, validation_share) {
            early.push(e);
        } else if DataPart::Judge.contains(&row.request_id, round.trainer.judge_share) {
            judge_fit.push(e);
        } else {
            fit.push(e);
        }
    }
    if fit.is_empty() || judge_fit.is_empty() {
        return Err(TrainerError::TooFewLists(rows.len()));
    }
    let settings = TrainingConfig {
        evaluator_epochs: round.trainer.evaluator_epochs,
        grpo_steps: round.trainer.grpo_steps,
        ..round.training.clone()
    };
    let max_len = serving.meta.max_list_len;
    let serving_dir = round.store.join(serving_version);
    let (evaluator, evaluator_vars) =
        warm_started(&serving_dir, "evaluator.safetensors", device, |vb| {
            Evaluator::new(&serving.meta.evaluator, enc, max_len, vb)
        })?;
    let evaluator_report = train_evaluator(
        &evaluator,
        &evaluator_vars,
        &serving.meta.evaluator,
        &settings,
        &fit,
        &early,
        enc,
        device,
    )?;
    // The gate judge: the same warm start, trained on the judge part only.
    let (gate_judge, gate_judge_vars) =
        warm_started(&serving_dir, "evaluator.safetensors", device, |vb| {
            Evaluator::new(&serving.meta.evaluator, enc, max_len, vb)
        })?;
    train_evaluator(
        &gate_judge,
        &gate_judge_vars,
        &serving.meta.evaluator,
        &settings,
        &judge_fit,
        &early,
        enc,
        device,
    )?;
    let serving_clicks = click_metrics(&serving.evaluator, &serving, &holdout, device)?;
    let candidate_clicks = click_metrics(&evaluator, &serving, &holdout, device)?;
    // Re-ranker: warm start, its recipe (GRPO for EGLR) against the refreshed evaluator.
    let frozen = Evaluator::new(
        &serving.meta.evaluator,
        enc,
        max_len,
        VarBuilder::from_tensors(snapshot(&evaluator_vars)?, DType::F32, device),
    )?;
    let (ranker, generator_vars) =
        warm_started(&serving_dir, "generator.safetensors", device, |vb| {
            Ranker::new(&serving.meta.generator, enc, max_len, vb)
        })?;
    let mut pools = fit;
    pools.extend(early);
    let ranker_report = train_ranker(
        serving.meta.generator.variant,
        &ranker,
        &generator_vars,
        &frozen,
        None,
        &settings,
        &pools,
        enc,
        round.list_len,
        device,
    )?;

    // The candidate as a bundle in a staging directory, then judged.
    let version = crate::model::ModelStore::new(round.store).next_version();
    let staging = round.store.join(".candidates").join(&version);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let meta = BundleMeta {
        version: version.clone(),
        training: TrainingInfo {
            data: format!("{} (newest {} lists)", round.logs, rows.len()),
            seed: settings.seed,
            part: crate::model::DataPart::All,
            judge_share: 0.0,
            git_revision: round.git_revision.clone(),
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            metrics: serde_json::json!({
                "warm_start_from": serving_version,
                "evaluator": evaluator_report,
                "ranker": ranker_report,
            }),
        },
        ..serving.meta.clone()
    };
    Bundle::save(&staging, &meta, &evaluator_vars, &generator_vars).map_err(TrainError::from)?;
    let candidate = Bundle::load(&staging, device).map_err(TrainError::from)?;
    let judge = Bundle {
        evaluator: Evaluator::new(
            &serving.meta.evaluator,
            enc,
            max_len,
            VarBuilder::from_tensors(snapshot(&gate_judge_vars)?, DType::F32, device),
        )?,
        ..candidate.clone()
    };
    let cand_audit = judged(&candidate, &judge, holdout_rows, round.list_len, device)?;
    let serv_audit = judged(&serving, &judge, holdout_rows, round.list_len, device)?;
    let judge_score = |a: &ModelAudit| a.judge.as_ref().map_or(f64::NAN, |j| j.model_score);
    let (candidate_score, serving_score) = (judge_score(&cand_audit), judge_score(&serv_audit));

    let fidelity = round
        .world
        .map(|w| {
            crate::offline::fidelity::fidelity(
                &candidate.evaluator,
                enc,
                &holdout,
                w,
                crate::offline::fidelity::Sample::standard(settings.seed),
                device,
            )
        })
        .transpose()
        .map_err(TrainError::from)?;
    let reasons = gates(
        round.trainer,
        (serving_clicks, candidate_clicks),
        (serving_score, candidate_score),
        cand_audit.copies_input_order,
    );
    let published = reasons.is_empty();
    let bundle = if published {
        round.store.join(&version)
    } else {
        let millis = meta.training.created_unix_ms;
        round
            .store
            .join("rejected")
            .join(format!("{version}-{millis}"))
    };
    let report = RoundReport {
        serving_version: serving_version.to_owned(),
        candidate_version: version,
        train_lists: train_rows.len(),
        holdout_lists: holdout_rows.len(),
        serving_evaluator: serving_clicks,
        candidate_evaluator: candidate_clicks,
        serving_score,
        candidate_score,
        candidate_copy_share: cand_audit.copies_input_order,
        candidate_fidelity: fidelity,
        serving_copy_share: serv_audit.copies_input_order,
        published,
        rejected_because: reasons,
        bundle: bundle.clone(),
        seconds: started.elapsed().as_secs_f64(),
    };
    // The report travels with the bundle; the rename publishes both at once.
    let report_path = staging.join("round.json");
    let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
    std::fs::write(&report_path, json).map_err(io(&report_path))?;
    if let Some(parent) = bundle.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::rename(&staging, &bundle).map_err(io(&bundle))?;
    Ok(report)
}

/// Why a candidate may not be published (empty: it passes). `clicks` and `scores` are
/// (serving, candidate) on the held-out lists.
fn gates(
    t: &TrainerConfig,
    clicks: (ClickMetrics, ClickMetrics),
    scores: (f64, f64),
    copy_share: f64,
) -> Vec<String> {
    let ((serving_clicks, candidate_clicks), (serving_score, candidate_score)) = (clicks, scores);
    let mut reasons = Vec::new();
    if candidate_clicks.auc < serving_clicks.auc - t.auc_tolerance {
        reasons.push(format!(
            "held-out click AUC fell from {:.4} to {:.4} (tolerance {})",
            serving_clicks.auc, candidate_clicks.auc, t.auc_tolerance
        ));
    }
    if candidate_clicks.logloss > serving_clicks.logloss + t.logloss_tolerance {
        reasons.push(format!(
            "held-out click log-loss rose from {:.4} to {:.4} (tolerance {})",
            serving_clicks.logloss, candidate_clicks.logloss, t.logloss_tolerance
        ));
    }
    let needed = serving_score * (1.0 + t.score_margin);
    // NaN (no held-out lists scored) must not pass either.
    let beats = candidate_score.partial_cmp(&needed) == Some(std::cmp::Ordering::Greater);
    if !beats {
        reasons.push(format!(
            "held-out Evaluator Score {candidate_score:.4} does not beat the serving model's \
             {serving_score:.4} by the margin {} (needs > {needed:.4})",
            t.score_margin
        ));
    }
    if copy_share > t.max_copy_share {
        reasons.push(format!(
            "{:.1} % of its lists copy the upstream order (at most {:.1} % allowed)",
            100.0 * copy_share,
            100.0 * t.max_copy_share
        ));
    }
    reasons
}

/// A model built with fresh trainable variables, then set to the weights saved in
/// `dir/file` (names and shapes must match: the bundle was built from the same configs).
fn warm_started<M>(
    dir: &Path,
    file: &str,
    device: &Device,
    build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<M>,
) -> Result<(M, VarMap), TrainerError> {
    let mut vars = VarMap::new();
    let model = build(VarBuilder::from_varmap(&vars, DType::F32, device))?;
    vars.load(dir.join(file))?;
    Ok((model, vars))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clicks(auc: f64, logloss: f64) -> ClickMetrics {
        ClickMetrics { auc, logloss }
    }

    /// Two logger instances: the file of instance "1" is published first, so the
    /// newest lists are in instance "0"'s file although its name sorts first.
    #[test]
    fn the_window_is_the_newest_lists_by_publish_time() {
        use crate::list_log::{LogWriter, RollPolicy};
        use crate::sim::{Traffic, World};
        let world = World::small(3);
        let traffic = Traffic::new(&world, 1);
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |instance: &str, from: u64| {
            let policy = RollPolicy {
                max_bytes: 1 << 30,
                max_age: None,
                row_group_rows: 16,
            };
            let mut w = LogWriter::create(dir.path(), &format!("lists-{instance}"), policy)
                .expect("writer");
            let rows: Vec<LoggedList> = (from..from + 30)
                .map(|k| traffic.logged_list(&traffic.impression(k)))
                .collect();
            w.write(&rows).expect("write");
            w.finish().expect("publish");
        };
        write("1", 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        write("0", 100);
        let logs = dir.path().display().to_string();
        assert_eq!(count_lists(dir.path()).expect("count"), 60);
        let window = read_window(&logs, 40).expect("window");
        let ids: Vec<&str> = window.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids.len(), 40);
        assert_eq!(
            ids[0],
            traffic.request_id(20),
            "oldest kept: the file published first"
        );
        assert_eq!(
            ids[39],
            traffic.request_id(129),
            "newest: the file published last"
        );
        assert_eq!(
            count_lists(&dir.path().join("missing")).expect("no log yet"),
            0
        );
    }

    #[test]
    fn every_gate_can_reject_and_a_clear_win_passes() {
        let t = TrainerConfig {
            score_margin: 0.01,
            ..TrainerConfig::default()
        };
        let same = clicks(0.70, 0.50);
        assert!(gates(&t, (same, same), (1.0, 1.02), 0.1).is_empty());
        let reasons = |c, s, copy| gates(&t, (same, c), s, copy);
        assert_eq!(
            reasons(clicks(0.68, 0.50), (1.0, 1.02), 0.1).len(),
            1,
            "AUC"
        );
        assert_eq!(
            reasons(clicks(0.70, 0.52), (1.0, 1.02), 0.1).len(),
            1,
            "log-loss"
        );
        assert_eq!(reasons(same, (1.0, 1.01), 0.1).len(), 1, "needs > 1.01");
        assert_eq!(
            reasons(same, (1.0, f64::NAN), 0.1).len(),
            1,
            "NaN never passes"
        );
        assert_eq!(reasons(same, (1.0, 1.02), 0.95).len(), 1, "copies");
        assert_eq!(reasons(clicks(0.5, 0.9), (1.0, 0.9), 1.0).len(), 4);
    }
}
