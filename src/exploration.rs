//! Exploration traffic (`[exploration]`): a share of requests served by a randomised
//! logging policy with known probabilities. Logged orders are confounded with the policy
//! that chose them (relevant items on top, neighbours as the model placed them); lists
//! drawn at random are not, so they train the next evaluator and let an off-policy
//! estimator check a model's uplift from clicks alone.
//!
//! Both choices are functions of the request id: which requests explore (a stable hash
//! against `share`) and the random draw itself (a generator seeded by the id), so a
//! request delivered twice gets the same list, and the log's propensities stay true.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::check::{check, Problem};
use crate::features::hash_bucket;
use crate::schema::{ExplorationDraw, LoggingPolicy};

/// Resolution of the share decision: requests fall in one of this many hash buckets.
const BUCKETS: u32 = 1_000_000;

/// Pipeline section `[exploration]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExplorationConfig {
    /// Share of requests served by the logging policy, chosen by a stable hash of
    /// `request_id`. 0 (the default): none.
    pub share: f64,
    /// `uniform` (a uniformly random list of the pool) or `plackett_luce` (the model's
    /// list re-ordered at random, favouring its own order by `temperature`).
    pub policy: LoggingPolicy,
    /// Plackett-Luce's temperature: the item at the model's rank `r` is drawn with weight
    /// `exp(-r / temperature)`; small keeps the model's order, large shuffles it.
    pub temperature: f64,
    /// Salt of the hash and the draws: another value explores other requests.
    pub salt: String,
}

impl Default for ExplorationConfig {
    fn default() -> Self {
        Self {
            share: 0.0,
            policy: LoggingPolicy::Uniform,
            temperature: 1.0,
            salt: "eglr".into(),
        }
    }
}

impl ExplorationConfig {
    pub fn validate(&self) -> Result<(), Problem> {
        check(
            (0.0..=1.0).contains(&self.share),
            "exploration.share",
            || format!("{} is not a share between 0 and 1", self.share),
        )?;
        check(
            self.temperature.is_finite() && self.temperature > 0.0,
            "exploration.temperature",
            || format!("{} must be a positive number", self.temperature),
        )
    }

    /// Whether the request `request_id` is served by the logging policy.
    pub fn explores(&self, request_id: &str) -> bool {
        if self.share <= 0.0 {
            return false;
        }
        let bucket = hash_bucket(&format!("explore:{}", self.salt), request_id, BUCKETS) - 1;
        f64::from(bucket) < self.share * f64::from(BUCKETS)
    }

    /// The exploration list for `request_id`: indices into a pool of `pool` candidates
    /// (`model_list`: the model's list, top first, which `plackett_luce` re-orders), with
    /// how it was drawn.
    pub fn draw(
        &self,
        request_id: &str,
        pool: usize,
        list_len: usize,
        model_list: &[usize],
    ) -> (Vec<usize>, ExplorationDraw) {
        let seed = u64::from(hash_bucket(
            &format!("draw:{}", self.salt),
            request_id,
            u32::MAX,
        ));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (items, weights): (Vec<usize>, Vec<f64>) = match self.policy {
            LoggingPolicy::Uniform => (0..pool).map(|j| (j, 1.0)).unzip(),
            LoggingPolicy::PlackettLuce => model_list
                .iter()
                .enumerate()
                .map(|(r, &j)| (j, (-(r as f64) / self.temperature).exp()))
                .unzip(),
        };
        let (order, propensities) = plackett_luce(&items, &weights, list_len, &mut rng);
        let draw = ExplorationDraw {
            policy: self.policy,
            temperature: (self.policy == LoggingPolicy::PlackettLuce).then_some(self.temperature),
            propensities,
        };
        (order, draw)
    }
}

/// Draws up to `len` of `items` without replacement, each step with probability
/// proportional to its weight among those left; returns them with the probability of
/// each choice given the ones before (equal weights: a uniformly random list).
pub fn plackett_luce(
    items: &[usize],
    weights: &[f64],
    len: usize,
    rng: &mut impl Rng,
) -> (Vec<usize>, Vec<f64>) {
    let mut left: Vec<(usize, f64)> = items.iter().copied().zip(weights.iter().copied()).collect();
    let mut order = Vec::with_capacity(len.min(left.len()));
    let mut propensities = Vec::with_capacity(order.capacity());
    while order.len() < len && !left.is_empty() {
        let total: f64 = left.iter().map(|(_, w)| w).sum();
        let mut u = rng.random::<f64>() * total;
        let mut pick = left.len() - 1;
        for (i, (_, w)) in left.iter().enumerate() {
            if u < *w {
                pick = i;
                break;
            }
            u -= w;
        }
        let (item, w) = left.remove(pick);
        order.push(item);
        propensities.push(w / total);
    }
    (order, propensities)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(share: f64, policy: LoggingPolicy) -> ExplorationConfig {
        ExplorationConfig {
            share,
            policy,
            ..ExplorationConfig::default()
        }
    }

    /// The share of exploring requests is within binomial bounds of `share`, and the
    /// decision and the draw are the same every time a request is seen.
    #[test]
    fn a_stable_share_of_requests_explores_the_same_way_each_time() {
        let c = config(0.1, LoggingPolicy::Uniform);
        let n = 20_000;
        let ids: Vec<String> = (0..n).map(|i| format!("req-{i}")).collect();
        let explored = ids.iter().filter(|id| c.explores(id)).count() as f64;
        // 4 standard deviations of a binomial(n, 0.1).
        let bound = 4.0 * (n as f64 * 0.1 * 0.9).sqrt();
        assert!(
            (explored - 0.1 * n as f64).abs() < bound,
            "{explored} of {n}"
        );
        for id in ids.iter().take(50) {
            assert_eq!(c.explores(id), c.explores(id));
            assert_eq!(c.draw(id, 30, 10, &[]), c.draw(id, 30, 10, &[]));
        }
        assert!(!ids
            .iter()
            .any(|id| config(0.0, LoggingPolicy::Uniform).explores(id)));
    }

    /// Uniform: each step's propensity is one over the candidates left, and every
    /// ordered pair of a small pool comes up about equally often.
    #[test]
    fn the_uniform_policy_draws_every_list_alike_and_says_so() {
        let c = config(1.0, LoggingPolicy::Uniform);
        let mut counts = std::collections::HashMap::new();
        let n = 12_000;
        for i in 0..n {
            let (list, draw) = c.draw(&format!("r{i}"), 4, 2, &[]);
            assert_eq!(draw.propensities, vec![0.25, 1.0 / 3.0]);
            assert_ne!(list[0], list[1]);
            *counts.entry(list).or_insert(0usize) += 1;
        }
        assert_eq!(counts.len(), 12, "4 x 3 ordered pairs");
        for (list, k) in counts {
            assert!(
                (k as f64 - 1000.0).abs() < 4.0 * 1000f64.sqrt(),
                "{list:?}: {k}"
            );
        }
    }

    /// Plackett-Luce keeps the model's items, its propensities are those of the weights
    /// `exp(-rank / T)`, and a small temperature keeps the model's order.
    #[test]
    fn plackett_luce_reorders_the_models_list_with_true_propensities() {
        let model = [7, 3, 9];
        let c = ExplorationConfig {
            temperature: 2.0,
            ..config(1.0, LoggingPolicy::PlackettLuce)
        };
        let w: Vec<f64> = (0..3).map(|r| (-(r as f64) / 2.0).exp()).collect();
        for i in 0..200 {
            let (list, draw) = c.draw(&format!("r{i}"), 12, 3, &model);
            let mut sorted = list.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![3, 7, 9]);
            // Recompute each step's probability from the weights.
            let mut left: Vec<usize> = vec![0, 1, 2];
            for (t, item) in list.iter().enumerate() {
                let r = model.iter().position(|m| m == item).expect("a model item");
                let total: f64 = left.iter().map(|&k| w[k]).sum();
                assert!((draw.propensities[t] - w[r] / total).abs() < 1e-12);
                left.retain(|&k| k != r);
            }
        }
        let cold = ExplorationConfig {
            temperature: 0.01,
            ..c
        };
        assert_eq!(cold.draw("r", 12, 3, &model).0, model.to_vec());
    }
}
