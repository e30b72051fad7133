//! The offline Evaluator Score audit: each model's lists on logged requests, scored by
//! its own (serving) evaluator and by an independent judge evaluator, as uplift over
//! the logged order with a bootstrap 95 % confidence interval. A serving uplift that
//! exceeds the judge's by more than a tolerance flags possible reward hacking: the
//! generator found orders its own evaluator over-rates.
//!
//! Both are learned models and can share blind spots. Where the log holds exploration
//! lists the uniform policy drew, the audit also estimates from their clicks alone how
//! many clicks per list the model's lists earn against the initial order's
//! ([`super::off_policy`]): the flag also fires when the serving evaluator's claimed
//! uplift in clicks lies outside that estimate's interval.

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::off_policy::{uniform_pool, UniformDraw};
use super::OfflineError;
use crate::encoded::{encode_rows, pool_tensors, Example};
use crate::list_log::{LogReader, LoggedList};
use crate::model::{click_probabilities, is_upstream_order, Bundle, Decoded, PoolTensors};
use crate::model::{rewards, Reward};

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
    /// Clicks per list of the model's lists against the initial order's, estimated from
    /// the clicks of the log's uniform exploration lists; `None` without any.
    pub off_policy: Option<OffPolicyUplift>,
    /// Per uniform exploration list, in log order, the model's estimated clicks (doubly
    /// robust with a judge, else IPS): what comparing two models on the same lists pairs.
    #[serde(skip)]
    pub off_policy_terms: Vec<f64>,
    /// `serving.uplift - judge.uplift > tolerance`, or the serving evaluator's claimed
    /// uplift in clicks outside the off-policy interval.
    pub reward_hacking_flag: bool,
}

/// The model's clicks per list against the initial order's, on the exploration lists
/// of the log drawn uniformly at random.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OffPolicyUplift {
    /// The exploration lists the estimate rests on.
    pub lists: usize,
    /// Position-based IPS (`off_policy` module docs).
    pub ips: ScoreUplift,
    /// Doubly robust with the judge as the direct model (with a judge).
    pub doubly_robust: Option<ScoreUplift>,
    /// What the serving evaluator claims on the same lists: its expected clicks of the
    /// model's lists minus the initial order's.
    pub claimed_uplift: f64,
}

/// Per-list scores of one evaluator (or estimator).
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

    fn push(&mut self, model: f64, logged: f64) {
        self.model.push(model);
        self.logged.push(logged);
    }
}

/// Per-list off-policy terms of the model's lists and the initial order (`logged` is
/// the initial order here), and the serving evaluator's claim on the same lists.
#[derive(Debug, Default)]
struct OffPolicyTerms {
    ips: Scores,
    doubly_robust: Scores,
    claimed: Vec<f64>,
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
    off_policy: OffPolicyTerms,
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
            off_policy: OffPolicyTerms::default(),
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
        let judge = match self.judge {
            Some(judge) => {
                let (judge_examples, judge_pools) = encode_for(judge, rows, source, device)?;
                let (m, l) = score(judge, &judge_examples, &judge_pools, &decoded, list_len)?;
                self.judged.extend(m, l);
                Some((judge, judge_pools))
            }
            None => None,
        };
        self.add_off_policy(rows, &examples, &pools, &decoded, judge.as_ref())
    }

    /// The off-policy terms of the batch's uniform exploration lists.
    fn add_off_policy(
        &mut self,
        rows: &[LoggedList],
        examples: &[Example],
        pools: &PoolTensors,
        decoded: &Decoded,
        judge: Option<&(&Bundle, PoolTensors)>,
    ) -> Result<(), OfflineError> {
        let explored: Vec<(usize, usize)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, row)| uniform_pool(row).map(|n| (i, n)))
            .collect();
        if explored.is_empty() {
            return Ok(());
        }
        // Only the exploration rows are scored again: the other lists of the batch have no
        // off-policy term.
        let rows_of: Vec<usize> = explored.iter().map(|&(i, _)| i).collect();
        let all_model_lists = decoded.orders();
        let model_lists: Vec<Vec<usize>> = rows_of
            .iter()
            .map(|&i| all_model_lists[i].clone())
            .collect();
        let initial_lists: Vec<Vec<usize>> = model_lists
            .iter()
            .map(|list| (0..list.len()).collect())
            .collect();
        let model = Decoded::from_orders(model_lists.iter().cloned());
        let initial = Decoded::from_orders(initial_lists.iter().cloned());
        let logged = Decoded::from_orders(rows_of.iter().map(|&i| examples[i].served.clone()));
        let pools = pools.select_rows(&rows_of)?;
        let evaluator = &self.model.evaluator;
        let claimed_model = rewards(evaluator, &pools, &model, Reward::Clicks)?;
        let claimed_initial = rewards(evaluator, &pools, &initial, Reward::Clicks)?;
        let direct = judge
            .map(|(j, judge_pools)| {
                let judge_pools = judge_pools.select_rows(&rows_of)?;
                let q = |lists: &Decoded| click_probabilities(&j.evaluator, &judge_pools, lists);
                Ok::<_, OfflineError>((q(&model)?, q(&initial)?, q(&logged)?))
            })
            .transpose()?;
        for (r, (i, pool)) in explored.into_iter().enumerate() {
            let draw = UniformDraw {
                pool,
                shown: &examples[i].served,
                clicks: &examples[i].clicks,
            };
            let (model_list, initial_list) = (&model_lists[r], &initial_lists[r]);
            self.off_policy
                .ips
                .push(draw.ips(model_list), draw.ips(initial_list));
            if let Some((q_model, q_initial, q_logged)) = &direct {
                let f = |q: &[f32]| q.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
                let shown = f(&q_logged[r]);
                self.off_policy.doubly_robust.push(
                    draw.doubly_robust(model_list, &f(&q_model[r]), &shown),
                    draw.doubly_robust(initial_list, &f(&q_initial[r]), &shown),
                );
            }
            self.off_policy
                .claimed
                .push(f64::from(claimed_model[r] - claimed_initial[r]));
        }
        Ok(())
    }

    pub fn finish(self) -> ModelAudit {
        let serving = self.serving.summarise(&self.opts);
        let judge = self.judge.map(|_| self.judged.summarise(&self.opts));
        let terms = &self.off_policy;
        let off_policy = (!terms.claimed.is_empty()).then(|| OffPolicyUplift {
            lists: terms.claimed.len(),
            ips: terms.ips.summarise(&self.opts),
            doubly_robust: (!terms.doubly_robust.model.is_empty())
                .then(|| terms.doubly_robust.summarise(&self.opts)),
            claimed_uplift: mean(&terms.claimed),
        });
        let outside = |o: &OffPolicyUplift| {
            let u = o.doubly_robust.as_ref().unwrap_or(&o.ips);
            o.claimed_uplift < u.ci95_low || o.claimed_uplift > u.ci95_high
        };
        let reward_hacking_flag = judge
            .as_ref()
            .is_some_and(|j| serving.uplift - j.uplift > self.opts.tolerance)
            || off_policy.as_ref().is_some_and(outside);
        ModelAudit {
            model_version: self.model.meta.version.clone(),
            lists: self.lists,
            serving,
            judge,
            copies_input_order: self.copies as f64 / self.generated.max(1) as f64,
            off_policy,
            off_policy_terms: if terms.doubly_robust.model.is_empty() {
                terms.ips.model.clone()
            } else {
                terms.doubly_robust.model.clone()
            },
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
         judge's by more than {tolerance}, or the serving evaluator's claimed uplift in clicks lies outside the \
         off-policy interval.\n\n\
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
    if audits.iter().any(|a| a.off_policy.is_some()) {
        out += "\n## Off-policy estimate from the uniform exploration lists\n\n\
                Clicks per list of the model's lists minus the initial order's, estimated from the clicks of \
                the exploration lists the uniform policy drew (position-based IPS; doubly robust with the judge \
                as the direct model), beside the serving evaluator's claim in expected clicks. Both estimators \
                assume a click depends on the item and its position only (`docs/models.md`).\n\n\
                | model | exploration lists | model (IPS) | initial (IPS) | uplift, IPS [95 % CI] | uplift, doubly robust [95 % CI] | serving evaluator claims |\n\
                |---|---:|---:|---:|---:|---:|---:|\n";
        for a in audits {
            let Some(o) = &a.off_policy else { continue };
            let dr = o.doubly_robust.as_ref().map_or("-".to_owned(), ci);
            out += &format!(
                "| {} | {} | {:.4} | {:.4} | {} | {dr} | {:+.4} |\n",
                a.model_version,
                o.lists,
                o.ips.model_score,
                o.ips.logged_score,
                ci(&o.ips),
                o.claimed_uplift
            );
        }
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
