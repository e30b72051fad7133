//! How well can any evaluator order lists on a simulated world? The fidelity
//! ([`super::fidelity`]) of evaluators that model the list effects exactly (position
//! bias, redundancy, complementarity: the world's) and know the point-wise relevance
//! `s(u, i)` only as well as stated:
//!
//! - the truth plus independent noise of a given standard deviation (a sweep);
//! - every item and every user segment exactly, and a user's own tastes only through
//!   the upstream score (the posterior mean given it): what a model that cannot learn
//!   individual users could know at best;
//! - what the features show (segment, activity, category, views) exactly, the rest
//!   through the upstream score: what a model without user or item ids could know;
//! - the upstream score alone, linearly calibrated to the logit (the headroom table's
//!   "observable inputs" search).
//!
//! The first pool list of a fidelity draw is the upstream list, so each row also gives
//! the oracle's verdict on sorting the pool by that point-wise knowledge, against the
//! initial order: whether an evaluator's point-wise sort can beat upstream at all.

use std::convert::Infallible;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::fidelity::{fidelity_of, Fidelity, PoolLists, Sample};
use crate::random::normal;
use crate::sim::{upstream_calibration, GroupMeans, Impression, Traffic, World};

/// Standard deviations of the noise on the true point-wise logit in the sweep.
pub const NOISE_SWEEP: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// What an evaluator knows of the point-wise relevance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Knowledge {
    /// The true logit plus N(0, sd²) noise, drawn once per pool item.
    NoisyTruth { sd: f64 },
    /// Items and segments exactly; the user's own tastes through the upstream score.
    SegmentsAndUpstream,
    /// Segment, category and the view count's quality exactly; the rest through the
    /// upstream score.
    FeaturesAndUpstream,
    /// The upstream score, calibrated linearly to the logit.
    Upstream,
}

impl Knowledge {
    pub fn describe(self) -> String {
        match self {
            Knowledge::NoisyTruth { sd: 0.0 } => "the true relevance".into(),
            Knowledge::NoisyTruth { sd } => format!("the true relevance + noise sd {sd}"),
            Knowledge::SegmentsAndUpstream => {
                "items and segments exactly, a user's own tastes via the upstream score".into()
            }
            Knowledge::FeaturesAndUpstream => {
                "what the features show exactly, the rest via the upstream score".into()
            }
            Knowledge::Upstream => "the upstream score alone (calibrated)".into(),
        }
    }
}

/// One row of the ceiling table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CeilingRow {
    pub knowledge: String,
    /// Root mean square error of its point-wise logit against the truth, on the pools.
    pub logit_rmse: f64,
    pub fidelity: Fidelity,
    /// Sorting each pool by its point-wise logit, by the oracle, relative to the initial
    /// order's expected clicks on the same pools.
    pub pointwise_sort_vs_initial: f64,
}

/// The ceiling table on the first `pools` impressions of `traffic`: the noise sweep,
/// then segments + upstream, features + upstream, upstream alone.
pub fn fidelity_ceiling(traffic: &Traffic<'_>, pools: u64, sample: Sample) -> Vec<CeilingRow> {
    let world = traffic.world();
    let impressions: Vec<Impression> = (0..pools).map(|k| traffic.impression(k)).collect();
    let estimates = Estimates::new(world, &impressions);
    NOISE_SWEEP
        .iter()
        .map(|&sd| Knowledge::NoisyTruth { sd })
        .chain([
            Knowledge::SegmentsAndUpstream,
            Knowledge::FeaturesAndUpstream,
            Knowledge::Upstream,
        ])
        .map(|knowledge| {
            let logits: Vec<Vec<f64>> = impressions
                .iter()
                .map(|imp| estimates.logits(knowledge, imp, sample.seed))
                .collect();
            row(world, &impressions, &logits, knowledge, sample)
        })
        .collect()
}

fn row(
    world: &World,
    impressions: &[Impression],
    logits: &[Vec<f64>],
    knowledge: Knowledge,
    sample: Sample,
) -> CeilingRow {
    let pools = impressions
        .iter()
        .enumerate()
        .map(|(k, imp)| (k, imp.user, imp.pool.clone()));
    let score = |chunk: &[PoolLists]| {
        Ok::<_, Infallible>(
            chunk
                .iter()
                .flat_map(|p| {
                    let logit = &logits[p.source];
                    p.lists.iter().map(move |list| {
                        let items = p.world_items(list);
                        world.expected_clicks_by(&items, |item| {
                            p.items
                                .iter()
                                .position(|&i| i == item)
                                .map_or(f64::NEG_INFINITY, |j| logit[j])
                        })
                    })
                })
                .collect(),
        )
    };
    let items = |chunk: &[PoolLists]| {
        Ok::<_, Infallible>(chunk.iter().map(|p| logits[p.source].clone()).collect())
    };
    let Ok(fidelity) = fidelity_of(world, pools, sample, items, score);
    let (mut squared, mut n) = (0.0, 0usize);
    let (mut sorted, mut initial) = (0.0, 0.0);
    for (imp, logit) in impressions.iter().zip(logits) {
        for (&item, &l) in imp.pool.iter().zip(logit) {
            squared += (l - world.pointwise_logit(imp.user, item)).powi(2);
            n += 1;
        }
        let mut by_logit: Vec<usize> = (0..imp.pool.len()).collect();
        by_logit.sort_by(|&a, &b| logit[b].total_cmp(&logit[a]));
        let len = world.list_len.min(imp.pool.len());
        let list: Vec<usize> = by_logit[..len].iter().map(|&j| imp.pool[j]).collect();
        sorted += world.expected_clicks(imp.user, &list);
        initial += world.expected_clicks(imp.user, &imp.pool[..len]);
    }
    CeilingRow {
        knowledge: knowledge.describe(),
        logit_rmse: (squared / n.max(1) as f64).sqrt(),
        fidelity,
        pointwise_sort_vs_initial: sorted / initial - 1.0,
    }
}

/// What the estimates need from the whole sample: group means, the upstream
/// calibration, and for each prior the weight of the upstream score's evidence.
struct Estimates<'a> {
    world: &'a World,
    means: GroupMeans,
    segments: Shrinkage,
    features: Shrinkage,
    calibration: (f64, f64),
}

/// A prior logit `known(user, item)` combined with the upstream score `x` (the truth
/// plus N(0, upstream_noise²)) into the Gaussian posterior mean `known + w (x - known)`,
/// `w = var(truth - known) / (var(truth - known) + upstream_noise²)`.
#[derive(Debug, Clone, Copy)]
struct Shrinkage {
    weight: f64,
}

impl Shrinkage {
    fn fit(world: &World, impressions: &[Impression], known: impl Fn(usize, usize) -> f64) -> Self {
        let (mut squared, mut n) = (0.0, 0usize);
        for imp in impressions {
            for &item in &imp.pool {
                let rest = world.pointwise_logit(imp.user, item) - known(imp.user, item);
                squared += rest * rest;
                n += 1;
            }
        }
        let rest_var = squared / n.max(1) as f64;
        let noise_var = world.params.upstream_noise.powi(2);
        Self {
            weight: rest_var / (rest_var + noise_var).max(f64::MIN_POSITIVE),
        }
    }

    fn posterior(self, known: f64, upstream: f64) -> f64 {
        known + self.weight * (upstream - known)
    }
}

impl<'a> Estimates<'a> {
    fn new(world: &'a World, impressions: &[Impression]) -> Self {
        let means = world.group_means();
        Self {
            segments: Shrinkage::fit(world, impressions, |u, i| world.segment_logit(&means, u, i)),
            features: Shrinkage::fit(world, impressions, |u, i| world.feature_logit(&means, u, i)),
            world,
            means,
            calibration: upstream_calibration(world, impressions),
        }
    }

    /// The point-wise logit of each pool item of `imp` under `knowledge`.
    fn logits(&self, knowledge: Knowledge, imp: &Impression, seed: u64) -> Vec<f64> {
        let world = self.world;
        let with_upstream = |prior: Shrinkage, known: &dyn Fn(usize) -> f64| -> Vec<f64> {
            imp.pool
                .iter()
                .zip(&imp.upstream_scores)
                .map(|(&i, &x)| prior.posterior(known(i), x))
                .collect()
        };
        match knowledge {
            Knowledge::NoisyTruth { sd } => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ imp.index.rotate_left(17));
                imp.pool
                    .iter()
                    .map(|&i| world.pointwise_logit(imp.user, i) + sd * normal(&mut rng))
                    .collect()
            }
            Knowledge::SegmentsAndUpstream => with_upstream(self.segments, &|i| {
                world.segment_logit(&self.means, imp.user, i)
            }),
            Knowledge::FeaturesAndUpstream => with_upstream(self.features, &|i| {
                world.feature_logit(&self.means, imp.user, i)
            }),
            Knowledge::Upstream => imp
                .upstream_scores
                .iter()
                .map(|x| self.calibration.0 + self.calibration.1 * x)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_truth_orders_lists_as_the_oracle_and_noise_costs_fidelity() {
        let world = World::small(5);
        let traffic = Traffic::new(&world, 3);
        let rows = fidelity_ceiling(
            &traffic,
            60,
            Sample {
                orderings: 10,
                max_pools: 60,
                seed: 1,
            },
        );
        assert_eq!(rows.len(), NOISE_SWEEP.len() + 3);
        let truth = &rows[0];
        assert!((truth.fidelity.kendall_tau - 1.0).abs() < 1e-9, "{truth:?}");
        assert_eq!(truth.logit_rmse, 0.0);
        // Noise sd 1 measured as such, and it orders lists worse than the truth.
        let noisy = &rows[NOISE_SWEEP.len() - 1];
        assert!((noisy.logit_rmse - 1.0).abs() < 0.15, "{noisy:?}");
        assert!(noisy.fidelity.kendall_tau < truth.fidelity.kendall_tau - 0.05);
        // Sorting by the truth beats the upstream order, which sorted by a noisy score.
        assert!(truth.pointwise_sort_vs_initial > 0.0, "{truth:?}");
        // Knowing items and segments adds to the upstream score: a smaller logit error.
        let (segments, upstream) = (&rows[NOISE_SWEEP.len()], &rows[NOISE_SWEEP.len() + 1]);
        assert!(
            segments.logit_rmse < upstream.logit_rmse,
            "{segments:?} {upstream:?}"
        );
    }
}
