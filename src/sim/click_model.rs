//! The ground-truth click model (documented with its formulas in `data/README.md`).
//!
//! The item at 0-based position `t` of list `l` is clicked with probability
//! `P_t = exam(t) * sigmoid(z_t)`, independently given the list, where
//!
//! - `exam(t) = (t + 1)^(-eta)` is the position bias,
//! - `z_t = s(u, l_t) - beta * same_before(t) + gamma * follows_complement(t)`,
//! - `s(u, i) = base + w_a * a_u + <p_u, q_i> / sqrt(d) + c_u[cat(i)] + b_i` is the
//!   point-wise relevance,
//! - `same_before(t)` counts earlier items of the list in the category of `l_t`
//!   (redundancy), and `follows_complement(t)` is 1 when `l_{t-1}`'s kind is the kind
//!   that primes `l_t`'s kind (complementarity).
//!
//! Clicks are independent given the list, so the expected number of clicks
//! `sum_t P_t` is exact: that is the oracle score.

use super::world::{World, ACTIVITY_WEIGHT};

impl World {
    /// Examination probability of 0-based position `t`.
    pub fn examination(&self, t: usize) -> f64 {
        ((t + 1) as f64).powf(-self.params.position_bias)
    }

    /// Point-wise relevance `s(u, i)`: the click logit without list context.
    pub fn pointwise_logit(&self, user: usize, item: usize) -> f64 {
        let u = &self.users[user];
        let it = &self.items[item];
        let dot: f64 = u.latent.iter().zip(&it.latent).map(|(a, b)| a * b).sum();
        self.params.base_logit
            + ACTIVITY_WEIGHT * u.activity
            + dot / (self.params.latent_dim as f64).sqrt()
            + u.category_taste[it.category]
            + it.quality
    }

    /// Click probability at every position of `list` (item indices, top first).
    pub fn click_probabilities(&self, user: usize, list: &[usize]) -> Vec<f64> {
        self.click_probabilities_by(list, |i| self.pointwise_logit(user, i))
    }

    /// Expected clicks of `list` with the point-wise logit given by `logit` and the
    /// world's list effects: what an evaluator with that point-wise knowledge and a
    /// perfect list model would score.
    pub fn expected_clicks_by(&self, list: &[usize], logit: impl Fn(usize) -> f64) -> f64 {
        self.click_probabilities_by(list, logit).iter().sum()
    }

    /// The point-wise logit with the user's own tastes replaced by their segment's mean
    /// (`means`): what is known of `s(u, i)` from every item and every segment exactly,
    /// without anything personal to the user.
    pub fn segment_logit(&self, means: &SegmentMeans, user: usize, item: usize) -> f64 {
        let u = &self.users[user];
        let it = &self.items[item];
        let latent = &means.latent[u.segment];
        let dot: f64 = latent.iter().zip(&it.latent).map(|(a, b)| a * b).sum();
        self.params.base_logit
            + ACTIVITY_WEIGHT * u.activity
            + dot / (self.params.latent_dim as f64).sqrt()
            + means.category_taste[u.segment][it.category]
            + it.quality
    }

    /// The users' latent and category tastes averaged per segment.
    pub fn segment_means(&self) -> SegmentMeans {
        let segments = self.params.segments;
        let mut latent = vec![vec![0.0; self.params.latent_dim]; segments];
        let mut category_taste = vec![vec![0.0; self.params.categories]; segments];
        let mut counts = vec![0usize; segments];
        for u in &self.users {
            counts[u.segment] += 1;
            add(&mut latent[u.segment], &u.latent);
            add(&mut category_taste[u.segment], &u.category_taste);
        }
        for (s, &n) in counts.iter().enumerate() {
            let n = n.max(1) as f64;
            latent[s].iter_mut().for_each(|x| *x /= n);
            category_taste[s].iter_mut().for_each(|x| *x /= n);
        }
        SegmentMeans {
            latent,
            category_taste,
        }
    }

    /// The click model with the point-wise logit given by `logit` (the truth, or an
    /// estimate from observed inputs): position bias, redundancy and complementarity are
    /// the world's.
    fn click_probabilities_by(&self, list: &[usize], logit: impl Fn(usize) -> f64) -> Vec<f64> {
        let mut per_category = vec![0usize; self.params.categories];
        let mut previous_kind: Option<usize> = None;
        list.iter()
            .enumerate()
            .map(|(t, &i)| {
                let item = &self.items[i];
                let primed = previous_kind
                    .and_then(|k| self.complements[k])
                    .is_some_and(|k| k == item.kind);
                let z = logit(i)
                    - self.params.redundancy_penalty * per_category[item.category] as f64
                    + if primed {
                        self.params.complementarity
                    } else {
                        0.0
                    };
                per_category[item.category] += 1;
                previous_kind = Some(item.kind);
                self.examination(t) * sigmoid(z)
            })
            .collect()
    }

    /// The oracle score: exact expected number of clicks of `list` for `user`.
    pub fn expected_clicks(&self, user: usize, list: &[usize]) -> f64 {
        self.click_probabilities(user, list).iter().sum()
    }

    /// The first `len` items of `pool` sorted by true point-wise relevance: the best a
    /// re-ranker that ignores list context can do.
    pub fn pointwise_sort(&self, user: usize, pool: &[usize], len: usize) -> Vec<usize> {
        let mut sorted = pool.to_vec();
        sorted.sort_by(|&a, &b| {
            self.pointwise_logit(user, b)
                .total_cmp(&self.pointwise_logit(user, a))
        });
        sorted.truncate(len);
        sorted
    }

    /// A strong list-wise list built with the true model: the better of the greedy list
    /// (by marginal expected clicks) and the point-wise sort, improved by swaps of two
    /// positions or of a position and an unused pool item while any swap helps.
    /// An upper reference for re-rankers, not necessarily the optimum.
    pub fn listwise_search(&self, user: usize, pool: &[usize], len: usize) -> Vec<usize> {
        let sorted = self.pointwise_sort(user, pool, len);
        search(pool, len, sorted, |list| self.expected_clicks(user, list))
    }

    /// The same search knowing only what a model can observe: the point-wise logit is
    /// `logits[j]` for pool item `j` (an estimate from the upstream score), category and
    /// kind are seen, and the click model's list effects are the world's. Its list,
    /// scored by the truth, is the headroom a re-ranker with perfect list modelling but
    /// no better point-wise knowledge than upstream could reach.
    pub fn observable_search(&self, pool: &[usize], logits: &[f64], len: usize) -> Vec<usize> {
        let logit_of = |item: usize| {
            pool.iter()
                .position(|&p| p == item)
                .map_or(f64::NEG_INFINITY, |j| logits[j])
        };
        let mut by_logit: Vec<usize> = (0..pool.len()).collect();
        by_logit.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let sorted: Vec<usize> = by_logit.iter().take(len).map(|&j| pool[j]).collect();
        search(pool, len, sorted, |list| {
            self.expected_clicks_by(list, logit_of)
        })
    }
}

/// Per segment, its users' mean latent taste and mean category tastes.
#[derive(Debug, Clone)]
pub struct SegmentMeans {
    pub latent: Vec<Vec<f64>>,
    pub category_taste: Vec<Vec<f64>>,
}

fn add(sum: &mut [f64], x: &[f64]) {
    sum.iter_mut().zip(x).for_each(|(s, v)| *s += v);
}

/// Greedy list by marginal `value`, or `sorted` when that is worth more, then swaps of
/// two positions or of a position and an unused pool item while any swap helps.
fn search(
    pool: &[usize],
    len: usize,
    sorted: Vec<usize>,
    value: impl Fn(&[usize]) -> f64,
) -> Vec<usize> {
    let greedy = greedy_list(pool, len, &value);
    let mut list = if value(&greedy) >= value(&sorted) {
        greedy
    } else {
        sorted
    };
    let mut rest: Vec<usize> = pool.iter().copied().filter(|i| !list.contains(i)).collect();
    let mut best = value(&list);
    loop {
        let mut improved = false;
        for a in 0..list.len() {
            for b in a + 1..list.len() {
                list.swap(a, b);
                let v = value(&list);
                if v > best + 1e-12 {
                    best = v;
                    improved = true;
                } else {
                    list.swap(a, b);
                }
            }
            for unused in rest.iter_mut() {
                std::mem::swap(&mut list[a], unused);
                let v = value(&list);
                if v > best + 1e-12 {
                    best = v;
                    improved = true;
                } else {
                    std::mem::swap(&mut list[a], unused);
                }
            }
        }
        if !improved {
            return list;
        }
    }
}

/// Builds a list position by position, each time taking the item that adds the most
/// `value`.
fn greedy_list(pool: &[usize], len: usize, value: impl Fn(&[usize]) -> f64) -> Vec<usize> {
    let mut list: Vec<usize> = Vec::with_capacity(len);
    let mut rest: Vec<usize> = pool.to_vec();
    while list.len() < len && !rest.is_empty() {
        let mut best = (f64::NEG_INFINITY, 0);
        for (j, &candidate) in rest.iter().enumerate() {
            list.push(candidate);
            let v = value(&list);
            list.pop();
            if v > best.0 {
                best = (v, j);
            }
        }
        list.push(rest.swap_remove(best.1));
    }
    list
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}
