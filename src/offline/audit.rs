//! The offline Evaluator Score audit: each model's lists on logged requests, scored by
//! its own (serving) evaluator and by an independent judge evaluator, as uplift over
//! the logged order with a bootstrap 95 % confidence interval. A serving uplift that
//! exceeds the judge's by more than a tolerance flags possible reward hacking: the
//! generator found orders its own evaluator over-rates.

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{encode_rows, OfflineError};
use crate::list_log::{LogReader, LoggedList};
use crate::model::{is_upstream_order, Bundle, Decoded, PoolTensors};
use crate::train::{pool_tensors, rewards, Example, Reward};

/// How to audit.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub batch: usize,
    pub list_len: usize,
    /// Bootstrap resamples of the lists for the confidence intervals.
    pub bootstrap: usize,
    pub seed: u64,
    /// Flag when serving uplift - judge uplift exceeds this (Evaluator Score units).
    pub tolerance: f64,
}

/// Mean Evaluator Score of the model's lists and of the logged order, by one evaluator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreUplift {
    pub model_score: f64,
    pub logged_score: f64,
    /// Mean over lists of (model - logged).
    pub uplift: f64,
    pub ci95_low: f64,
    pub ci95_high: f64,
}

/// The audit of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelAudit {
    pub model_version: String,
    pub lists: usize,
    pub serving: ScoreUplift,
    pub judge: Option<ScoreUplift>,
    /// Share of the lists the model generated itself (leaving out the upstream lists
    /// generator-evaluator selection fell back to) that are identical to the first
    /// `list_len` candidates in initial order.
    pub copies_input_order: f64,
    /// `serving.uplift - judge.uplift > tolerance`.
    pub reward_hacking_flag: bool,
}

/// Per-list scores of one evaluator.
#[derive(Debug, Default)]
struct Scores {
    model: Vec<f64>,
    logged: Vec<f64>,
}

impl Scores {
    fn summarise(&self, opts: &AuditOptions) -> ScoreUplift {
        let diffs: Vec<f64> = self
            .model
            .iter()
            .zip(&self.logged)
            .map(|(m, l)| m - l)
            .collect();
        let (ci95_low, ci95_high) = bootstrap_ci95(&diffs, opts.bootstrap, opts.seed);
        ScoreUplift {
            model_score: mean(&self.model),
            logged_score: mean(&self.logged),
            uplift: mean(&diffs),
            ci95_low,
            ci95_high,
        }
    }

    fn extend(&mut self, model: Vec<f32>, logged: Vec<f32>) {
        self.model.extend(model.into_iter().map(f64::from));
        self.logged.extend(logged.into_iter().map(f64::from));
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// Percentile bootstrap interval (2.5 %, 97.5 %) of the mean of `xs`.
pub fn bootstrap_ci95(xs: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    if xs.is_empty() || resamples == 0 {
        let m = mean(xs);
        return (m, m);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let sum: f64 = (0..xs.len())
                .map(|_| xs[rng.random_range(0..xs.len())])
                .sum();
            sum / xs.len() as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((resamples - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
}

/// Scores `lists` and the logged order of `examples` with `bundle`'s evaluator;
/// `pools` are the examples encoded with that bundle's features.
fn score(
    bundle: &Bundle,
    examples: &[Example],
    pools: &PoolTensors,
    lists: &Decoded,
    list_len: usize,
) -> Result<(Vec<f32>, Vec<f32>), OfflineError> {
    let logged = crate::model::Decoded::from_orders(
        examples
            .iter()
            .map(|e| e.served.iter().copied().take(list_len).collect()),
    );
    Ok((
        rewards(&bundle.evaluator, pools, lists, Reward::Dcg)?,
        rewards(&bundle.evaluator, pools, &logged, Reward::Dcg)?,
    ))
}

/// `rows` encoded with `bundle`'s features, as examples and as model input.
fn encode_for(
    bundle: &Bundle,
    rows: &[LoggedList],
    source: &str,
    device: &Device,
) -> Result<(Vec<Example>, PoolTensors), OfflineError> {
    let examples = encode_rows(rows, &bundle.encoder, source)?;
    let refs: Vec<&Example> = examples.iter().collect();
    let pools = pool_tensors(&refs, &bundle.encoder, device)?;
    Ok((examples, pools))
}

/// An audit of one model fed batches of logged rows.
#[derive(Debug)]
pub struct Auditor<'a> {
    model: &'a Bundle,
    judge: Option<&'a Bundle>,
    opts: AuditOptions,
    serving: Scores,
    judged: Scores,
    lists: usize,
    /// Lists the generator produced itself (not selection's upstream fallbacks).
    generated: usize,
    copies: usize,
}

impl<'a> Auditor<'a> {
    pub fn new(model: &'a Bundle, judge: Option<&'a Bundle>, opts: &AuditOptions) -> Self {
        Self {
            model,
            judge,
            opts: opts.clone(),
            serving: Scores::default(),
            judged: Scores::default(),
            lists: 0,
            generated: 0,
            copies: 0,
        }
    }

    /// Re-ranks and scores one batch of rows (`source` names them in errors).
    pub fn add(
        &mut self,
        rows: &[LoggedList],
        source: &str,
        device: &Device,
    ) -> Result<(), OfflineError> {
        let (model, list_len) = (self.model, self.opts.list_len);
        let (examples, pools) = encode_for(model, rows, source, device)?;
        let lens = vec![list_len; examples.len()];
        let decoded = model.ranker.rank(&pools, &lens, &model.evaluator)?;
        // Copies of the input order among the lists the model generated itself: an
        // upstream list served by generator-evaluator selection is a deliberate fallback,
        // not the generator copying.
        for (list, &fallback) in decoded.lists.iter().zip(&decoded.upstream) {
            if fallback {
                continue;
            }
            self.copies += usize::from(is_upstream_order(list.iter().map(|p| p.item)));
            self.generated += 1;
        }
        self.lists += examples.len();
        let (m, l) = score(model, &examples, &pools, &decoded, list_len)?;
        self.serving.extend(m, l);
        if let Some(judge) = self.judge {
            let (judge_examples, judge_pools) = encode_for(judge, rows, source, device)?;
            let (m, l) = score(judge, &judge_examples, &judge_pools, &decoded, list_len)?;
            self.judged.extend(m, l);
        }
        Ok(())
    }

    pub fn finish(self) -> ModelAudit {
        let serving = self.serving.summarise(&self.opts);
        let judge = self.judge.map(|_| self.judged.summarise(&self.opts));
        let reward_hacking_flag = judge
            .as_ref()
            .is_some_and(|j| serving.uplift - j.uplift > self.opts.tolerance);
        ModelAudit {
            model_version: self.model.meta.version.clone(),
            lists: self.lists,
            serving,
            judge,
            copies_input_order: self.copies as f64 / self.generated.max(1) as f64,
            reward_hacking_flag,
        }
    }
}

/// Audits one model on the logs matching `pattern` (streamed, one batch at a time).
pub fn audit_model(
    model: &Bundle,
    judge: Option<&Bundle>,
    pattern: &str,
    opts: &AuditOptions,
    device: &Device,
) -> Result<ModelAudit, OfflineError> {
    let reader = LogReader::open(pattern, opts.batch.max(1))?;
    let mut auditor = Auditor::new(model, judge, opts);
    for batch in reader.batches() {
        auditor.add(&batch?, pattern, device)?;
    }
    Ok(auditor.finish())
}

/// The audit as a markdown report.
pub fn markdown(audits: &[ModelAudit], judge: Option<&str>, tolerance: f64) -> String {
    let ci =
        |u: &ScoreUplift| format!("{:+.4} [{:+.4}, {:+.4}]", u.uplift, u.ci95_low, u.ci95_high);
    let mut out = format!(
        "# Evaluator Score audit\n\nUplift = mean over lists of (model's list - logged order), by the model's own \
         (serving) evaluator and by the judge ({}); 95 % bootstrap intervals. Flag: serving uplift exceeds the \
         judge's by more than {tolerance}.\n\n\
         | model | lists | serving score | serving uplift [95 % CI] | judge score | judge uplift [95 % CI] | copies input order | flag |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
        judge.unwrap_or("none given")
    );
    for a in audits {
        let (js, ju) = a
            .judge
            .as_ref()
            .map_or(("-".to_owned(), "-".to_owned()), |j| {
                (format!("{:.4}", j.model_score), ci(j))
            });
        out += &format!(
            "| {} | {} | {:.4} | {} | {js} | {ju} | {:.1} % | {} |\n",
            a.model_version,
            a.lists,
            a.serving.model_score,
            ci(&a.serving),
            100.0 * a.copies_input_order,
            if a.reward_hacking_flag {
                "possible reward hacking"
            } else {
                ""
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_interval_of_a_constant_is_the_constant_and_covers_the_mean() {
        assert_eq!(bootstrap_ci95(&[0.5; 20], 200, 1), (0.5, 0.5));
        let xs: Vec<f64> = (0..100).map(f64::from).collect();
        let (lo, hi) = bootstrap_ci95(&xs, 500, 7);
        // Mean 49.5, standard error 29.0 / 10 = 2.9: the interval is about ±5.7.
        assert!(
            lo < 49.5 && hi > 49.5 && hi - lo > 8.0 && hi - lo < 15.0,
            "{lo} {hi}"
        );
        assert_eq!(bootstrap_ci95(&xs, 500, 7), (lo, hi), "seeded");
    }
}
