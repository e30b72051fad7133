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
//! - A redundancy probe: four lists that differ only in their first two places
//!   (`[a, b, ..]`, `[c, b, ..]`, `[a, d, ..]`, `[c, d, ..]`, `a` and `b` of one
//!   category); their difference in differences cancels every item's own relevance and
//!   leaves what an item of `b`'s category above does to `b` (the simulator's
//!   `same_before` penalty). The share of probes where the evaluator scores it as a loss,
//!   and its size against the oracle's.
//! - A point-wise probe: the evaluator's score of each item alone against the true
//!   point-wise relevance, beside the initial order's; and its point-wise sort scored
//!   with the list effects off. It tells an item score that knows less than the upstream
//!   order from one that knows more but stacks redundant items when sorted alone.

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
    pub redundancy: RedundancyProbe,
    pub pointwise: PointwiseProbe,
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

/// The evaluator on lists that differ only by an item of the same category being above
/// an item (see the module's documentation).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RedundancyProbe {
    pub probes: usize,
    /// Share of probes where the evaluator's difference in differences is negative: the
    /// item of the same category above costs clicks.
    pub evaluator_sees_loss: f64,
    /// Share where the oracle does (every probe when the world penalises redundancy).
    pub oracle_sees_loss: f64,
    /// Mean difference in differences, in expected clicks.
    pub evaluator_effect: f64,
    pub oracle_effect: f64,
}

/// The evaluator's point-wise scores against the true point-wise relevance `s(u, i)`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PointwiseProbe {
    /// Mean over pools of Kendall's tau-b between the evaluator's score of each item
    /// alone and its true relevance.
    pub evaluator_tau: f64,
    /// The same for the initial (upstream) order.
    pub initial_tau: f64,
    /// The evaluator's point-wise sort against the initial order, both scored by the
    /// oracle without list effects (`sum_t exam(t) sigmoid(s)`): the part of the sort's
    /// gain its item score earns before redundancy and complementarity.
    pub sort_vs_initial_without_list_effects: f64,
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
    /// first), then the adjacency probe's adjacent and apart lists when `adjacency`,
    /// then the redundancy probe's four lists when `redundancy`.
    pub lists: Vec<Vec<usize>>,
    pub adjacency: bool,
    pub redundancy: bool,
}

impl PoolLists {
    /// A list's world items.
    pub fn world_items(&self, list: &[usize]) -> Vec<usize> {
        list.iter().map(|&j| self.items[j]).collect()
    }

    /// How many of `lists` are orderings (the rest are the probes').
    fn orderings(&self) -> usize {
        self.lists.len() - 2 * usize::from(self.adjacency) - 4 * usize::from(self.redundancy)
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
    let batch_of = |chunk: &[PoolLists]| -> Vec<&Example> {
        chunk.iter().map(|p| &examples[p.source]).collect()
    };
    let items = |chunk: &[PoolLists]| -> candle_core::Result<Vec<Vec<f64>>> {
        let logits: Vec<Vec<f32>> = evaluator
            .pointwise_logits(&pool_tensors(&batch_of(chunk), enc, device)?)?
            .to_vec2()?;
        Ok(chunk
            .iter()
            .zip(logits)
            .map(|(p, z)| {
                z.iter()
                    .take(p.items.len())
                    .map(|&x| f64::from(x))
                    .collect()
            })
            .collect())
    };
    fidelity_of(world, pools, sample, items, |chunk| {
        let batch = batch_of(chunk);
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

/// Fidelity of any scorer against the oracle of `world` on `pools` (source index,
/// user, world items in initial order). Both scorers are handed a few pools at a time:
/// `score_items` returns each pool's point-wise scores (one per item, in the pool's
/// order), `score` one score per list of each pool, in order.
pub fn fidelity_of<E>(
    world: &World,
    pools: impl Iterator<Item = (usize, usize, Vec<usize>)>,
    sample: Sample,
    mut score_items: impl FnMut(&[PoolLists]) -> Result<Vec<Vec<f64>>, E>,
    mut score: impl FnMut(&[PoolLists]) -> Result<Vec<f64>, E>,
) -> Result<Fidelity, E> {
    let mut rng = ChaCha8Rng::seed_from_u64(sample.seed);
    let drawn: Vec<PoolLists> = pools
        .map(|(source, user, items)| draw(world, source, user, items, sample.orderings, &mut rng))
        .collect();
    let (mut tau_sum, mut tau_pools) = (0.0, 0usize);
    let (mut agree, mut pairs) = (0.0, 0usize);
    let (mut adjacency, mut redundancy) = (ProbeSums::default(), ProbeSums::default());
    let mut pointwise = PointwiseSums::default();
    for chunk in drawn.chunks(SCORE_CHUNK) {
        for (pool, items) in chunk.iter().zip(score_items(chunk)?) {
            pointwise.add(world, pool, &items);
        }
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
            // The probes' lists are left out of tau.
            let orderings = pool.orderings();
            let (tau, a, p) = kendall(&scores[..orderings], &truth[..orderings]);
            if let Some(tau) = tau {
                tau_sum += tau;
                tau_pools += 1;
            }
            agree += a;
            pairs += p;
            let mut k = orderings;
            if pool.adjacency {
                adjacency.add(scores[k] - scores[k + 1], truth[k] - truth[k + 1]);
                k += 2;
            }
            if pool.redundancy {
                let did = |s: &[f64]| (s[k] - s[k + 1]) - (s[k + 2] - s[k + 3]);
                // Summed negated, so that a loss counts as seen (`RedundancyProbe`).
                redundancy.add(-did(scores), -did(&truth));
            }
        }
    }
    Ok(Fidelity {
        pools: tau_pools,
        orderings_per_pool: sample.orderings,
        kendall_tau: tau_sum / tau_pools.max(1) as f64,
        pair_agreement: agree / pairs.max(1) as f64,
        adjacency: adjacency.finish().into(),
        redundancy: redundancy.finish().into(),
        pointwise: pointwise.finish(),
    })
}

/// A pool's lists: the upstream list, random `L`-subsets in random order up to
/// `orderings`, then the adjacency probe's pair where the upstream list has one and the
/// redundancy probe's four lists where the pool has them.
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
    let adjacency = adjacency_pair(world, &items, &lists[0]);
    let redundancy = redundancy_lists(world, &items, n.min(len));
    let (has_adjacency, has_redundancy) = (adjacency.is_some(), redundancy.is_some());
    lists.extend(
        adjacency
            .into_iter()
            .flat_map(|(adjacent, apart)| [adjacent, apart]),
    );
    lists.extend(redundancy.into_iter().flatten());
    PoolLists {
        source,
        user,
        items,
        lists,
        adjacency: has_adjacency,
        redundancy: has_redundancy,
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

/// The redundancy probe's lists of at most `len` items from a pool (indices into
/// `items`, in initial order): `[a, b, rest]`, `[c, b, rest]`, `[a, d, rest]`,
/// `[c, d, rest]` with `a`, `b` of one category `X`, `c` of another `Y`, `d` of a third,
/// no kind among the first two places priming the next, and `rest` the pool's next items
/// outside `X` and `Y`. The first place then changes nothing below the second (no item
/// of `rest` shares its category), so in `(S[a,b] - S[c,b]) - (S[a,d] - S[c,d])` every
/// item's own clicks and everything the second place does to `rest` cancel: what is
/// left is the redundancy `a` adds to `b`. `None` when the pool has no such items.
fn redundancy_lists(world: &World, items: &[usize], len: usize) -> Option<[Vec<usize>; 4]> {
    let category = |j: usize| world.items[items[j]].category;
    let kind = |j: usize| world.items[items[j]].kind;
    let primes = |a: usize, b: usize| world.complements[kind(a)] == Some(kind(b));
    let n = items.len();
    for a in 0..n {
        let x = category(a);
        let Some(b) = (0..n).find(|&b| b != a && category(b) == x && !primes(a, b)) else {
            continue;
        };
        let Some(c) = (0..n).find(|&c| category(c) != x && !primes(c, b)) else {
            continue;
        };
        let y = category(c);
        let Some(d) = (0..n)
            .find(|&d| category(d) != x && category(d) != y && !primes(a, d) && !primes(c, d))
        else {
            continue;
        };
        // Shorter than `len` when the pool is short of such items (pools of `L` items).
        let rest: Vec<usize> = (0..n)
            .filter(|&j| ![a, b, c, d].contains(&j) && category(j) != x && category(j) != y)
            .take(len.saturating_sub(2))
            .collect();
        let list = |first: usize, second: usize| [vec![first, second], rest.clone()].concat();
        return Some([list(a, b), list(c, b), list(a, d), list(c, d)]);
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
struct PointwiseSums {
    evaluator_tau: f64,
    initial_tau: f64,
    pools: usize,
    sorted: f64,
    initial: f64,
}

impl PointwiseSums {
    fn add(&mut self, world: &World, pool: &PoolLists, scores: &[f64]) {
        if scores.len() != pool.items.len() {
            // A scorer that saw a shorter pool than the world's has nothing to compare.
            return;
        }
        let truth: Vec<f64> = pool
            .items
            .iter()
            .map(|&i| world.pointwise_logit(pool.user, i))
            .collect();
        // The initial order ranks the pool as it stands: first is best.
        let initial_rank: Vec<f64> = (0..truth.len()).map(|j| -(j as f64)).collect();
        if let (Some(e), Some(i)) = (kendall(scores, &truth).0, kendall(&initial_rank, &truth).0) {
            self.evaluator_tau += e;
            self.initial_tau += i;
            self.pools += 1;
        }
        let len = world.list_len.min(pool.items.len());
        let mut sorted: Vec<usize> = (0..pool.items.len()).collect();
        sorted.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let clicks = |list: &[usize]| {
            world.clicks_without_list_effects(pool.user, &pool.world_items(&list[..len]))
        };
        self.sorted += clicks(&sorted);
        self.initial += clicks(&pool.lists[0]);
    }

    fn finish(self) -> PointwiseProbe {
        let n = self.pools.max(1) as f64;
        PointwiseProbe {
            evaluator_tau: self.evaluator_tau / n,
            initial_tau: self.initial_tau / n,
            sort_vs_initial_without_list_effects: self.sorted / self.initial - 1.0,
        }
    }
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

    fn finish(self) -> ProbeMeans {
        let n = self.n.max(1) as f64;
        ProbeMeans {
            probes: self.n,
            evaluator_share: self.evaluator_prefers as f64 / n,
            oracle_share: self.oracle_prefers as f64 / n,
            evaluator_mean: self.evaluator_gain / n,
            oracle_mean: self.oracle_gain / n,
        }
    }
}

/// A probe's shares of positive differences and mean differences.
struct ProbeMeans {
    probes: usize,
    evaluator_share: f64,
    oracle_share: f64,
    evaluator_mean: f64,
    oracle_mean: f64,
}

impl From<ProbeMeans> for AdjacencyProbe {
    fn from(m: ProbeMeans) -> Self {
        Self {
            probes: m.probes,
            evaluator_prefers_adjacent: m.evaluator_share,
            oracle_prefers_adjacent: m.oracle_share,
            evaluator_gain: m.evaluator_mean,
            oracle_gain: m.oracle_mean,
        }
    }
}

/// The redundancy sums are of the negated effect, so a positive share is a loss seen.
impl From<ProbeMeans> for RedundancyProbe {
    fn from(m: ProbeMeans) -> Self {
        Self {
            probes: m.probes,
            evaluator_sees_loss: m.evaluator_share,
            oracle_sees_loss: m.oracle_share,
            evaluator_effect: -m.evaluator_mean,
            oracle_effect: -m.oracle_mean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Traffic;

    /// Pools of a small world with their users, as `fidelity_of` takes them.
    fn pools(world: &World, n: u64) -> Vec<(usize, usize, Vec<usize>)> {
        let traffic = Traffic::new(world, 3);
        (0..n)
            .map(|k| {
                let imp = traffic.impression(k);
                (k as usize, imp.user, imp.pool)
            })
            .collect()
    }

    #[test]
    fn the_redundancy_lists_leave_only_the_penalty_on_the_second_item() {
        let world = World::small(5);
        let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
        let mut found = 0;
        for (_, user, items) in pools(&world, 40) {
            let Some(lists) = redundancy_lists(&world, &items, world.list_len) else {
                continue;
            };
            found += 1;
            let clicks = |l: &[usize]| {
                let world_items: Vec<usize> = l.iter().map(|&j| items[j]).collect();
                world.expected_clicks(user, &world_items)
            };
            assert!(lists
                .iter()
                .all(|l| l.len() == lists[0].len() && l[2..] == lists[0][2..]));
            let did =
                (clicks(&lists[0]) - clicks(&lists[1])) - (clicks(&lists[2]) - clicks(&lists[3]));
            // What `a` above does to `b`: the examination of place 2 times the fall of
            // its click probability by one redundancy penalty.
            let s = world.pointwise_logit(user, items[lists[0][1]]);
            let penalty = world.params.redundancy_penalty;
            let expected = world.examination(1) * (sigmoid(s - penalty) - sigmoid(s));
            assert!((did - expected).abs() < 1e-12, "{did} against {expected}");
            assert!(did < 0.0);
        }
        assert!(
            found >= 20,
            "only {found} of 40 pools have the probe's items"
        );
    }

    #[test]
    fn the_redundancy_probe_sees_the_oracle_and_not_a_pointwise_scorer() {
        let world = World::small(6);
        let sample = Sample {
            orderings: 5,
            max_pools: 30,
            seed: 2,
        };
        let score = |pointwise: bool| {
            let world = &world;
            move |chunk: &[PoolLists]| {
                Ok::<_, std::convert::Infallible>(
                    chunk
                        .iter()
                        .flat_map(|p| {
                            p.lists.iter().map(move |l| {
                                let items = p.world_items(l);
                                if pointwise {
                                    world.clicks_without_list_effects(p.user, &items)
                                } else {
                                    world.expected_clicks(p.user, &items)
                                }
                            })
                        })
                        .collect(),
                )
            }
        };
        let truth = |chunk: &[PoolLists]| {
            Ok(chunk
                .iter()
                .map(|p| {
                    p.items
                        .iter()
                        .map(|&i| world.pointwise_logit(p.user, i))
                        .collect()
                })
                .collect())
        };
        let Ok(oracle) = fidelity_of(
            &world,
            pools(&world, 30).into_iter(),
            sample,
            truth,
            score(false),
        );
        let r = &oracle.redundancy;
        assert!(r.probes >= 15, "{r:?}");
        assert_eq!((r.evaluator_sees_loss, r.oracle_sees_loss), (1.0, 1.0));
        assert!(r.oracle_effect < 0.0 && (r.evaluator_effect - r.oracle_effect).abs() < 1e-12);
        let Ok(pointwise) = fidelity_of(
            &world,
            pools(&world, 30).into_iter(),
            sample,
            truth,
            score(true),
        );
        assert!(
            pointwise.redundancy.evaluator_effect.abs() < 1e-12,
            "{pointwise:?}"
        );
        assert_eq!(pointwise.redundancy.oracle_effect, r.oracle_effect);
        // The true relevance as the item score: it orders every pool as the truth, the
        // upstream order does not, and its sort gains once the list effects are off.
        let p = &oracle.pointwise;
        assert!((p.evaluator_tau - 1.0).abs() < 1e-12, "{p:?}");
        assert!(p.initial_tau < 0.9, "{p:?}");
        assert!(p.sort_vs_initial_without_list_effects > 0.0, "{p:?}");
    }

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
