//! Judging the candidate: click metrics of both evaluators on the hold-out, the
//! Evaluator Score of both models' lists by the gate judge, and the gates.

use candle_core::Device;

use super::{ClickMetrics, TrainerConfig};
use crate::encoded::Example;
use crate::list_log::LoggedList;
use crate::model::{Bundle, Evaluator};
use crate::offline::audit::{bootstrap_ci95, AuditOptions, Auditor, ModelAudit};
use crate::offline::OfflineError;
use crate::train::{validation_scores, TrainError};

pub(super) fn click_metrics(
    evaluator: &Evaluator,
    bundle: &Bundle,
    holdout: &[Example],
    device: &Device,
) -> Result<ClickMetrics, TrainError> {
    let v = validation_scores(
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
pub(super) fn judged(
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

/// The candidate's clicks per list minus the serving model's, estimated from the
/// held-out window's uniform exploration lists alone (`offline::off_policy`), paired by
/// list: the one gate that rests on no learned model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OffPolicyComparison {
    pub lists: usize,
    pub candidate_minus_serving: f64,
    pub ci95_low: f64,
    pub ci95_high: f64,
}

/// Bootstrap resamples of the off-policy comparison.
const COMPARISON_RESAMPLES: usize = 1000;

/// The comparison of two audits of the same held-out lists; `None` without uniform
/// exploration lists among them.
pub(super) fn off_policy_comparison(
    serving: &ModelAudit,
    candidate: &ModelAudit,
) -> Option<OffPolicyComparison> {
    let (s, c) = (&serving.off_policy_terms, &candidate.off_policy_terms);
    if s.is_empty() || s.len() != c.len() {
        return None;
    }
    let diffs: Vec<f64> = c.iter().zip(s).map(|(c, s)| c - s).collect();
    let (ci95_low, ci95_high) = bootstrap_ci95(&diffs, COMPARISON_RESAMPLES, 0);
    Some(OffPolicyComparison {
        lists: diffs.len(),
        candidate_minus_serving: diffs.iter().sum::<f64>() / diffs.len() as f64,
        ci95_low,
        ci95_high,
    })
}

/// Why a candidate may not be published (empty: it passes). `clicks` and `scores` are
/// (serving, candidate) on the held-out lists; `off_policy`, when the window explored,
/// rejects a candidate whose estimated clicks are below the serving model's with 95 %
/// confidence (a tie or a noisy estimate passes: the learned gates decide those).
pub(super) fn gates(
    t: &TrainerConfig,
    clicks: (ClickMetrics, ClickMetrics),
    scores: (f64, f64),
    copy_share: f64,
    off_policy: Option<&OffPolicyComparison>,
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
    if let Some(o) = off_policy.filter(|o| o.ci95_high < 0.0) {
        reasons.push(format!(
            "on {} exploration lists its estimated clicks per list are below the serving \
             model's: {:+.4} [{:+.4}, {:+.4}]",
            o.lists, o.candidate_minus_serving, o.ci95_low, o.ci95_high
        ));
    }
    reasons
}
