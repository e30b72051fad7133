//! Traffic of a world: requests from the upstream ranker, the lists that were served,
//! and the users' sampled clicks.
//!
//! Impression `k` of a traffic seed is drawn from its own RNG stream (seed, k), so any
//! impression can be rebuilt alone and the output does not depend on how work is split.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::world::World;
use crate::list_log::LoggedList;
use crate::random::normal;
use crate::schema::{
    Candidate, Feedback, LoggingPolicy, RerankRequest, Token, UserFeatures, SCHEMA_VERSION,
};

/// Start of simulated time (2024-01-01T00:00:00Z); impressions are one second apart.
const EPOCH_MS: i64 = 1_704_067_200_000;

/// One simulated impression: the request upstream sent and what was shown.
#[derive(Debug, Clone)]
pub struct Impression {
    pub index: u64,
    pub user: usize,
    /// The pool in initial (upstream) order.
    pub pool: Vec<usize>,
    pub upstream_scores: Vec<f64>,
    /// The items shown, top first.
    pub served: Vec<usize>,
    pub exploration: bool,
    pub clicks: Vec<bool>,
}

/// Traffic of one world under one seed.
#[derive(Debug, Clone, Copy)]
pub struct Traffic<'w> {
    world: &'w World,
    seed: u64,
}

impl<'w> Traffic<'w> {
    pub fn new(world: &'w World, seed: u64) -> Self {
        Self { world, seed }
    }

    pub fn world(&self) -> &'w World {
        self.world
    }

    /// An independent RNG per (impression, purpose): stream 1 draws the impression,
    /// stream 2 the clicks on a re-ranked list.
    fn rng(&self, index: u64, stream: u64) -> ChaCha8Rng {
        let mut seed = [0u8; 32];
        for (chunk, word) in seed
            .chunks_mut(8)
            .zip([self.seed, index, stream, 0x45474c52])
        {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        ChaCha8Rng::from_seed(seed)
    }

    /// Impression `index`: a user, the upstream pool, the served order, sampled clicks.
    pub fn impression(&self, index: u64) -> Impression {
        let w = self.world;
        let p = &w.params;
        let mut rng = self.rng(index, 1);
        let user = rng.random_range(0..w.users.len());
        // Upstream: score a random retrieval set with noisy point-wise relevance and
        // keep the best `pool_size`, best first (the initial order).
        let retrieved = rand::seq::index::sample(&mut rng, w.items.len(), p.retrieval_size);
        let mut scored: Vec<(usize, f64)> = retrieved
            .iter()
            .map(|i| {
                let noisy = w.pointwise_logit(user, i) + p.upstream_noise * normal(&mut rng);
                (i, noisy)
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        // Only a varying pool size draws from the stream: fixed-size worlds keep their
        // impressions.
        let pool_size = match p.pool_size_min {
            Some(min) if min < p.pool_size => rng.random_range(min..=p.pool_size),
            _ => p.pool_size,
        };
        scored.truncate(pool_size);
        let pool: Vec<usize> = scored.iter().map(|s| s.0).collect();
        let upstream_scores = scored.iter().map(|s| s.1).collect();
        let exploration = rng.random::<f64>() < p.exploration_share;
        let mut served = pool.clone();
        if exploration {
            served.shuffle(&mut rng);
        }
        served.truncate(w.list_len);
        let clicks = self.sample_clicks(&mut rng, user, &served);
        Impression {
            index,
            user,
            pool,
            upstream_scores,
            served,
            exploration,
            clicks,
        }
    }

    fn sample_clicks(&self, rng: &mut ChaCha8Rng, user: usize, served: &[usize]) -> Vec<bool> {
        self.world
            .click_probabilities(user, served)
            .into_iter()
            .map(|p| rng.random::<f64>() < p)
            .collect()
    }

    pub fn request_id(&self, index: u64) -> String {
        format!("sim-{}-{index:08}", self.seed)
    }

    fn timestamp_ms(index: u64) -> i64 {
        EPOCH_MS + 1000 * i64::try_from(index).unwrap_or(i64::MAX / 1000)
    }

    fn user_features(&self, user: usize) -> UserFeatures {
        let u = &self.world.users[user];
        UserFeatures {
            id: Token(self.world.user_id(user)),
            sparse: [("segment".to_owned(), Token::from(u.segment as u64))].into(),
            dense: [
                (
                    "sessions_per_day".to_owned(),
                    (1.0 + 0.5 * u.activity).exp(),
                ),
                ("tenure_days".to_owned(), u.tenure_days),
            ]
            .into(),
        }
    }

    fn candidate(&self, item: usize, upstream_score: f64) -> Candidate {
        let it = &self.world.items[item];
        Candidate {
            item_id: Token(self.world.item_id(item)),
            sparse: [
                ("category".to_owned(), Token::from(it.category as u64)),
                ("kind".to_owned(), Token::from(it.kind as u64)),
            ]
            .into(),
            dense: [
                ("views".to_owned(), it.views),
                ("age_days".to_owned(), it.age_days),
            ]
            .into(),
            upstream_score: Some(upstream_score),
        }
    }

    /// The `RerankRequest` upstream sends for an impression.
    pub fn request(&self, imp: &Impression) -> RerankRequest {
        RerankRequest {
            request_id: self.request_id(imp.index),
            user: self.user_features(imp.user),
            candidates: imp
                .pool
                .iter()
                .zip(&imp.upstream_scores)
                .map(|(&i, &s)| self.candidate(i, s))
                .collect(),
            list_len: self.world.list_len,
            timestamp_ms: Self::timestamp_ms(imp.index),
            schema_version: Some(SCHEMA_VERSION),
        }
    }

    /// The log row of an impression as served by upstream (or exploration).
    pub fn logged_list(&self, imp: &Impression) -> LoggedList {
        let request = self.request(imp);
        LoggedList {
            request_id: request.request_id,
            timestamp_ms: request.timestamp_ms,
            user: request.user,
            candidates: request.candidates,
            served_items: imp.served.iter().map(|&i| self.world.item_id(i)).collect(),
            utility: imp.clicks.iter().filter(|&&c| c).count() as f64,
            clicks: imp.clicks.clone(),
            model_version: if imp.exploration {
                "exploration".into()
            } else {
                "upstream".into()
            },
            exploration: imp.exploration,
            // Exploration shows a uniformly random list of the pool (`impression`).
            logging_policy: imp
                .exploration
                .then(|| LoggingPolicy::Uniform.name().to_owned()),
            propensities: if imp.exploration {
                (0..imp.served.len())
                    .map(|t| 1.0 / (imp.pool.len() - t) as f64)
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The user's answer to any served list (e.g. a re-ranker's) for impression `index`,
    /// shown at `shown_at_ms` (the result's time): one `Feedback` per shown position,
    /// 100 ms apart, clicks sampled from the true model. Ids that are not items of this
    /// world are skipped.
    pub fn feedback(
        &self,
        index: u64,
        user: usize,
        served_ids: &[Token],
        shown_at_ms: i64,
    ) -> Vec<Feedback> {
        let served: Vec<usize> = served_ids
            .iter()
            .filter_map(|id| self.world.item_index(id.as_str()))
            .collect();
        let mut rng = self.rng(index, 2);
        let clicks = self.sample_clicks(&mut rng, user, &served);
        served
            .iter()
            .zip(clicks)
            .enumerate()
            .map(|(t, (&item, clicked))| Feedback {
                request_id: self.request_id(index),
                item_id: Token(self.world.item_id(item)),
                position: u32::try_from(t).unwrap_or(u32::MAX),
                clicked,
                dwell_ms: None,
                utility: None,
                timestamp_ms: shown_at_ms + 100 * (t as i64 + 1),
                schema_version: Some(SCHEMA_VERSION),
            })
            .collect()
    }
}
