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
