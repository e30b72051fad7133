//! The paper's baselines and transfer variants: a short run of each improves the
//! objective its recipe optimises, and training is deterministic under a seed.

use std::sync::OnceLock;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use super::tests::{job, pipeline, simulate};
use super::*;
use crate::config::PipelineConfig;
use crate::encoded::pool_tensors;
use crate::model::{rewards, Bundle, Ranker, Variant};

/// An evaluator trained once on simulated logs, and the logs, in memory.
struct Fixture {
    pipeline: PipelineConfig,
    evaluator: Evaluator,
    dataset: Dataset,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let logs = tmp.path().join("logs");
        simulate(&logs, 1500, 3);
        let mut p = pipeline();
        // The objective under test is the evaluator's reward; with a KL penalty RL
        // maximises `R - beta KL` instead, which may give up reward near the start.
        p.training.reference_kl = 0.0;
        let data = logs.display().to_string();
        let out = tmp.path().join("evaluator");
        run(&job(&p, &data, &out, 1), &Device::Cpu).expect("evaluator");
        let bundle = Bundle::load(&out, &Device::Cpu).expect("bundle");
        let dataset = Dataset::load(
            &data,
            &p.features,
            crate::train::Split::all(p.training.validation_share),
            Some(bundle.encoder.clone()),
        )
        .expect("dataset");
        Fixture {
            pipeline: p,
            evaluator: bundle.evaluator,
            dataset,
        }
    })
}

fn build(variant: Variant, fx: &Fixture, seed: u64) -> (Ranker, VarMap) {
    let cfg = GeneratorConfig {
        variant,
        ..fx.pipeline.generator.clone()
    };
    let vars = VarMap::new();
    let ranker = Ranker::new(
        &cfg,
        &fx.dataset.encoder,
        10,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )
    .expect("ranker");
    seeded_init(&vars, seed).expect("init");
    (ranker, vars)
}

fn train(variant: Variant, fx: &Fixture, steps: usize) -> (Ranker, VarMap) {
    let (ranker, vars) = build(variant, fx, 11);
    let cfg = TrainingConfig {
        grpo_steps: steps,
        supervised_steps: steps,
        supervised_batch: 32,
        ..fx.pipeline.training.clone()
    };
    train_ranker(
        variant,
        &ranker,
        &vars,
        &fx.evaluator,
        None,
        &cfg,
        &fx.dataset.train,
        &fx.dataset.encoder,
        10,
        &Device::Cpu,
    )
    .expect("train");
    (ranker, vars)
}

/// What the variant's recipe optimises last, on fixed validation lists (higher is
/// better): the evaluator's mean reward (`training.reward`) of its lists after RL, else
/// minus the supervised loss.
fn objective(variant: Variant, ranker: &Ranker, fx: &Fixture) -> f64 {
    let device = Device::Cpu;
    let enc = &fx.dataset.encoder;
    if variant.recipe().rl.is_some() {
        let pools: Vec<&Example> = fx.dataset.validation.iter().take(150).collect();
        let tensors = pool_tensors(&pools, enc, &device).expect("pools");
        let lists = ranker
            .rank(&tensors, &vec![10; pools.len()], &fx.evaluator)
            .expect("rank");
        // The reward the recipe's RL maximised (the pipeline's `training.reward`).
        let reward = fx.pipeline.training.reward;
        let r = rewards(&fx.evaluator, &tensors, &lists, reward).expect("rewards");
        r.iter().map(|&x| f64::from(x)).sum::<f64>() / r.len() as f64
    } else {
        let clicked: Vec<&Example> = fx
            .dataset
            .validation
            .iter()
            .filter(|e| e.clicks.contains(&true))
            .take(150)
            .collect();
        let loss = supervised_loss(ranker, &clicked, Target::Clicks, enc, &device).expect("loss");
        -f64::from(loss.to_scalar::<f32>().expect("scalar"))
    }
}

fn baselines() -> impl Iterator<Item = Variant> {
    Variant::PAPER
        .into_iter()
        .chain(Variant::NEIGHBOURS)
        .filter(|&v| v != Variant::Eglr)
}

#[test]
fn every_baseline_improves_its_own_objective() {
    let fx = fixture();
    let mut report = Vec::new();
    for variant in baselines() {
        let before = objective(variant, &build(variant, fx, 11).0, fx);
        let after = objective(variant, &train(variant, fx, 80).0, fx);
        report.push((variant.name(), before, after));
    }
    let failed: Vec<_> = report
        .iter()
        .filter(|(_, b, a)| a.partial_cmp(b) != Some(std::cmp::Ordering::Greater))
        .collect();
    assert!(
        failed.is_empty(),
        "no improvement: {failed:?} (all: {report:?})"
    );
}

#[test]
fn baselines_train_deterministically_under_a_seed() {
    let fx = fixture();
    for variant in baselines() {
        let (a, vars_a) = train(variant, fx, 6);
        let (b, vars_b) = train(variant, fx, 6);
        let (wa, wb) = (snapshot(&vars_a).expect("a"), snapshot(&vars_b).expect("b"));
        for (name, ta) in &wa {
            let diff = (ta - &wb[name])
                .expect("diff")
                .abs()
                .expect("abs")
                .max_all()
                .expect("max")
                .to_scalar::<f32>()
                .expect("scalar");
            assert_eq!(diff, 0.0, "{}: {name} differs between runs", variant.name());
        }
        let pools: Vec<&Example> = fx.dataset.validation.iter().take(20).collect();
        let tensors = pool_tensors(&pools, &fx.dataset.encoder, &Device::Cpu).expect("pools");
        let lens = vec![10; pools.len()];
        let rank = |r: &Ranker| {
            r.rank(&tensors, &lens, &fx.evaluator)
                .expect("rank")
                .orders()
        };
        assert_eq!(rank(&a), rank(&b), "{}: lists differ", variant.name());
    }
}
