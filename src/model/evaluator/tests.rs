//! The cascade evaluator's promises: it reads no item below a position, its click
//! probability factorises into examination x attractiveness, and its list features are
//! derived from any feature spec.

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use super::cascade::{same_above_buckets, SAME_ABOVE_BUCKETS};
use super::Evaluator;
use crate::features::{
    DenseNormaliser, DenseTransform, EntityFeatures, FeatureEncoder, FeatureSpec,
};
use crate::model::config::EvaluatorKind;
use crate::model::embedding::PoolTensors;
use crate::model::tests::{encoder, pool, seeded_evaluator_of};
use crate::schema::{Candidate, Token, UserFeatures};

fn evaluator(kind: EvaluatorKind, enc: &FeatureEncoder, seed: u64) -> (Evaluator, VarMap) {
    seeded_evaluator_of(kind, enc, seed)
}

fn tensors(enc: &FeatureEncoder, pools: &[(UserFeatures, Vec<Candidate>)]) -> PoolTensors {
    let refs: Vec<(&UserFeatures, &[Candidate])> =
        pools.iter().map(|(u, c)| (u, c.as_slice())).collect();
    PoolTensors::new(&enc.encode(&refs), enc, &Device::Cpu).expect("tensors")
}

/// Click logits of the lists `orders` (candidate indices) of the one pool in `pools`.
fn click_logits(e: &Evaluator, pools: &PoolTensors, orders: &[Vec<usize>]) -> Vec<Vec<f32>> {
    let embedded = e.embed(pools).expect("embed");
    let lists: Vec<(usize, Vec<usize>)> = orders.iter().map(|o| (0, o.clone())).collect();
    e.score_lists(&embedded, &lists)
        .expect("score")
        .click_logits
        .to_vec2()
        .expect("logits")
}

/// A change below position 2 leaves the click logits of positions 0..=2 unchanged for
/// the cascade, and changes them for the paper's bidirectional encoder (so the check
/// can fail).
#[test]
fn the_cascade_evaluator_sees_no_later_item() {
    let enc = encoder();
    let pools = tensors(&enc, &[pool(3, 9)]);
    let orders = [vec![0, 1, 2, 3, 4, 5], vec![0, 1, 2, 8, 7, 6]];
    let (cascade, _) = evaluator(EvaluatorKind::Cascade, &enc, 5);
    let z = click_logits(&cascade, &pools, &orders);
    for (t, (a, b)) in z[0].iter().zip(&z[1]).take(3).enumerate() {
        assert!((a - b).abs() < 1e-5, "position {t}: {a} vs {b}");
    }
    assert!(
        (3..6).any(|t| (z[0][t] - z[1][t]).abs() > 1e-4),
        "the changed positions score differently: {z:?}"
    );
    let (paper, _) = evaluator(EvaluatorKind::Paper, &enc, 5);
    let z = click_logits(&paper, &pools, &orders);
    assert!(
        (0..=2).any(|t| (z[0][t] - z[1][t]).abs() > 1e-5),
        "a bidirectional encoder reads items below: {z:?}"
    );
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `P(click at t) = sigma(w_t) * sigma(a_t)`: moving one position's examination logit
/// scales that position's click probability by exactly `sigma(w'_t) / sigma(w_t)`,
/// whatever the item and the items above, and leaves every other position unchanged.
#[test]
fn examination_and_attractiveness_factorise() {
    let enc = encoder();
    let pools = tensors(&enc, &[pool(7, 8)]);
    let (e, vars) = evaluator(EvaluatorKind::Cascade, &enc, 11);
    let orders = [
        vec![0, 1, 2, 3, 4],
        vec![4, 3, 7, 6, 5],
        vec![2, 0, 6, 1, 3],
    ];
    let before = click_logits(&e, &pools, &orders);
    let examination = vars
        .data()
        .lock()
        .expect("vars")
        .get("examination")
        .expect("examination logits")
        .clone();
    let w: Vec<f32> = examination.as_tensor().to_vec1().expect("w");
    let mut moved = w.clone();
    moved[2] = w[2] - 1.5;
    examination
        .set(&Tensor::new(moved.as_slice(), &Device::Cpu).expect("w'"))
        .expect("set");
    let after = click_logits(&e, &pools, &orders);
    let ratio = sigmoid(moved[2]) / sigmoid(w[2]);
    for (b, a) in before.iter().zip(&after) {
        for t in 0..5 {
            let (pb, pa) = (sigmoid(b[t]), sigmoid(a[t]));
            if t == 2 {
                assert!((pa / pb - ratio).abs() < 1e-3, "{pa} / {pb} vs {ratio}");
            } else {
                assert!((pa - pb).abs() < 1e-6, "position {t}: {pb} -> {pa}");
            }
        }
    }
}

/// A made-up spec (fields no code names): for each sparse item column, how many items
/// above share the value, bucketed 0, 1, 2, 3+; padding never counts.
#[test]
fn same_value_counts_follow_any_feature_spec() {
    let spec = FeatureSpec {
        user: EntityFeatures::default(),
        item: EntityFeatures {
            sparse: [("colour".to_owned(), 32), ("shape".to_owned(), 32)].into(),
            dense: [("weight".to_owned(), DenseTransform::Identity)].into(),
            ..Default::default()
        },
        semantic_ids: None,
    };
    let enc = FeatureEncoder::new(spec, DenseNormaliser::default());
    let colours = ["red", "green", "red", "red", "red", "blue"];
    let shapes = ["disc", "disc", "cube", "disc", "cube", "cube"];
    let candidates = |n: usize| -> Vec<Candidate> {
        (0..n)
            .map(|j| Candidate {
                item_id: Token(format!("i{j}")),
                sparse: [
                    ("colour".to_owned(), Token(colours[j].to_owned())),
                    ("shape".to_owned(), Token(shapes[j].to_owned())),
                ]
                .into(),
                dense: [("weight".to_owned(), j as f64)].into(),
                upstream_score: None,
            })
            .collect()
    };
    let user = UserFeatures {
        id: Token("u".to_owned()),
        sparse: Default::default(),
        dense: Default::default(),
    };
    // The second pool is the first four items, padded to six in the batch.
    let pools = tensors(
        &enc,
        &[(user.clone(), candidates(6)), (user, candidates(4))],
    );
    let buckets = same_above_buckets(&pools.item_sparse, &pools.mask).expect("buckets");
    let got: Vec<Vec<Vec<f32>>> = buckets.to_vec3().expect("vec");
    let one_hot = |count: usize| -> Vec<f32> {
        (0..SAME_ABOVE_BUCKETS)
            .map(|k| f32::from(u8::from(k == count.min(SAME_ABOVE_BUCKETS - 1))))
            .collect()
    };
    // Columns in name order: colour, then shape.
    let colour_counts = [0, 0, 1, 2, 3, 0];
    let shape_counts = [0, 1, 0, 2, 1, 2];
    for t in 0..6 {
        let want: Vec<f32> = one_hot(colour_counts[t])
            .into_iter()
            .chain(one_hot(shape_counts[t]))
            .collect();
        assert_eq!(got[0][t], want, "position {t}");
        if t < 4 {
            assert_eq!(got[1][t], want, "padded pool, position {t}");
        }
    }
    // The cascade evaluator builds on such a spec and scores its lists.
    let (e, _) = evaluator(EvaluatorKind::Cascade, &enc, 2);
    let scores = e.forward(&pools, None, &pools.mask).expect("forward");
    assert_eq!(scores.click_logits.dims(), &[2, 6]);
}

/// An item of the planted world: `(genre, format, quality)`.
type Item = (usize, usize, f64);

/// The planted click model of [`a_fitted_logistic_evaluator_recovers_planted_weights`]:
/// logit of the item `(genre, format, quality)` at `t` of `list` for a user of `tier`.
fn planted_logit(tier: usize, list: &[Item], t: usize) -> f64 {
    const POSITION: [f64; 6] = [0.0, -0.3, -0.6, -0.9, -1.2, -1.5];
    const GENRE: [f64; 3] = [0.5, 0.0, -0.5];
    // Items above of the same genre: 0, 1, 2, 3+.
    const SAME_GENRE_ABOVE: [f64; 4] = [0.0, -0.7, -1.2, -1.5];
    let (genre, format, quality) = list[t];
    let same = list[..t].iter().filter(|item| item.0 == genre).count();
    let cross = if tier == genre { 1.0 } else { 0.0 };
    // Asymmetric adjacency: format 0 primes format 1, not the other way round.
    let primed = t > 0 && list[t - 1].1 == 0 && format == 1;
    -1.0 + POSITION[t]
        + GENRE[genre]
        + 0.8 * quality
        + cross
        + SAME_GENRE_ABOVE[same.min(3)]
        + if primed { 1.2 } else { 0.0 }
}

/// Lists of six random items (genre 0-2, format 0-1, quality ~ N(0, 1)) shown in random
/// order to users of tier 0-1, as `(tier, list)`.
fn random_lists(n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<(usize, Vec<Item>)> {
    use rand::Rng;
    (0..n)
        .map(|_| {
            let tier = rng.random_range(0..2);
            let list = (0..6)
                .map(|_| {
                    (
                        rng.random_range(0..3),
                        rng.random_range(0..2),
                        crate::random::normal(rng),
                    )
                })
                .collect();
            (tier, list)
        })
        .collect()
}

/// A logistic evaluator fitted by the evaluator's training on clicks drawn from a planted
/// logistic model (position, a value, a dense field, a user x item cross, a same-value
/// count and an asymmetric previous x current pair) recovers each planted effect: the
/// logit differences it predicts for lists that differ in one effect match the planted
/// weights, and its logits on fresh lists match the planted ones.
#[test]
fn a_fitted_logistic_evaluator_recovers_planted_weights() {
    use rand::SeedableRng;

    use crate::train::{train_evaluator, TrainingConfig};

    let enc = planted::encoder();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let train = planted::examples(&enc, 20_000, &mut rng);
    let validation = planted::examples(&enc, 2_000, &mut rng);
    let (e, vars) = evaluator(EvaluatorKind::Logistic, &enc, 3);
    let cfg = crate::model::EvaluatorConfig {
        kind: EvaluatorKind::Logistic,
        ..Default::default()
    };
    let training = TrainingConfig {
        evaluator_lr: 0.005,
        evaluator_batch: 256,
        evaluator_epochs: 40,
        evaluator_patience: 3,
        ..Default::default()
    };
    // Embedding tables as `rerank.toml` draws them.
    crate::train::seeded_init_scaled(&vars, 3, 0.05).expect("init");
    train_evaluator(
        &e,
        &vars,
        &cfg,
        &training,
        &train,
        &validation,
        &enc,
        &Device::Cpu,
    )
    .expect("train");

    // The model's click logits of `list` for a user of `tier`.
    let fitted = |tier: usize, list: &[Item]| -> Vec<f32> {
        let pools = tensors(&enc, &[(planted::user(tier), planted::candidates(list))]);
        e.forward(&pools, None, &pools.mask)
            .expect("forward")
            .click_logits
            .to_vec2::<f32>()
            .expect("logits")
            .remove(0)
    };
    // One effect at a time: (what, planted difference, fitted difference).
    let contrasts = [
        (
            "format 0 primes format 1",
            1.2,
            fitted(0, &[(2, 0, 0.0), (1, 1, 0.0)])[1] - fitted(0, &[(2, 1, 0.0), (1, 1, 0.0)])[1],
        ),
        (
            "one item of the same genre above",
            -0.7,
            fitted(0, &[(0, 0, 0.0), (0, 0, 0.0)])[1] - fitted(0, &[(1, 0, 0.0), (0, 0, 0.0)])[1],
        ),
        (
            "tier x genre",
            1.0,
            fitted(0, &[(0, 0, 0.0)])[0]
                - fitted(1, &[(0, 0, 0.0)])[0]
                - (fitted(0, &[(2, 0, 0.0)])[0] - fitted(1, &[(2, 0, 0.0)])[0]),
        ),
        (
            "quality +1",
            0.8,
            fitted(0, &[(2, 0, 1.0)])[0] - fitted(0, &[(2, 0, 0.0)])[0],
        ),
    ];
    for (what, planted, got) in contrasts {
        assert!(
            (f64::from(got) - planted).abs() < 0.2,
            "{what}: fitted {got:.3}, planted {planted}"
        );
    }
    let fresh = random_lists(300, &mut rng);
    let mut error = 0.0;
    for (tier, list) in &fresh {
        for (t, z) in fitted(*tier, list).into_iter().enumerate() {
            error += (f64::from(z) - planted_logit(*tier, list, t)).abs();
        }
    }
    let mean_error = error / (fresh.len() * 6) as f64;
    assert!(
        mean_error < 0.15,
        "mean |fitted - planted| logit: {mean_error:.3}"
    );
}

/// The planted logistic click model's data: a user field `tier`, item fields `genre`,
/// `format` and a standard-normal `quality`, lists drawn by `random_lists`.
mod planted {
    use rand::Rng;

    use super::*;
    use crate::encoded::Example;

    pub fn encoder() -> FeatureEncoder {
        let spec = FeatureSpec {
            user: EntityFeatures {
                sparse: [("tier".to_owned(), 2)].into(),
                exact: ["tier".to_owned()].into(),
                ..Default::default()
            },
            item: EntityFeatures {
                sparse: [("genre".to_owned(), 3), ("format".to_owned(), 2)].into(),
                exact: ["genre".to_owned(), "format".to_owned()].into(),
                dense: [("quality".to_owned(), DenseTransform::Identity)].into(),
            },
            semantic_ids: None,
        };
        // Quality is drawn standard normal: its z-score is itself.
        let unit = crate::features::FieldStats {
            mean: 0.0,
            std: 1.0,
            count: 1,
        };
        let normaliser = DenseNormaliser {
            item: [("quality".to_owned(), unit)].into(),
            ..Default::default()
        };
        FeatureEncoder::new(spec, normaliser)
    }

    pub fn user(tier: usize) -> UserFeatures {
        UserFeatures {
            id: Token(format!("u{tier}")),
            sparse: [("tier".to_owned(), Token::from(tier as u64))].into(),
            dense: Default::default(),
        }
    }

    pub fn candidates(list: &[Item]) -> Vec<Candidate> {
        list.iter()
            .enumerate()
            .map(|(j, &(genre, format, quality))| Candidate {
                item_id: Token(format!("i{j}")),
                sparse: [
                    ("genre".to_owned(), Token::from(genre as u64)),
                    ("format".to_owned(), Token::from(format as u64)),
                ]
                .into(),
                dense: [("quality".to_owned(), quality)].into(),
                upstream_score: None,
            })
            .collect()
    }

    /// `n` random lists, each clicked by the planted model, as uniformly random
    /// (exploration) logged lists.
    pub fn examples(
        enc: &FeatureEncoder,
        n: usize,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Vec<Example> {
        random_lists(n, rng)
            .into_iter()
            .map(|(tier, list)| {
                let clicks: Vec<bool> = (0..list.len())
                    .map(|t| {
                        let p = 1.0 / (1.0 + (-planted_logit(tier, &list, t)).exp());
                        rng.random_bool(p)
                    })
                    .collect();
                let cands = candidates(&list);
                Example {
                    pool: enc.encode(&[(&user(tier), cands.as_slice())]),
                    served: (0..list.len()).collect(),
                    utility: clicks.iter().filter(|&&c| c).count() as f32,
                    clicks,
                    exploration: true,
                    user_id: format!("u{tier}"),
                    item_ids: cands.iter().map(|c| c.item_id.0.clone()).collect(),
                }
            })
            .collect()
    }
}
