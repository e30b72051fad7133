//! The simulated world: users, items and the parameters of the click model. Everything
//! needed to rebuild it is in `world.json`, so held-out traffic can come from the same
//! users and items (`eglr simulate --world FILE`).

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::SimError;
use super::SimulatorConfig;
use crate::random::normal;

/// Format version of `world.json`.
pub const WORLD_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimUser {
    pub segment: usize,
    /// Latent taste `p_u`.
    pub latent: Vec<f64>,
    /// Taste for each category `c_u[k]` (segment's taste plus a personal deviation).
    pub category_taste: Vec<f64>,
    /// Activity `a_u`: raises every click logit by `ACTIVITY_WEIGHT * a_u`.
    pub activity: f64,
    /// Days since sign-up: observed, but has no effect on clicks (a distractor feature).
    pub tenure_days: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimItem {
    pub category: usize,
    pub kind: usize,
    /// Latent vector `q_i`.
    pub latent: Vec<f64>,
    /// Intrinsic quality `b_i`.
    pub quality: f64,
    /// Observed view count: a noisy signal of quality.
    pub views: f64,
    /// Days since upload: observed, no effect on clicks (a distractor feature).
    pub age_days: f64,
}

/// A seeded world of users and items with a list-wise click model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    pub format: u32,
    /// Seed the world was generated from (provenance; the vectors below are the truth).
    pub seed: u64,
    pub params: SimulatorConfig,
    /// Length of the served lists.
    pub list_len: usize,
    /// `complements[a]` = the kind that gets the complementarity bonus right after kind `a`.
    pub complements: Vec<Option<usize>>,
    pub users: Vec<SimUser>,
    pub items: Vec<SimItem>,
}

/// Weight of user activity on the click logit.
pub const ACTIVITY_WEIGHT: f64 = 0.3;

impl World {
    /// Draws a world from `params` and `seed`.
    pub fn generate(params: &SimulatorConfig, list_len: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = params.latent_dim;
        // Segments share a taste for categories and a latent centre.
        let segment_taste: Vec<Vec<f64>> = (0..params.segments)
            .map(|_| (0..params.categories).map(|_| normal(&mut rng)).collect())
            .collect();
        let segment_centre: Vec<Vec<f64>> = (0..params.segments)
            .map(|_| (0..d).map(|_| normal(&mut rng)).collect())
            .collect();
        let category_centre: Vec<Vec<f64>> = (0..params.categories)
            .map(|_| (0..d).map(|_| normal(&mut rng)).collect())
            .collect();
        let users = (0..params.users)
            .map(|_| {
                let segment = rng.random_range(0..params.segments);
                SimUser {
                    segment,
                    latent: segment_centre[segment]
                        .iter()
                        .map(|c| c + 0.5 * normal(&mut rng))
                        .collect(),
                    category_taste: segment_taste[segment]
                        .iter()
                        .map(|t| t + 0.3 * normal(&mut rng))
                        .collect(),
                    activity: normal(&mut rng),
                    tenure_days: (rng.random::<f64>() * 1000.0).round(),
                }
            })
            .collect();
        let items = (0..params.items)
            .map(|_| {
                let category = rng.random_range(0..params.categories);
                let quality = 0.5 * normal(&mut rng);
                SimItem {
                    category,
                    kind: rng.random_range(0..params.kinds),
                    latent: category_centre[category]
                        .iter()
                        .map(|c| c + 0.7 * normal(&mut rng))
                        .collect(),
                    quality,
                    views: (6.0 + 2.0 * quality + 0.5 * normal(&mut rng)).exp().round(),
                    age_days: (rng.random::<f64>() * 60.0).round(),
                }
            })
            .collect();
        // A ring of complementary kinds: kind a primes kind a + 1 (e.g. a video about a
        // product primes the product's listing). One kind has no partner but itself.
        let complements = (0..params.kinds)
            .map(|a| (params.kinds >= 2).then_some((a + 1) % params.kinds))
            .collect();
        Self {
            format: WORLD_FORMAT,
            seed,
            params: params.clone(),
            list_len,
            complements,
            users,
            items,
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), SimError> {
        let json = serde_json::to_vec(self).map_err(|e| SimError::Encode(e.to_string()))?;
        std::fs::write(path, json).map_err(|e| SimError::io(path, e))
    }

    /// Reads and checks a `world.json`.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        let bytes = std::fs::read(path).map_err(|e| SimError::io(path, e))?;
        let world: World = serde_json::from_slice(&bytes).map_err(|e| SimError::BadWorld {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        world.check().map_err(|message| SimError::BadWorld {
            path: path.to_owned(),
            message,
        })?;
        Ok(world)
    }

    /// Consistency of a world read from outside.
    fn check(&self) -> Result<(), String> {
        let p = &self.params;
        if self.format != WORLD_FORMAT {
            return Err(format!(
                "format {} is not supported (expected {WORLD_FORMAT})",
                self.format
            ));
        }
        if self.users.is_empty() || self.items.is_empty() {
            return Err("a world needs users and items".into());
        }
        if self.list_len == 0 || self.list_len > p.pool_size || p.pool_size > self.items.len() {
            return Err(format!(
                "list_len {} / pool_size {} / items {} are inconsistent",
                self.list_len,
                p.pool_size,
                self.items.len()
            ));
        }
        if p.pool_size_min
            .is_some_and(|min| min < self.list_len || min > p.pool_size)
        {
            return Err(format!(
                "pool_size_min {:?} must lie between list_len {} and pool_size {}",
                p.pool_size_min, self.list_len, p.pool_size
            ));
        }
        if p.retrieval_size < p.pool_size || p.retrieval_size > self.items.len() {
            return Err(format!(
                "retrieval_size {} must lie between pool_size {} and the {} items",
                p.retrieval_size,
                p.pool_size,
                self.items.len()
            ));
        }
        if self.complements.len() != p.kinds
            || self.complements.iter().flatten().any(|&k| k >= p.kinds)
        {
            return Err("complements must name one kind (or null) per kind".into());
        }
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        for (u, user) in self.users.iter().enumerate() {
            if user.segment >= p.segments
                || user.latent.len() != p.latent_dim
                || user.category_taste.len() != p.categories
                || !finite(&user.latent)
                || !finite(&user.category_taste)
                || !user.activity.is_finite()
            {
                return Err(format!("user {u} does not fit the world's dimensions"));
            }
        }
        for (i, item) in self.items.iter().enumerate() {
            if item.category >= p.categories
                || item.kind >= p.kinds
                || item.latent.len() != p.latent_dim
                || !finite(&item.latent)
                || !item.quality.is_finite()
            {
                return Err(format!("item {i} does not fit the world's dimensions"));
            }
        }
        Ok(())
    }

    pub fn user_id(&self, user: usize) -> String {
        format!("u{user}")
    }

    pub fn item_id(&self, item: usize) -> String {
        format!("i{item}")
    }

    /// Inverse of [`World::user_id`]; `None` for ids not of this world.
    pub fn user_index(&self, id: &str) -> Option<usize> {
        let u: usize = id.strip_prefix('u')?.parse().ok()?;
        (u < self.users.len()).then_some(u)
    }

    /// Inverse of [`World::item_id`]; `None` for ids not of this world.
    pub fn item_index(&self, id: &str) -> Option<usize> {
        let i: usize = id.strip_prefix('i')?.parse().ok()?;
        (i < self.items.len()).then_some(i)
    }
}

#[cfg(test)]
impl World {
    /// A small world for tests.
    pub fn small(seed: u64) -> Self {
        let params = SimulatorConfig {
            users: 50,
            items: 300,
            ..SimulatorConfig::default()
        };
        Self::generate(&params, 10, seed)
    }
}
