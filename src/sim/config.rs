//! The `[simulator]` section of a pipeline: the size and click-model parameters of a
//! generated world.

use serde::{Deserialize, Serialize};

use crate::check::{check, Problem};
use crate::contract::Limits;

/// The ground-truth simulator's world (see `data/README.md` for the click model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    pub users: usize,
    pub items: usize,
    /// Item categories (the redundancy penalty acts on repeated categories).
    pub categories: usize,
    /// Item kinds (the complementarity effect acts on pairs of kinds).
    pub kinds: usize,
    /// User segments; users of a segment share a taste for categories.
    pub segments: usize,
    /// Dimension of the user/item latent vectors.
    pub latent_dim: usize,
    /// Candidates per request `n` (the largest pool when `pool_size_min` is set).
    /// `n = L` is the offline case that only re-orders the logged list.
    pub pool_size: usize,
    /// Smallest pool: each request's pool size is drawn uniformly from
    /// `pool_size_min..=pool_size` (spec §1: production pools are larger than the list).
    /// Unset: every pool has `pool_size` candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size_min: Option<usize>,
    /// Items the upstream ranker scores before it keeps the best `pool_size`.
    pub retrieval_size: usize,
    /// Share of logged lists shown in a random order (exploration traffic).
    pub exploration_share: f64,
    /// Standard deviation of the upstream ranker's noise on the true logit.
    pub upstream_noise: f64,
    /// `eta` of the examination probability `(t + 1)^-eta`.
    pub position_bias: f64,
    /// Logit penalty per earlier item of the same category in the list.
    pub redundancy_penalty: f64,
    /// Logit bonus when an item follows an item of a complementary kind.
    pub complementarity: f64,
    /// Global intercept of the click logit.
    pub base_logit: f64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            users: 2000,
            items: 5000,
            categories: 20,
            kinds: 4,
            segments: 8,
            latent_dim: 8,
            pool_size: 10,
            pool_size_min: None,
            retrieval_size: 100,
            exploration_share: 0.2,
            upstream_noise: 1.0,
            position_bias: 0.7,
            redundancy_penalty: 0.8,
            complementarity: 1.0,
            base_logit: -1.5,
        }
    }
}

impl SimulatorConfig {
    pub(crate) fn validate(&self, limits: &Limits) -> Result<(), Problem> {
        for (key, value) in [
            ("simulator.users", self.users),
            ("simulator.items", self.items),
            ("simulator.categories", self.categories),
            ("simulator.kinds", self.kinds),
            ("simulator.segments", self.segments),
            ("simulator.latent_dim", self.latent_dim),
        ] {
            check(value >= 1, key, || "must be at least 1".into())?;
        }
        check(
            self.pool_size >= limits.list_len && self.pool_size <= limits.max_candidates,
            "simulator.pool_size",
            || {
                format!(
                    "{} must lie between limits.list_len = {} and limits.max_candidates = {}",
                    self.pool_size, limits.list_len, limits.max_candidates
                )
            },
        )?;
        if let Some(min) = self.pool_size_min {
            check(
                min >= limits.list_len && min <= self.pool_size,
                "simulator.pool_size_min",
                || {
                    format!(
                        "{min} must lie between limits.list_len = {} and simulator.pool_size = {}",
                        limits.list_len, self.pool_size
                    )
                },
            )?;
        }
        check(
            self.retrieval_size >= self.pool_size && self.retrieval_size <= self.items,
            "simulator.retrieval_size",
            || {
                format!(
                    "{} must lie between simulator.pool_size = {} and simulator.items = {}",
                    self.retrieval_size, self.pool_size, self.items
                )
            },
        )?;
        check(
            (0.0..=1.0).contains(&self.exploration_share),
            "simulator.exploration_share",
            || format!("{} is not a share in [0, 1]", self.exploration_share),
        )?;
        for (key, value) in [
            ("simulator.upstream_noise", self.upstream_noise),
            ("simulator.position_bias", self.position_bias),
            ("simulator.redundancy_penalty", self.redundancy_penalty),
            ("simulator.complementarity", self.complementarity),
        ] {
            check(value.is_finite() && value >= 0.0, key, || {
                format!("{value} must be finite and >= 0")
            })?;
        }
        check(self.base_logit.is_finite(), "simulator.base_logit", || {
            "must be finite".into()
        })
    }
}
