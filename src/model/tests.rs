use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::features::{
    DenseNormaliser, DenseTransform, EntityFeatures, FeatureEncoder, FeatureSpec,
};
use crate::schema::{Candidate, Token, UserFeatures};

pub(crate) fn encoder() -> FeatureEncoder {
    let spec = FeatureSpec {
        user: EntityFeatures {
            sparse: [("segment".to_owned(), 8)].into(),
            dense: [("activity".to_owned(), DenseTransform::Identity)].into(),
            ..Default::default()
        },
        item: EntityFeatures {
            sparse: [("category".to_owned(), 16), ("item_id".to_owned(), 256)].into(),
            dense: [("views".to_owned(), DenseTransform::Log1p)].into(),
            ..Default::default()
        },
        semantic_ids: None,
    };
    FeatureEncoder::new(spec, DenseNormaliser::default())
}

pub(crate) fn pool(seed: usize, n: usize) -> (UserFeatures, Vec<Candidate>) {
    let user = UserFeatures {
        id: Token(format!("u{seed}")),
        sparse: [("segment".to_owned(), Token::from((seed % 8) as u64))].into(),
        dense: [("activity".to_owned(), seed as f64 / 10.0)].into(),
    };
    let candidates = (0..n)
        .map(|j| Candidate {
            item_id: Token(format!("i{}", seed * 31 + j)),
            sparse: [
                ("category".to_owned(), Token::from(((seed + j) % 5) as u64)),
                ("item_id".to_owned(), Token(format!("i{}", seed * 31 + j))),
            ]
            .into(),
            dense: [("views".to_owned(), (10 * j) as f64)].into(),
            upstream_score: None,
        })
        .collect();
    (user, candidates)
}

fn tensors(enc: &FeatureEncoder, pools: &[(UserFeatures, Vec<Candidate>)]) -> PoolTensors {
    let refs: Vec<(&UserFeatures, &[Candidate])> =
        pools.iter().map(|(u, c)| (u, c.as_slice())).collect();
    PoolTensors::new(&enc.encode(&refs), enc, &Device::Cpu).expect("tensors")
}

fn generator(cfg: &GeneratorConfig) -> (Generator, VarMap) {
    let vars = VarMap::new();
    let g = Generator::new(
        cfg,
        &encoder(),
        12,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )
    .expect("generator");
    (g, vars)
}

fn greedy(g: &Generator, pools: &PoolTensors, len: usize) -> Decoded {
    let enc = g.encode(pools).expect("encode");
    let lens = vec![len; pools.batch()];
    g.decode(&enc, &lens, DecodeOptions::greedy())
        .expect("decode")
}

/// The Transformer's KV cache, and the GRU's carried state (EG-Rerank's decoder), give
/// what recomputing the whole sequence gives.
#[test]
fn kv_cache_matches_full_recompute() {
    for cfg in [
        GeneratorConfig {
            layers: 2,
            ..GeneratorConfig::default()
        },
        GeneratorConfig {
            variant: Variant::EgRerankEglr,
            ..GeneratorConfig::default()
        },
    ] {
        incremental_matches_full(&cfg);
    }
}

fn incremental_matches_full(cfg: &GeneratorConfig) {
    let (g, _) = generator(cfg);
    let tokens = Tensor::randn(0f32, 1.0, (3, 9, cfg.d_model), &Device::Cpu).expect("tokens");
    let full = g.decoder_full(&tokens).expect("full");
    for fixed in [false, true] {
        let mut caches = g.new_state(9, fixed);
        for t in 0..9 {
            let x = tokens
                .narrow(1, t, 1)
                .and_then(|x| x.squeeze(1))
                .expect("token");
            let step = g.decoder_step(&x, t, &mut caches).expect("step");
            let expected = full
                .narrow(1, t, 1)
                .and_then(|x| x.squeeze(1))
                .expect("row");
            let diff: f32 = (step - expected)
                .and_then(|d| d.abs())
                .and_then(|d| d.max_all())
                .and_then(|d| d.to_scalar())
                .expect("diff");
            assert!(
                diff <= 1e-4,
                "{:?} step {t} (fixed cache: {fixed}): max |diff| = {diff}",
                cfg.variant
            );
        }
    }
    // Whole decodes agree too, with and without the cache.
    let pools = tensors(&encoder(), &[pool(1, 10), pool(2, 7)]);
    let enc = g.encode(&pools).expect("encode");
    let run = |use_cache| {
        g.decode(
            &enc,
            &[5, 5],
            DecodeOptions {
                pick: Pick::Greedy,
                track_log_prob: false,
                use_cache,
            },
        )
        .expect("decode")
        .lists
    };
    let (cached, recomputed) = (run(true), run(false));
    for (a, b) in cached.iter().flatten().zip(recomputed.iter().flatten()) {
        assert_eq!(a.item, b.item);
        assert!((a.entropy_after - b.entropy_after).abs() < 1e-4);
    }
}

#[test]
fn deepsets_context_ignores_pool_order() {
    let (g, _) = generator(&GeneratorConfig::default());
    let (user, cands) = pool(3, 8);
    let mut shuffled = cands.clone();
    shuffled.reverse();
    shuffled.swap(0, 3);
    let enc = encoder();
    let a = g
        .encode(&tensors(&enc, &[(user.clone(), cands)]))
        .expect("a")
        .s0;
    let b = g.encode(&tensors(&enc, &[(user, shuffled)])).expect("b").s0;
    let diff: f32 = (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar())
        .expect("diff");
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn entropy_gate_and_cap() {
    let pools = tensors(&encoder(), &[pool(1, 12), pool(2, 12)]);
    let k = 2;
    let steps = |theta: f64| {
        let cfg = GeneratorConfig {
            theta,
            max_reasoning_steps: k,
            variant: Variant::Eglr,
            ..GeneratorConfig::default()
        };
        let (g, _) = generator(&cfg);
        greedy(&g, &pools, 10)
    };
    let off = steps(f64::INFINITY);
    assert!(off.lists.iter().flatten().all(|p| p.reasoning_steps == 0));
    assert_eq!(off.steps, 10, "one token per item");
    // theta = 0: every position has >= 3 candidates left, so H > 0 and exactly K tokens.
    let all = steps(0.0);
    assert!(
        all.lists
            .iter()
            .flatten()
            .all(|p| p.reasoning_steps == k as u32),
        "{:?}",
        all.lists
    );
    assert_eq!(all.steps, 10 * (k + 1));
    // In between, the cap holds and reasoning lowers the entropy it is allowed to see.
    let some = steps(1.5);
    assert!(some
        .lists
        .iter()
        .flatten()
        .all(|p| p.reasoning_steps <= k as u32));
    let backbone = GeneratorConfig {
        variant: Variant::Backbone,
        theta: 0.0,
        ..GeneratorConfig::default()
    };
    let (g, _) = generator(&backbone);
    assert!(greedy(&g, &pools, 10)
        .lists
        .iter()
        .flatten()
        .all(|p| p.reasoning_steps == 0));
    let first = GeneratorConfig {
        variant: Variant::ReasonFirst,
        reason_first_steps: 3,
        ..GeneratorConfig::default()
    };
    let (g, _) = generator(&first);
    let d = greedy(&g, &pools, 10);
    for list in &d.lists {
        assert_eq!(list[0].reasoning_steps, 3);
        assert!(list[1..].iter().all(|p| p.reasoning_steps == 0));
    }
}

#[test]
fn lists_are_permutations_of_real_candidates() {
    let enc = encoder();
    let pools = tensors(&enc, &[pool(1, 12), pool(2, 4), pool(3, 9)]);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let generators = Variant::ABLATION
        .iter()
        .chain(&Variant::PAPER)
        .chain(&Variant::NEIGHBOURS)
        .filter(|v| v.scorer().is_none());
    for cfg in generators.map(|&variant| GeneratorConfig {
        variant,
        theta: 0.5,
        ..GeneratorConfig::default()
    }) {
        let (g, _) = generator(&cfg);
        let encd = g.encode(&pools).expect("encode");
        for pick in [Pick::Greedy, Pick::Sample(&mut rng)] {
            let d = g
                .decode(
                    &encd,
                    &[10, 10, 10],
                    DecodeOptions {
                        pick,
                        track_log_prob: true,
                        use_cache: true,
                    },
                )
                .expect("decode");
            for (list, real) in d.orders().iter().zip([12, 4, 9]) {
                assert_eq!(list.len(), real.min(10), "{:?}", cfg.variant);
                let mut seen = list.clone();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len(), list.len(), "distinct");
                assert!(
                    list.iter().all(|&i| i < real),
                    "never a padded slot: {list:?}"
                );
            }
            let lp: Vec<f32> = d.log_prob.expect("log prob").to_vec1().expect("vec");
            assert!(lp.iter().all(|&x| x <= 0.0 && x.is_finite()), "{lp:?}");
        }
    }
}

#[test]
fn variants_are_presets_of_one_generator() {
    let base = GeneratorConfig {
        tau0: 2.0,
        alpha: 4.0,
        ..GeneratorConfig::default()
    };
    let policy = |variant| {
        GeneratorConfig {
            variant,
            ..base.clone()
        }
        .policy()
    };
    assert_eq!(policy(Variant::Backbone).mode, ReasoningMode::None);
    assert_eq!(policy(Variant::V1).token, ReasoningToken::Plain);
    assert_eq!(policy(Variant::V2).token, ReasoningToken::ContextAware);
    assert_eq!(
        (
            policy(Variant::V2).tau_reason,
            policy(Variant::V2).tau_recommend
        ),
        (2.0, 2.0)
    );
    // Dynamic temperature: flatter for reasoning, sharper for recommending.
    assert_eq!(
        (
            policy(Variant::Eglr).tau_reason,
            policy(Variant::Eglr).tau_recommend
        ),
        (8.0, 0.5)
    );
    assert_eq!(
        policy(Variant::ReasonFirst).mode,
        ReasoningMode::ReasonFirst
    );
}

#[test]
fn evaluator_ignores_padding() {
    let enc = encoder();
    let vars = VarMap::new();
    let e = Evaluator::new(
        &EvaluatorConfig::default(),
        &enc,
        12,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )
    .expect("evaluator");
    let (user, cands) = pool(4, 6);
    let short = tensors(&enc, &[(user.clone(), cands[..4].to_vec())]);
    // The same 4 items padded to 6 in a batch with a longer list.
    let padded = tensors(&enc, &[(user, cands[..4].to_vec()), pool(5, 6)]);
    let a = e.forward(&short, None, &short.mask).expect("short");
    let b = e.forward(&padded, None, &padded.mask).expect("padded");
    let za: Vec<f32> = a.list_logit.to_vec1().expect("a");
    let zb: Vec<f32> = b.list_logit.to_vec1().expect("b");
    assert!((za[0] - zb[0]).abs() < 1e-4, "{za:?} vs {zb:?}");
    let ca: Vec<Vec<f32>> = a.click_logits.to_vec2().expect("a");
    let cb: Vec<Vec<f32>> = b.click_logits.to_vec2().expect("b");
    for j in 0..4 {
        assert!((ca[0][j] - cb[0][j]).abs() < 1e-4);
    }
}

fn ranker(cfg: &GeneratorConfig) -> (Ranker, VarMap) {
    let vars = VarMap::new();
    let r = Ranker::new(
        cfg,
        &encoder(),
        12,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )
    .expect("ranker");
    (r, vars)
}

/// An untrained judge with seeded weights.
fn evaluator(enc: &FeatureEncoder) -> Evaluator {
    seeded_evaluator(enc, 3).0
}

/// A default evaluator with weights seeded by `seed`, and its variables.
fn seeded_evaluator(enc: &FeatureEncoder, seed: u64) -> (Evaluator, VarMap) {
    seeded_evaluator_of(EvaluatorKind::Paper, enc, seed)
}

/// An evaluator of `kind` (default settings otherwise, lists of up to 12) with weights
/// seeded by `seed`, and its variables.
/// Every ordered list of `len` distinct items of `0..n` (brute-force checks).
pub(crate) fn all_lists(n: usize, len: usize) -> Vec<Vec<usize>> {
    let mut lists: Vec<Vec<usize>> = vec![Vec::new()];
    for _ in 0..len {
        let mut longer = Vec::new();
        for l in &lists {
            for j in (0..n).filter(|j| !l.contains(j)) {
                let mut next = l.clone();
                next.push(j);
                longer.push(next);
            }
        }
        lists = longer;
    }
    lists
}

pub(crate) fn seeded_evaluator_of(
    kind: EvaluatorKind,
    enc: &FeatureEncoder,
    seed: u64,
) -> (Evaluator, VarMap) {
    let vars = VarMap::new();
    let cfg = EvaluatorConfig {
        kind,
        ..EvaluatorConfig::default()
    };
    let e = Evaluator::new(
        &cfg,
        enc,
        12,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )
    .expect("evaluator");
    crate::train::seeded_init(&vars, seed).expect("init");
    (e, vars)
}

/// Serving's one call, for every model: lists of the asked length (capped by the pool),
/// distinct real candidates, pools of different sizes in one batch.
#[test]
fn every_model_ranks_pools_of_different_sizes() {
    let enc = encoder();
    let pools = tensors(&enc, &[pool(1, 12), pool(2, 4), pool(3, 9)]);
    let judge = evaluator(&enc);
    for &variant in Variant::ABLATION
        .iter()
        .chain(&Variant::PAPER)
        .chain(&Variant::NEIGHBOURS)
    {
        let cfg = GeneratorConfig {
            variant,
            theta: 0.5,
            ..GeneratorConfig::default()
        };
        let (ranker, _) = ranker(&cfg);
        let lists = ranker
            .rank(&pools, &[10, 10, 3], &judge)
            .expect("rank")
            .orders();
        for (list, (real, want)) in lists.iter().zip([(12, 10), (4, 4), (9, 3)]) {
            assert_eq!(list.len(), want, "{variant:?}: {list:?}");
            let mut seen = list.clone();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), list.len(), "{variant:?}: distinct {list:?}");
            assert!(
                list.iter().all(|&i| i < real),
                "{variant:?}: padded slot {list:?}"
            );
        }
    }
}

/// Teacher forcing places exactly the targets, for the Transformer, the GRU and a
/// reason-first decoder (whose progressive loss terms are log-probabilities too).
#[test]
fn forced_selection_places_the_targets() {
    let enc = encoder();
    let pools = tensors(&enc, &[pool(1, 12), pool(2, 4)]);
    let targets = vec![vec![3, 0, 7], vec![2, 1]];
    for variant in [Variant::Eglr, Variant::EgRerank, Variant::Rearec] {
        let (g, _) = generator(&GeneratorConfig {
            variant,
            ..GeneratorConfig::default()
        });
        let d = g
            .decode(
                &g.encode(&pools).expect("encode"),
                &[3, 2],
                DecodeOptions {
                    pick: Pick::Forced(&targets),
                    track_log_prob: true,
                    use_cache: true,
                },
            )
            .expect("decode");
        assert_eq!(d.orders(), targets, "{variant:?}");
        let lp: Vec<f32> = d.log_prob.expect("log prob").to_vec1().expect("vec");
        assert!(lp.iter().all(|&x| x < 0.0 && x.is_finite()), "{lp:?}");
    }
}

/// LAST's test-time step only replaces the greedy list when the evaluator scores the
/// new one higher: per request, its list never scores below plain greedy decoding.
#[test]
fn last_keeps_a_list_only_when_the_evaluator_prefers_it() {
    let enc = encoder();
    let pools = tensors(&enc, &(0..8).map(|s| pool(s, 10)).collect::<Vec<_>>());
    let judge = evaluator(&enc);
    let cfg = GeneratorConfig {
        variant: Variant::Last,
        test_time_step: 0.5,
        ..GeneratorConfig::default()
    };
    let (ranker, vars) = ranker(&cfg);
    // Seeded weights: the "some list changed" check must not depend on candle's RNG.
    crate::train::seeded_init(&vars, 7).expect("init");
    let g = ranker.generator().expect("LAST is a generator");
    let lens = vec![10; 8];
    let plain = greedy(g, &pools, 10);
    let adapted = ranker.rank(&pools, &lens, &judge).expect("rank");
    let score = |d: &Decoded| rewards(&judge, &pools, d, Reward::Dcg).expect("rewards");
    let (before, after) = (score(&plain), score(&adapted));
    for (r, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(a >= b, "request {r}: {b} -> {a}");
    }
    assert!(
        after.iter().zip(&before).any(|(a, b)| a > b),
        "the update changed no list: {before:?}"
    );
}

/// Generator-evaluator selection: for every margin, each served list is the upstream
/// order or a generated list its evaluator scores above the upstream list by more than
/// the margin — never one it scores lower; and both outcomes occur for some margin.
#[test]
fn selection_never_serves_a_list_below_upstream_by_more_than_the_margin() {
    use crate::model::upstream_lists;
    use crate::model::UpstreamMargin;
    let enc = encoder();
    let pools = tensors(&enc, &(0..16).map(|s| pool(s, 12)).collect::<Vec<_>>());
    let judge = evaluator(&enc);
    let lens = vec![6; 16];
    let upstream = upstream_lists(&pools, &lens);
    let upstream_scores = rewards(&judge, &pools, &upstream, Reward::Clicks).expect("rewards");
    let (mut saw_model, mut saw_upstream) = (false, false);
    for margin in [-0.5, -0.05, 0.0, 0.02, 0.5] {
        let cfg = GeneratorConfig {
            selection: Some(UpstreamMargin {
                margin,
                reward: Reward::Clicks,
            }),
            ..GeneratorConfig::default()
        };
        let (ranker, vars) = ranker(&cfg);
        crate::train::seeded_init(&vars, 11).expect("init");
        let served = ranker.rank(&pools, &lens, &judge).expect("rank");
        let scores = rewards(&judge, &pools, &served, Reward::Clicks).expect("rewards");
        for r in 0..16 {
            let (s, u) = (f64::from(scores[r]), f64::from(upstream_scores[r]));
            if served.upstream[r] {
                assert_eq!(served.orders()[r], upstream.orders()[r], "row {r}");
                saw_upstream = true;
            } else {
                assert!(
                    s > u + margin * u.abs() - 1e-6,
                    "row {r}: {s} vs {u} at {margin}"
                );
                saw_model = true;
            }
        }
    }
    assert!(
        saw_model && saw_upstream,
        "model {saw_model}, upstream {saw_upstream}"
    );
}

/// The KL penalty of RL is zero when the policy is its reference (a frozen copy of the
/// same weights), so shaped rewards equal the evaluator's; a different policy gets a
/// non-zero log-ratio, and the penalty lowers rewards of lists it makes likelier.
#[test]
fn kl_term_is_zero_when_the_policy_equals_the_reference() {
    let enc = encoder();
    let pools = tensors(&enc, &(0..6).map(|s| pool(s, 10)).collect::<Vec<_>>());
    let cfg = GeneratorConfig::default();
    let (policy, vars) = generator(&cfg);
    crate::train::seeded_init(&vars, 5).expect("init");
    let frozen = Generator::new(
        &cfg,
        &enc,
        12,
        VarBuilder::from_tensors(
            crate::train::snapshot(&vars).expect("snapshot"),
            DType::F32,
            &Device::Cpu,
        ),
    )
    .expect("reference");
    let sampled = sample_lists(&policy, &pools, 1);
    let log_prob = sampled.tracked_log_prob().expect("log prob");
    let orders = sampled.orders();
    let same = crate::train::log_ratio(log_prob, &frozen, &pools, &orders).expect("ratio");
    assert!(same.iter().all(|d| d.abs() < 1e-4), "{same:?}");
    let rewards = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let shaped = crate::train::kl_shaped(&rewards, &same, 0.5);
    for (s, r) in shaped.iter().zip(rewards) {
        assert!((s - r).abs() < 1e-4, "{shaped:?}");
    }

    let (other, other_vars) = generator(&cfg);
    crate::train::seeded_init(&other_vars, 6).expect("init");
    let differ = crate::train::log_ratio(log_prob, &other, &pools, &orders).expect("ratio");
    assert!(differ.iter().any(|d| d.abs() > 1e-3), "{differ:?}");
    let shaped = crate::train::kl_shaped(&rewards, &differ, 0.5);
    for ((s, r), d) in shaped.iter().zip(rewards).zip(&differ) {
        assert!(((r - s) - 0.5 * d).abs() < 1e-4);
    }
}

/// Lists of 8 sampled from `g` for each pool, with tracked log-probabilities.
fn sample_lists(g: &Generator, pools: &PoolTensors, seed: u64) -> Decoded {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    g.decode(
        &g.encode(pools).expect("encode"),
        &vec![8; pools.batch()],
        DecodeOptions {
            pick: Pick::Sample(&mut rng),
            track_log_prob: true,
            use_cache: true,
        },
    )
    .expect("decode")
}

/// Names of the variables in `vars` that get no gradient, or an all-zero one, from `loss`.
fn untrained(vars: &VarMap, loss: &Tensor) -> Vec<String> {
    let grads = loss.backward().expect("backward");
    let data = vars.data().lock().expect("vars");
    let mut missing: Vec<String> = data
        .iter()
        .filter(|(_, v)| {
            grads.get(v).is_none_or(|g| {
                g.abs()
                    .and_then(|a| a.sum_all())
                    .and_then(|s| s.to_scalar::<f32>())
                    .map_or(true, |s| s == 0.0)
            })
        })
        .map(|(k, _)| k.clone())
        .collect();
    missing.sort();
    missing
}

/// Every parameter of the evaluator and of the Transformer generator learns: a gradient
/// reaches it from the training loss. candle-nn's fused layer norm and softmax have no
/// backward and used to stop the gradient above the encoders, so only the heads trained.
#[test]
fn every_parameter_gets_a_gradient() {
    let raw: Vec<_> = (0..6).map(|s| pool(s, 10)).collect();
    // A fitted normaliser, so the dense inputs are not all zero.
    let spec = encoder().spec().clone();
    let mut fit = crate::features::NormaliserFit::default();
    for (user, cands) in &raw {
        fit.add_user(&spec.user, &user.dense);
        for c in cands {
            fit.add_item(&spec.item, c);
        }
    }
    let enc = FeatureEncoder::new(spec.clone(), fit.finish(&spec.user, &spec.item));
    let pools = tensors(&enc, &raw);

    let (e, vars) = seeded_evaluator(&enc, 2);
    let scores = e.forward(&pools, None, &pools.mask).expect("forward");
    let clicks = Tensor::from_vec(
        (0..60)
            .map(|i| f32::from(u8::from(i % 3 == 0)))
            .collect::<Vec<_>>(),
        (6, 10),
        &Device::Cpu,
    )
    .expect("clicks");
    let utility =
        Tensor::from_vec(vec![1f32, 0.0, 2.0, 1.0, 0.5, 3.0], 6, &Device::Cpu).expect("utility");
    let loss = evaluator_loss(&scores, &clicks, &pools.mask, &utility, 0.5).expect("loss");
    assert_eq!(untrained(&vars, &loss), Vec::<String>::new(), "evaluator");

    // The Transformer generator, and LARES's with its recurrent core.
    for variant in [Variant::Eglr, Variant::Lares] {
        let cfg = GeneratorConfig {
            variant,
            layers: 2,
            ..GeneratorConfig::default()
        };
        let (g, gvars) = generator(&cfg);
        crate::train::seeded_init(&gvars, 4).expect("init");
        let sampled = sample_lists(&g, &pools, 9);
        let loss = sampled
            .tracked_log_prob()
            .expect("log prob")
            .sum_all()
            .expect("sum");
        assert_eq!(
            untrained(&gvars, &loss),
            Vec::<String>::new(),
            "{}",
            variant.name()
        );
    }
}

/// A generated list that already is the upstream order stays the model's list: only a
/// real fallback is flagged, so the trainer's copy gate still catches a generator that
/// only copies the upstream order.
#[test]
fn a_generated_copy_of_the_upstream_order_is_not_a_fallback() {
    let enc = encoder();
    let pools = tensors(&enc, &(0..4).map(|s| pool(s, 10)).collect::<Vec<_>>());
    let lens = [5; 4];
    let copy = Decoded::from_orders((0..4).map(|_| (0..5).collect()));
    let selection = UpstreamMargin {
        margin: 0.0,
        reward: Reward::Clicks,
    };
    let served =
        super::ranker::select_against_upstream(copy, &pools, &lens, &evaluator(&enc), selection)
            .expect("select");
    assert_eq!(served.upstream, vec![false; 4]);
    assert_eq!(served.orders(), vec![(0..5).collect::<Vec<_>>(); 4]);
}

/// A frozen generator decodes greedily on the host ([`Generator::freeze`]) and gives
/// what the candle path gives: the same lists, gates and steps, the same probabilities
/// and entropies to float rounding, over pools with padding and lists of different
/// lengths; variants whose tokens the host step does not build keep the candle path.
#[test]
fn a_frozen_generator_decodes_on_the_host_as_the_candle_path_does() {
    let base = GeneratorConfig::default();
    let configs = [
        GeneratorConfig {
            theta: 0.0,
            ..base.clone()
        },
        GeneratorConfig {
            theta: 1.5,
            layers: 2,
            ..base.clone()
        },
        GeneratorConfig {
            variant: Variant::V1,
            theta: 1.0,
            ..base.clone()
        },
        GeneratorConfig {
            variant: Variant::ReasonFirst,
            ..base.clone()
        },
        GeneratorConfig {
            variant: Variant::Backbone,
            ..base.clone()
        },
        GeneratorConfig {
            variant: Variant::Cmr,
            ..base.clone()
        },
        GeneratorConfig {
            variant: Variant::LaresEglr,
            ..base.clone()
        },
    ];
    let pools = tensors(
        &encoder(),
        &[pool(1, 10), pool(2, 7), pool(3, 12), pool(4, 3)],
    );
    for cfg in &configs {
        host_decode_matches_candle(cfg, &pools, &[5, 7, 4, 6]);
    }
    // A batch of several cache-sized tiles (about 100 rows each at these sizes) and a
    // partial last one decodes as the whole batch does on the candle path.
    let many: Vec<_> = (0..250).map(|k| pool(k, 3 + k % 10)).collect();
    let lens: Vec<usize> = (0..250).map(|k| 2 + k % 6).collect();
    host_decode_matches_candle(&configs[0], &tensors(&encoder(), &many), &lens);
    for variant in [Variant::EgRerank, Variant::StreamRec, Variant::Rearec] {
        let cfg = GeneratorConfig {
            variant,
            ..base.clone()
        };
        let (g, _) = generator(&cfg);
        assert!(
            !g.freeze().expect("freeze").decodes_on_host(),
            "{variant:?}"
        );
    }
}

/// The frozen generator's host decode gives the candle decode's lists, gates and steps
/// (probabilities and entropies to 1e-4).
fn host_decode_matches_candle(cfg: &GeneratorConfig, pools: &PoolTensors, lens: &[usize]) {
    let (g, _) = generator(cfg);
    let frozen = g.clone().freeze().expect("freeze");
    assert!(frozen.decodes_on_host(), "{:?}", cfg.variant);
    assert!(!g.decodes_on_host());
    let enc = g.encode(pools).expect("encode");
    let want = g
        .decode(&enc, lens, DecodeOptions::greedy())
        .expect("candle");
    let got = frozen
        .decode(&enc, lens, DecodeOptions::greedy())
        .expect("host");
    assert_eq!(got.steps, want.steps, "{:?}", cfg.variant);
    assert_eq!(got.lists.len(), want.lists.len());
    for (a, b) in got.lists.iter().zip(&want.lists) {
        assert_eq!(a.len(), b.len(), "{:?}", cfg.variant);
        for (p, q) in a.iter().zip(b) {
            assert_eq!(p.item, q.item, "{:?}", cfg.variant);
            assert_eq!(p.reasoning_steps, q.reasoning_steps, "{:?}", cfg.variant);
            for (x, y) in [
                (p.prob, q.prob),
                (p.entropy_before, q.entropy_before),
                (p.entropy_after, q.entropy_after),
            ] {
                assert!((x - y).abs() < 1e-4, "{:?}: {x} vs {y}", cfg.variant);
            }
        }
    }
}

/// LatentR3's sampled latent token is part of the action: a sampled list's tracked
/// log-probability is the sum of its items' (per position, as DAPO reads them) plus the
/// Gaussian log-density `-|r - mu|^2 / (2 sigma^2)` of its latent token, which is about
/// `-d / 2` (the sum of `d` halved squared standard normals). Without noise (`eglr`)
/// the two sums agree.
#[test]
fn latentr3_counts_its_sampled_latent_token_in_the_log_probability() {
    let enc = encoder();
    let pools = tensors(&enc, &(0..8).map(|s| pool(s, 10)).collect::<Vec<_>>());
    let rows = |variant: Variant| -> Vec<f32> {
        let cfg = GeneratorConfig {
            variant,
            ..GeneratorConfig::default()
        };
        let (g, vars) = generator(&cfg);
        crate::train::seeded_init(&vars, 3).expect("init");
        let sampled = sample_lists(&g, &pools, 5);
        let (items, mask) = sampled.tracked_item_log_probs().expect("items");
        assert_eq!(items.dims2().expect("dims"), (8, 8));
        let items = (items * mask).and_then(|x| x.sum(1)).expect("sum");
        let total = sampled.tracked_log_prob().expect("total");
        (total - items)
            .and_then(|d| d.to_vec1())
            .expect("difference")
    };
    let d = GeneratorConfig::default().d_model as f32;
    for extra in rows(Variant::Latentr3) {
        assert!(extra < 0.0 && extra > -2.0 * d, "latent density {extra}");
    }
    for extra in rows(Variant::Eglr) {
        assert!(extra.abs() < 1e-4, "no latent action in eglr: {extra}");
    }
}

/// LARES's depth is computation, not parameters: generators of depth 1 and 6 have the
/// same variables (names and shapes), yet refine the candidates differently; the
/// trajectory has one step per application of the block, the last being `encode`'s.
#[test]
fn lares_depth_adds_steps_not_parameters() {
    let enc = encoder();
    let pools = tensors(&enc, &(0..3).map(|s| pool(s, 7)).collect::<Vec<_>>());
    let build = |depth: usize| {
        let cfg = GeneratorConfig {
            variant: Variant::Lares,
            recurrent_depth: depth,
            ..GeneratorConfig::default()
        };
        let (g, vars) = generator(&cfg);
        crate::train::seeded_init(&vars, 8).expect("init");
        let shapes: std::collections::BTreeMap<String, Vec<usize>> = vars
            .data()
            .lock()
            .expect("vars")
            .iter()
            .map(|(name, v)| (name.clone(), v.dims().to_vec()))
            .collect();
        (g, shapes)
    };
    let (shallow, shallow_vars) = build(1);
    let (deep, deep_vars) = build(6);
    assert_eq!(shallow_vars, deep_vars, "depth must not add variables");
    assert!(
        deep_vars.keys().any(|k| k.starts_with("lares.core.")),
        "{deep_vars:?}"
    );
    let (_, plain_vars) = generator(&GeneratorConfig {
        variant: Variant::Backbone,
        ..GeneratorConfig::default()
    });
    let plain = plain_vars.data().lock().expect("vars").len();
    assert!(
        deep_vars.len() > plain,
        "the recurrent block's variables exist"
    );

    let steps = deep.encode_trajectory(&pools).expect("trajectory");
    assert_eq!(steps.len(), 6);
    let last = deep.encode(&pools).expect("encode");
    let gap = |a: &Tensor, b: &Tensor| -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar())
            .expect("gap")
    };
    assert_eq!(gap(&steps[5].h, &last.h), 0.0);
    assert!(
        gap(&steps[0].h, &steps[5].h) > 1e-4,
        "later steps refine further"
    );
    let one = shallow.encode(&pools).expect("encode");
    assert_eq!(shallow.encode_trajectory(&pools).expect("steps").len(), 1);
    assert_eq!(one.h.dims(), last.h.dims());
}

/// GR2's code-sum id embedding: an item's id slot is the sum of the embedding rows of its
/// code tokens (the levels and the disambiguating token), one slot whatever the levels,
/// beside the other fields' slots.
#[test]
fn a_semantic_id_embeds_as_the_sum_of_its_code_tokens() {
    let mut spec = encoder().spec().clone();
    spec.semantic_ids = Some(crate::features::SemanticIdSpec {
        levels: 2,
        codes: 8,
        ..Default::default()
    });
    let pools: Vec<_> = (0..3).map(|s| pool(s, 6)).collect();
    let catalogue: std::collections::BTreeMap<String, Candidate> = pools
        .iter()
        .flat_map(|(_, c)| c.iter())
        .map(|c| (c.item_id.0.clone(), c.clone()))
        .collect();
    let enc = FeatureEncoder::new(spec, DenseNormaliser::default())
        .fit_semantic_ids(&catalogue)
        .expect("fit");
    let vars = VarMap::new();
    let e = 4;
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let embedding = embedding::FeatureEmbedding::new(&enc, e, vb).expect("embedding");
    let pt = tensors(&enc, &pools);
    let (_, items) = embedding.forward(&pt).expect("forward");
    // category, the semantic id, the dense fields.
    assert_eq!(items.dims(), &[3, 6, 3 * e]);
    let table: Vec<Vec<f32>> = vars
        .data()
        .lock()
        .expect("vars")
        .get("item.table.weight")
        .expect("item table")
        .as_tensor()
        .to_vec2()
        .expect("rows");
    let rows: Vec<Vec<Vec<u32>>> = pt.item_sparse.to_vec3().expect("rows");
    let items: Vec<Vec<Vec<f32>>> = items.to_vec3().expect("items");
    for (b, pool) in rows.iter().enumerate() {
        for (n, columns) in pool.iter().enumerate() {
            // category, 2 levels, the disambiguating token.
            assert_eq!(columns.len(), 4);
            for k in 0..e {
                let sum: f32 = columns[1..].iter().map(|&r| table[r as usize][k]).sum();
                assert!((items[b][n][e + k] - sum).abs() < 1e-5, "pool {b} item {n}");
                assert_eq!(items[b][n][k], table[columns[0] as usize][k]);
            }
        }
    }
}
