//! Evaluator fidelity on simulated pools: does the evaluator order lists the way the
//! true click model does? GRPO optimises whatever the evaluator prefers, so this is the
//! link that decides whether a trained generator helps or hacks its reward.
//!
//! - Kendall tau, per pool, between the evaluator's expected clicks and the oracle over
//!   `orderings` lists of that pool (random `L`-subsets in random order, plus the
//!   upstream list), averaged over pools; and the share of list pairs of a pool the
//!   evaluator orders as the oracle does.
//! - An adjacency probe: the same items with a complementary pair adjacent (`a` directly
//!   followed by a kind `next(a)` item) and apart (the partner swapped one place down);
//!   the share of probes where the evaluator prefers the adjacent list, against the
//!   oracle's difference.

use candle_core::Device;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::encoded::{pool_tensors, Example};
use crate::features::FeatureEncoder;
use crate::model::{rewards, Evaluator, Reward};
use crate::sim::World;

/// Orderings per pool and pools of the reported fidelity figures (issue 12: at least 20
/// orderings of each pool).
pub const ORDERINGS: usize = 20;
pub const POOLS: usize = 500;

/// How well an evaluator orders lists like the truth.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Fidelity {
    pub pools: usize,
    pub orderings_per_pool: usize,
    /// Mean over pools of Kendall's tau-b between evaluator and oracle scores.
    pub kendall_tau: f64,
    /// Share of list pairs (within a pool) the evaluator orders as the oracle does.
    pub pair_agreement: f64,
    pub adjacency: AdjacencyProbe,
}

/// The evaluator on lists that differ only by a complementary pair being adjacent.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AdjacencyProbe {
    pub probes: usize,
    /// Share of probes where the evaluator scores the adjacent list higher.
    pub evaluator_prefers_adjacent: f64,
    /// Share where the oracle does (the truth the first share should match).
    pub oracle_prefers_adjacent: f64,
    /// Mean score differences adjacent - apart, in expected clicks.
    pub evaluator_gain: f64,
    pub oracle_gain: f64,
}

/// How many pools and orderings a fidelity measurement draws, and its seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub orderings: usize,
    pub max_pools: usize,
    pub seed: u64,
}

impl Sample {
    /// The reported figures' sample ([`ORDERINGS`] orderings of [`POOLS`] pools).
    pub fn standard(seed: u64) -> Self {
        Self {
            orderings: ORDERINGS,
            max_pools: POOLS,
            seed,
        }
    }
}

/// One pool's lists as drawn for a fidelity measurement.
#[derive(Debug, Clone)]
pub struct PoolLists {
    /// Index of the pool in the caller's sequence.
    pub source: usize,
    pub user: usize,
    /// The pool's world items, in initial order.
    pub items: Vec<usize>,
    /// Lists as indices into `items`, top first: the orderings (the upstream list
    /// first), then the adjacency probe's adjacent and apart lists when `probe`.
    pub lists: Vec<Vec<usize>>,
    pub probe: bool,
}

impl PoolLists {
    /// A list's world items.
    pub fn world_items(&self, list: &[usize]) -> Vec<usize> {
        list.iter().map(|&j| self.items[j]).collect()
    }
}

/// Pools a scorer is handed at a time (the evaluator's batch).
const SCORE_CHUNK: usize = 32;

/// Fidelity of `evaluator` on the pools of `examples` (at most `sample.max_pools`)
/// against the oracle of `world`, with `sample.orderings` lists per pool.
pub fn fidelity(
    evaluator: &Evaluator,
    enc: &FeatureEncoder,
    examples: &[Example],
    world: &World,
    sample: Sample,
    device: &Device,
) -> candle_core::Result<Fidelity> {
    let pools = examples[..examples.len().min(sample.max_pools)]
        .iter()
        .enumerate()
        .filter_map(|(k, e)| resolve(world, e).map(|(user, items)| (k, user, items)));
    fidelity_of(world, pools, sample, |chunk| {
        let batch: Vec<&Example> = chunk.iter().map(|p| &examples[p.source]).collect();
        let rows: Vec<usize> = chunk
            .iter()
            .enumerate()
            .flat_map(|(r, p)| std::iter::repeat_n(r, p.lists.len()))
            .collect();
        let lists = chunk.iter().flat_map(|p| p.lists.iter().cloned());
        let repeated = pool_tensors(&batch, enc, device)?.select_rows(&rows)?;
        let scores = rewards(
            evaluator,
            &repeated,
            &crate::model::Decoded::from_orders(lists),
            Reward::Clicks,
        )?;
        Ok(scores.into_iter().map(f64::from).collect())
    })
}

/// Fidelity of any list scorer against the oracle of `world` on `pools` (source index,
/// user, world items in initial order): `score` is handed a few pools at a time and
/// returns one score per list of each, in order.
pub fn fidelity_of<E>(
    world: &World,
    pools: impl Iterator<Item = (usize, usize, Vec<usize>)>,
    sample: Sample,
    mut score: impl FnMut(&[PoolLists]) -> Result<Vec<f64>, E>,
) -> Result<Fidelity, E> {
    let mut rng = ChaCha8Rng::seed_from_u64(sample.seed);
    let drawn: Vec<PoolLists> = pools
        .map(|(source, user, items)| draw(world, source, user, items, sample.orderings, &mut rng))
        .collect();
    let (mut tau_sum, mut tau_pools) = (0.0, 0usize);
    let (mut agree, mut pairs) = (0.0, 0usize);
    let mut probe = ProbeSums::default();
    for chunk in drawn.chunks(SCORE_CHUNK) {
        let scores = score(chunk)?;
        let mut at = 0;
        for pool in chunk {
            let truth: Vec<f64> = pool
                .lists
                .iter()
                .map(|l| world.expected_clicks(pool.user, &pool.world_items(l)))
                .collect();
            let scores = &scores[at..at + pool.lists.len()];
            at += pool.lists.len();
            // The probe's two lists are left out of tau.
            let orderings = pool.lists.len() - 2 * usize::from(pool.probe);
            let (tau, a, p) = kendall(&scores[..orderings], &truth[..orderings]);
            if let Some(tau) = tau {
                tau_sum += tau;
                tau_pools += 1;
            }
            agree += a;
            pairs += p;
            if pool.probe {
                let k = orderings;
                probe.add(scores[k] - scores[k + 1], truth[k] - truth[k + 1]);
            }
        }
    }
    Ok(Fidelity {
        pools: tau_pools,
        orderings_per_pool: sample.orderings,
        kendall_tau: tau_sum / tau_pools.max(1) as f64,
        pair_agreement: agree / pairs.max(1) as f64,
        adjacency: probe.finish(),
    })
}

/// A pool's lists: the upstream list, random `L`-subsets in random order up to
/// `orderings`, then the adjacency probe's pair where the upstream list has one.
fn draw(
    world: &World,
    source: usize,
    user: usize,
    items: Vec<usize>,
    orderings: usize,
    rng: &mut ChaCha8Rng,
) -> PoolLists {
    let n = items.len();
    let len = world.list_len;
    let mut lists = vec![(0..n.min(len)).collect::<Vec<usize>>()];
    let mut all: Vec<usize> = (0..n).collect();
    while lists.len() < orderings {
        all.shuffle(rng);
        lists.push(all[..n.min(len)].to_vec());
    }
    let probe = adjacency_pair(world, &items, &lists[0]);
    let has_probe = probe.is_some();
    if let Some((adjacent, apart)) = probe {
        lists.push(adjacent);
        lists.push(apart);
    }
    PoolLists {
        source,
        user,
        items,
        lists,
        probe: has_probe,
    }
}

/// The user and pool items of a simulated example, if they belong to `world`.
fn resolve(world: &World, e: &Example) -> Option<(usize, Vec<usize>)> {
    let user = world.user_index(&e.user_id)?;
    let items: Option<Vec<usize>> = e.item_ids.iter().map(|id| world.item_index(id)).collect();
    Some((user, items?))
}

/// From the upstream list: a complementary pair `(a, b)` with `b` placed directly after
/// `a`, and the same list with `b` one place further down (its place taken by the item
/// that followed it). `None` when the list has no such pair.
fn adjacency_pair(
    world: &World,
    items: &[usize],
    list: &[usize],
) -> Option<(Vec<usize>, Vec<usize>)> {
    let kind = |j: usize| world.items[items[j]].kind;
    let primes = |a: usize, b: usize| world.complements[kind(a)] == Some(kind(b));
    for i in 0..list.len().saturating_sub(3) {
        for j in i + 1..list.len() {
            if !primes(list[i], list[j]) {
                continue;
            }
            let mut adjacent: Vec<usize> = list.to_vec();
            let b = adjacent.remove(j);
            adjacent.insert(i + 1, b);
            let mut apart = adjacent.clone();
            apart.swap(i + 1, i + 2);
            // The swap must break the pair without making a new one around it.
            if primes(apart[i], apart[i + 1]) || primes(apart[i + 1], apart[i + 2]) {
                continue;
            }
            return Some((adjacent, apart));
        }
    }
    None
}

/// Kendall's tau-b of two score vectors, with the concordant share of untied pairs and
/// their count. `None` for tau when either side is constant.
fn kendall(a: &[f64], b: &[f64]) -> (Option<f64>, f64, usize) {
    let (mut concordant, mut discordant, mut ties_a, mut ties_b) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..a.len() {
        for j in i + 1..a.len() {
            let da = a[i] - a[j];
            let db = b[i] - b[j];
            if da == 0.0 && db == 0.0 {
                continue;
            } else if da == 0.0 {
                ties_a += 1.0;
            } else if db == 0.0 {
                ties_b += 1.0;
            } else if (da > 0.0) == (db > 0.0) {
                concordant += 1.0;
            } else {
                discordant += 1.0;
            }
        }
    }
    let untied = concordant + discordant;
    let denom = ((untied + ties_a) * (untied + ties_b)).sqrt();
    let tau = (denom > 0.0).then(|| (concordant - discordant) / denom);
    (tau, concordant, untied as usize)
}

#[derive(Debug, Default)]
struct ProbeSums {
    n: usize,
    evaluator_prefers: usize,
    oracle_prefers: usize,
    evaluator_gain: f64,
    oracle_gain: f64,
}

impl ProbeSums {
    fn add(&mut self, evaluator: f64, oracle: f64) {
        self.n += 1;
        self.evaluator_prefers += usize::from(evaluator > 0.0);
        self.oracle_prefers += usize::from(oracle > 0.0);
        self.evaluator_gain += evaluator;
        self.oracle_gain += oracle;
    }

    fn finish(self) -> AdjacencyProbe {
        let n = self.n.max(1) as f64;
        AdjacencyProbe {
            probes: self.n,
            evaluator_prefers_adjacent: self.evaluator_prefers as f64 / n,
            oracle_prefers_adjacent: self.oracle_prefers as f64 / n,
            evaluator_gain: self.evaluator_gain / n,
            oracle_gain: self.oracle_gain / n,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kendall_counts_concordant_pairs() {
        let (tau, agree, pairs) = super::kendall(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]);
        assert_eq!((tau, agree, pairs), (Some(1.0), 3.0, 3));
        let (tau, agree, _) = super::kendall(&[3.0, 2.0, 1.0], &[10.0, 20.0, 30.0]);
        assert_eq!((tau, agree), (Some(-1.0), 0.0));
        let (tau, _, _) = super::kendall(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]);
        assert_eq!(tau, None);
    }
}
