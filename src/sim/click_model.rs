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
    pub fn segment_logit(&self, means: &GroupMeans, user: usize, item: usize) -> f64 {
        let it = &self.items[item];
        self.group_logit(means, user, it.category, &it.latent, it.quality)
    }

    /// The point-wise logit as far as the simulated features show it: the user's segment
    /// and activity, the item's category, and its quality as predicted from its view
    /// count; the item's own latent vector is replaced by its category's mean.
    pub fn feature_logit(&self, means: &GroupMeans, user: usize, item: usize) -> f64 {
        let it = &self.items[item];
        let (a, b) = means.quality_from_log_views;
        let quality = a + b * it.views.ln_1p();
        self.group_logit(
            means,
            user,
            it.category,
            &means.category_latent[it.category],
            quality,
        )
    }

    fn group_logit(
        &self,
        means: &GroupMeans,
        user: usize,
        category: usize,
        item_latent: &[f64],
        quality: f64,
    ) -> f64 {
        let u = &self.users[user];
        let latent = &means.segment_latent[u.segment];
        let dot: f64 = latent.iter().zip(item_latent).map(|(a, b)| a * b).sum();
        self.params.base_logit
            + ACTIVITY_WEIGHT * u.activity
            + dot / (self.params.latent_dim as f64).sqrt()
            + means.segment_category_taste[u.segment][category]
            + quality
    }

    /// Per segment and per category means, and the view count's linear prediction of
    /// quality (least squares over the items).
    pub fn group_means(&self) -> GroupMeans {
        let p = &self.params;
        let segment_latent = means_by(
            self.users.iter().map(|u| (u.segment, &u.latent[..])),
            p.segments,
            p.latent_dim,
        );
        let segment_category_taste = means_by(
            self.users
                .iter()
                .map(|u| (u.segment, &u.category_taste[..])),
            p.segments,
            p.categories,
        );
        let category_latent = means_by(
            self.items.iter().map(|i| (i.category, &i.latent[..])),
            p.categories,
            p.latent_dim,
        );
        let xy: Vec<(f64, f64)> = self
            .items
            .iter()
            .map(|i| (i.views.ln_1p(), i.quality))
            .collect();
        GroupMeans {
            segment_latent,
            segment_category_taste,
            category_latent,
            quality_from_log_views: least_squares(&xy),
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

    /// Expected clicks of `list` with the list effects off (`sum_t exam(t) sigmoid(s)`):
    /// what a list earns by its items' relevance and places alone.
    pub fn clicks_without_list_effects(&self, user: usize, list: &[usize]) -> f64 {
        list.iter()
            .enumerate()
            .map(|(t, &i)| self.examination(t) * sigmoid(self.pointwise_logit(user, i)))
            .sum()
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

/// Group-level knowledge of a world: what a model could learn without telling
/// individual users (and, for the feature-level logit, individual items) apart.
#[derive(Debug, Clone)]
pub struct GroupMeans {
    pub segment_latent: Vec<Vec<f64>>,
    pub segment_category_taste: Vec<Vec<f64>>,
    pub category_latent: Vec<Vec<f64>>,
    /// `(a, b)`: quality predicted as `a + b * ln(1 + views)`.
    pub quality_from_log_views: (f64, f64),
}

/// The mean vector of each of `groups` groups (`dim` long).
fn means_by<'a>(
    rows: impl Iterator<Item = (usize, &'a [f64])>,
    groups: usize,
    dim: usize,
) -> Vec<Vec<f64>> {
    let mut sums = vec![vec![0.0; dim]; groups];
    let mut counts = vec![0usize; groups];
    for (g, x) in rows {
        counts[g] += 1;
        sums[g].iter_mut().zip(x).for_each(|(s, v)| *s += v);
    }
    for (sum, &n) in sums.iter_mut().zip(&counts) {
        sum.iter_mut().for_each(|x| *x /= n.max(1) as f64);
    }
    sums
}

/// Intercept and slope of the least-squares line through `xy`.
pub fn least_squares(xy: &[(f64, f64)]) -> (f64, f64) {
    let n = xy.len().max(1) as f64;
    let (mx, my) = xy
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (sxy, sxx) = xy.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - slope * mx, slope)
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
