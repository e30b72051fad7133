use std::path::Path;

use candle_core::Device;

use super::*;
use crate::config::PipelineConfig;
use crate::encoded::{is_cold_item, pool_tensors};
use crate::list_log::{LogReader, LogWriter, RollPolicy};
use crate::model::{Bundle, Variant};
use crate::offline::evaluate::{evaluate, EvalOptions};
use crate::sim::{write_logs, Traffic, World};

#[test]
fn advantages_are_normalised_within_groups() {
    let a = group_advantages(&[1.0, 2.0, 3.0, 5.0, 5.0, 5.0], 3);
    let s = (2.0f32 / 3.0).sqrt();
    let expected = [-1.0 / s, 0.0, 1.0 / s, 0.0, 0.0, 0.0];
    for (x, y) in a.iter().zip(expected) {
        assert!((x - y).abs() < 1e-4, "{a:?}");
    }
}

#[test]
fn auc_by_hand() {
    // Positive-negative pairs ranked right: 0.4 beats 0.1 and 0.35, 0.8 beats all three.
    let mut s = vec![
        (0.1, false),
        (0.4, true),
        (0.35, false),
        (0.8, true),
        (0.5, false),
    ];
    assert!((auc(&mut s) - 5.0 / 6.0).abs() < 1e-12);
    let mut tied = vec![(0.5, false), (0.5, true)];
    assert_eq!(auc(&mut tied), 0.5);
}

/// A small pipeline: the shipped local features, small models, a small world.
pub(super) fn pipeline() -> PipelineConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut p =
        PipelineConfig::load(&root.join("pipelines/local.toml"), &[]).expect("local pipeline");
    p.evaluator.d_model = 32;
    p.evaluator.layers = 1;
    p.generator.d_model = 32;
    p.generator.max_reasoning_steps = 1;
    p.limits.max_list_len = 10;
    p.training.evaluator_epochs = 4;
    p.training.grpo_pools_per_step = 8;
    p.training.group_size = 4;
    p.training.progress_every = 10;
    // Minutes of imitation: only the test of the search warm start turns it on.
    p.training.search_warm_start_steps = 0;
    p
}

pub(super) fn simulate(dir: &Path, lists: u64, seed: u64) -> World {
    let world = World::small(3);
    let traffic = Traffic::new(&world, seed);
    let policy = RollPolicy {
        max_bytes: 1 << 30,
        row_group_rows: 1024,
    };
    let mut w = LogWriter::create(dir, "lists", policy).expect("writer");
    write_logs(&traffic, lists, 1024, &mut w, |_| {}).expect("logs");
    w.finish().expect("publish");
    world
}

pub(super) fn job<'a>(
    p: &'a PipelineConfig,
    data: &'a str,
    out: &'a Path,
    steps: usize,
) -> TrainJob<'a> {
    TrainJob {
        data,
        evaluator: p.evaluator.clone(),
        generator: p.generator.clone(),
        training: TrainingConfig {
            grpo_steps: steps,
            ..p.training.clone()
        },
        features: &p.features,
        list_len: 10,
        max_list_len: 10,
        evaluator_from: None,
        part: crate::train::DataPart::All,
        evaluator_only: false,
        monitor: None,
        out,
        version: "test".into(),
        git_revision: None,
    }
}

#[test]
fn tiny_end_to_end_run_raises_the_evaluator_reward() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let logs = tmp.path().join("logs");
    let world = simulate(&logs, 1500, 1);
    let p = pipeline();
    let data = logs.display().to_string();
    let device = Device::Cpu;
    let (untrained, trained) = (tmp.path().join("b0"), tmp.path().join("b1"));
    // Same seed, same evaluator; 1 GRPO step versus 80.
    run(&job(&p, &data, &untrained, 1), &device).expect("train 1 step");
    let outcome = run(&job(&p, &data, &trained, 80), &device).expect("train 80 steps");
    let e = outcome.evaluator.expect("evaluator trained");
    assert!(
        e.validation_auc > 0.6,
        "evaluator learns clicks: AUC {}",
        e.validation_auc
    );
    let score = |dir: &Path| {
        let bundle = Bundle::load(dir, &device).expect("bundle");
        let examples = Dataset::load_all(&data, bundle.encoder.clone()).expect("examples");
        let opts = EvalOptions {
            batch: 128,
            list_len: 10,
            pass_at_n: 1,
            seed: 0,
            beam_width: 0,
        };
        let scorers = crate::offline::evaluate::Scorers {
            judge: None,
            judge_lists: None,
            world: Some(&world),
            beam_ensemble: None,
        };
        evaluate(&bundle, &examples[..300], scorers, &opts, &device).expect("eval")
    };
    let (before, after) = (score(&untrained), score(&trained));
    assert!(
        after.model.metrics.evaluator_score > before.model.metrics.evaluator_score,
        "evaluator reward {} -> {}",
        before.model.metrics.evaluator_score,
        after.model.metrics.evaluator_score
    );
}

/// The search warm start teaches the generator the evaluator's searched lists: after it,
/// the greedy decode places the searched item at clearly more positions than the same
/// generator without it (same seed, same evaluator).
#[test]
fn the_search_warm_start_imitates_the_evaluators_search() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let logs = tmp.path().join("logs");
    simulate(&logs, 800, 4);
    let p = pipeline();
    let data = logs.display().to_string();
    let device = Device::Cpu;
    let (plain, warm) = (tmp.path().join("plain"), tmp.path().join("warm"));
    run(&job(&p, &data, &plain, 1), &device).expect("without warm start");
    let mut warmed = job(&p, &data, &warm, 1);
    warmed.training.search_warm_start_steps = 150;
    warmed.training.search_warm_start_pools = 400;
    run(&warmed, &device).expect("with the search warm start");
    let agreement = |dir: &Path| -> f64 {
        let bundle = Bundle::load(dir, &device).expect("bundle");
        let examples = Dataset::load_all(&data, bundle.encoder.clone()).expect("examples");
        let examples = &examples[..200];
        let searched = search_lists(&bundle.evaluator, examples, 1, 10, &bundle.encoder, &device)
            .expect("search");
        let refs: Vec<&Example> = examples.iter().collect();
        let pools = pool_tensors(&refs, &bundle.encoder, &device).expect("pools");
        let g = bundle.ranker.generator().expect("a generator");
        let lens = vec![10; examples.len()];
        let greedy = g
            .decode(
                &g.encode(&pools).expect("encode"),
                &lens,
                crate::model::DecodeOptions::greedy(),
            )
            .expect("decode")
            .orders();
        let (same, all) = searched
            .iter()
            .zip(&greedy)
            .flat_map(|(s, g)| s.iter().zip(g))
            .fold((0usize, 0usize), |(same, all), (a, b)| {
                (same + usize::from(a == b), all + 1)
            });
        same as f64 / all as f64
    };
    let (before, after) = (agreement(&plain), agreement(&warm));
    // Seeded, so deterministic: 0.095 -> 0.291 when written.
    assert!(
        after > 2.0 * before && after > before + 0.1,
        "share of positions holding the searched item: {before:.3} -> {after:.3}"
    );
}

#[test]
fn training_is_reproducible_and_bundles_are_checked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let logs = tmp.path().join("logs");
    simulate(&logs, 400, 2);
    let mut p = pipeline();
    p.training.evaluator_epochs = 1;
    p.generator.variant = Variant::V1;
    let data = logs.display().to_string();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run(&job(&p, &data, &a, 3), &Device::Cpu).expect("a");
    run(&job(&p, &data, &b, 3), &Device::Cpu).expect("b");
    for f in ["evaluator.safetensors", "generator.safetensors"] {
        assert!(
            std::fs::read(a.join(f)).expect("a") == std::fs::read(b.join(f)).expect("b"),
            "{f} differs between runs"
        );
    }
    let bundle = Bundle::load(&a, &Device::Cpu).expect("load");
    assert_eq!(bundle.meta.generator.variant, Variant::V1);

    // A truncated weights file, a config that does not match the weights, bad JSON.
    let copy = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        for f in [
            "bundle.json",
            "evaluator.safetensors",
            "generator.safetensors",
        ] {
            std::fs::copy(a.join(f), dir.join(f)).expect("copy");
        }
        dir
    };
    let truncated = copy("truncated");
    let bytes = std::fs::read(truncated.join("generator.safetensors")).expect("read");
    std::fs::write(
        truncated.join("generator.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .expect("write");
    let e = Bundle::load(&truncated, &Device::Cpu).expect_err("truncated");
    assert!(e.to_string().contains("generator.safetensors"), "{e}");

    let mismatched = copy("mismatched");
    let meta = std::fs::read_to_string(mismatched.join("bundle.json")).expect("read");
    let meta = meta.replacen("\"ffn_dim\": 128", "\"ffn_dim\": 96", 2);
    std::fs::write(mismatched.join("bundle.json"), meta).expect("write");
    let e = Bundle::load(&mismatched, &Device::Cpu).expect_err("mismatch");
    assert!(e.to_string().contains("has shape"), "{e}");

    let garbage = copy("garbage");
    std::fs::write(
        garbage.join("bundle.json"),
        "{\"format\": 1, \"version\": 3}",
    )
    .expect("write");
    let e = Bundle::load(&garbage, &Device::Cpu).expect_err("garbage");
    assert!(e.to_string().contains("is not a valid bundle.json"), "{e}");
}

/// The judge learns from lists no served model learns from: with a judge part
/// reserved, the model part and the judge part split the training lists between them
/// (none in both, none lost), both keep the same validation lists, and fit the same
/// feature normaliser (so the judge can score the models' pools).
#[test]
fn judge_training_data_is_disjoint_from_the_serving_evaluators() {
    let tmp = tempfile::tempdir().expect("tmp");
    let logs = tmp.path().join("logs");
    simulate(&logs, 600, 4);
    let p = pipeline();
    let data = logs.display().to_string();
    let load = |part| {
        let split = Split {
            validation_share: 0.1,
            judge_share: 0.3,
            part,
            cold_item_share: 0.0,
        };
        Dataset::load(&data, &p.features, split, None).expect("dataset")
    };
    let (all, model, judge) = (
        load(DataPart::All),
        load(DataPart::Model),
        load(DataPart::Judge),
    );
    let key = |e: &Example| format!("{}/{}", e.user_id, e.item_ids.join(","));
    let keys =
        |d: &Dataset| -> std::collections::BTreeSet<String> { d.train.iter().map(key).collect() };
    let (m, j, a) = (keys(&model), keys(&judge), keys(&all));
    assert!(m.is_disjoint(&j), "a list is in both parts");
    assert_eq!(
        m.union(&j)
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        a
    );
    assert_eq!(model.train.len() + judge.train.len(), all.train.len());
    let share = judge.train.len() as f64 / all.train.len() as f64;
    assert!((0.2..0.4).contains(&share), "judge share {share}");
    assert_eq!(model.validation.len(), judge.validation.len());
    assert_eq!(model.encoder.normaliser(), judge.encoder.normaliser());

    // And a judge that shares the model's lists and seed is refused.
    let meta = |part, seed| crate::model::TrainingInfo {
        data: data.clone(),
        seed,
        part,
        judge_share: 0.3,
        cold_item_share: 0.0,
        git_revision: None,
        created_unix_ms: 0,
        metrics: serde_json::Value::Null,
    };
    let bundle_meta = |training| crate::model::BundleMeta {
        format: crate::model::BUNDLE_FORMAT,
        version: "v".into(),
        features: p.features.clone(),
        normaliser: all.encoder.normaliser().clone(),
        semantic_ids: None,
        evaluator: p.evaluator.clone(),
        generator: p.generator.clone(),
        max_list_len: 10,
        training,
    };
    let served = bundle_meta(meta(DataPart::Model, 1));
    let conflict = |j| crate::model::judge_conflict(&served, &bundle_meta(j));
    assert!(conflict(meta(DataPart::Judge, 1001)).is_none());
    assert!(conflict(meta(DataPart::Model, 1)).is_some());
    assert!(conflict(meta(DataPart::All, 1)).is_some());
}

#[test]
fn every_variable_gets_a_named_initialiser_and_unknown_names_are_refused() {
    let none = |_: &str| None;
    let linear = |_: &str| Some(vec![8, 4]);
    assert_eq!(Init::of("m.cls", &[1, 1, 8], none), Ok(Init::Token));
    assert_eq!(
        Init::of("f.user.table.weight", &[9, 8], none),
        Ok(Init::Table)
    );
    assert_eq!(
        Init::of("decoder.0.ln_attn.weight", &[8], none),
        Ok(Init::Const(1.0))
    );
    assert_eq!(
        Init::of("decoder.0.ffn.hidden.bias", &[8], linear),
        Ok(Init::LinearBias { fan_in: 4 })
    );
    assert_eq!(
        Init::of("decoder.gru.weight_ih_l0", &[24, 8], none),
        Ok(Init::Gru { hidden: 8 })
    );
    // A layer norm renamed to something no rule knows is an error, not zeros.
    let renamed = Init::of("decoder.0.norm1.bias", &[8], |_: &str| Some(vec![8]));
    assert!(renamed.is_err(), "{renamed:?}");
    assert!(Init::of("decoder.0.mystery", &[8], none).is_err());
    // And the model refuses a layer norm under a name the rules do not know.
    let vars = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vars, candle_core::DType::F32, &Device::Cpu);
    assert!(crate::model::LayerNorm::new(8, vb.pp("norm1")).is_err());
    assert!(crate::model::LayerNorm::new(8, vb.pp("final_norm")).is_ok());
}

/// DAPO's dynamic sampling in a run: a policy that samples the same list every time
/// (`tau_0` near 0) gives groups whose lists all get the same reward; every one is
/// dropped and the generator ends as it started. At the usual temperature the groups
/// carry a signal and the generator trains.
#[test]
fn dapo_drops_the_groups_whose_lists_all_score_the_same() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let logs = tmp.path().join("logs");
    simulate(&logs, 400, 4);
    let mut p = pipeline();
    p.training.evaluator_epochs = 1;
    p.training.rl = Some(crate::model::Rl::Dapo);
    p.generator.variant = Variant::Backbone;
    let data = logs.display().to_string();
    let weights = |dir: &Path| std::fs::read(dir.join("generator.safetensors")).expect("weights");
    let train = |p: &PipelineConfig, name: &str, steps: usize| {
        let out = tmp.path().join(name);
        let outcome = run(&job(p, &data, &out, steps), &Device::Cpu).expect(name);
        let rl = outcome.ranker.rl.expect("an RL report");
        (weights(&out), rl.groups, rl.dropped_groups)
    };
    let (start, ..) = train(&p, "start", 0);
    let (warm, groups, dropped) = train(&p, "warm", 3);
    assert!(groups >= 3 * p.training.grpo_pools_per_step, "{groups}");
    assert!(dropped < groups, "{dropped} of {groups} dropped");
    assert_ne!(
        warm, start,
        "DAPO on informative groups changes the generator"
    );

    p.generator.tau0 = 1e-4;
    let (start, ..) = train(&p, "cold-start", 0);
    let (cold, groups, dropped) = train(&p, "cold", 3);
    let rounds = p.training.dapo_sampling_rounds;
    assert_eq!(groups, 3 * rounds * p.training.grpo_pools_per_step);
    assert_eq!(dropped, groups, "every group of identical lists is dropped");
    assert_eq!(cold, start, "no signal, no update");
}

/// GR2's semantic ids end to end: a bundle trained with them stores its tokenizer and
/// loads with it, and a judge with hashed ids scores its lists on the judge's own
/// encoding of them (the same score of the initial order as when the judge judges
/// itself). With items held out, no held-out item reaches training, and the report
/// says how many the model serves.
#[test]
fn semantic_id_bundles_train_load_and_are_judged_by_a_hashed_judge() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let logs = tmp.path().join("logs");
    let world = simulate(&logs, 600, 5);
    let data = logs.display().to_string();
    let device = Device::Cpu;
    let mut hashed = pipeline();
    hashed.training.cold_item_share = 0.1;
    let mut semantic = hashed.clone();
    semantic.features.semantic_ids = Some(crate::features::SemanticIdSpec {
        levels: 2,
        codes: 16,
        ..Default::default()
    });
    let (judge_dir, model_dir) = (tmp.path().join("judge"), tmp.path().join("model"));
    run(&job(&hashed, &data, &judge_dir, 2), &device).expect("hashed");
    run(&job(&semantic, &data, &model_dir, 2), &device).expect("semantic");
    let (judge, model) = (
        Bundle::load(&judge_dir, &device).expect("judge"),
        Bundle::load(&model_dir, &device).expect("model"),
    );
    let ids = model.meta.semantic_ids.as_ref().expect("tokenizer stored");
    assert_eq!(model.encoder.semantic_ids(), Some(ids));
    assert!(ids.uniqueness >= 0.99, "uniqueness {}", ids.uniqueness);
    assert!(judge.meta.semantic_ids.is_none());

    let opts = EvalOptions {
        batch: 64,
        list_len: 10,
        pass_at_n: 1,
        seed: 0,
        beam_width: 0,
    };
    let lists = |b: &Bundle| Dataset::load_all(&data, b.encoder.clone()).expect("lists");
    let (judge_lists, model_lists) = (lists(&judge), lists(&model));
    let scorers = |judge_lists| crate::offline::evaluate::Scorers {
        judge: Some(&judge),
        judge_lists,
        world: Some(&world),
        beam_ensemble: None,
    };
    let by_model = evaluate(
        &model,
        &model_lists[..200],
        scorers(Some(&judge_lists)),
        &opts,
        &device,
    )
    .expect("model");
    let by_judge =
        evaluate(&judge, &judge_lists[..200], scorers(None), &opts, &device).expect("judge");
    let initial = |r: &crate::offline::evaluate::EvalReport| r.initial.metrics.judge_score;
    assert!(initial(&by_model).is_some());
    assert_eq!(initial(&by_model), initial(&by_judge));

    // The hold-out: every list training kept is free of held-out items, and there are
    // held-out items in the logs for the report to count.
    let split = Split {
        validation_share: 0.1,
        judge_share: 0.0,
        part: DataPart::All,
        cold_item_share: 0.1,
    };
    let warm = Dataset::load(&data, &hashed.features, split, None).expect("warm");
    let cold = |e: &Example| e.item_ids.iter().any(|id| is_cold_item(id, 0.1));
    assert!(!warm.train.iter().chain(&warm.validation).any(cold));
    assert!(judge_lists.iter().any(cold));
    assert!(warm.train.len() + warm.validation.len() < judge_lists.len());
    let served = by_model.initial.cold_items.expect("a hold-out is reported");
    assert!(
        served > 0.0 && served < 0.5,
        "cold share of the initial order {served}"
    );
}

/// A list training cannot encode is reported with the file that holds it, not the
/// first file of the glob.
#[test]
fn a_bad_list_is_reported_with_the_file_it_is_in() {
    let p = pipeline();
    let dir = tempfile::tempdir().expect("tempdir");
    simulate(dir.path(), 50, 1);
    let pattern = format!("{}/*.parquet", dir.path().display());
    let mut bad = LogReader::open(&pattern, 16)
        .expect("logs")
        .batches()
        .next()
        .expect("a batch")
        .expect("rows")[0]
        .clone();
    bad.request_id = "served-outside-its-pool".into();
    bad.served_items[0] = "not-in-the-pool".into();
    let policy = RollPolicy {
        max_bytes: 1 << 30,
        row_group_rows: 16,
    };
    let mut w = LogWriter::create(dir.path(), "more", policy).expect("writer");
    w.write(&[bad]).expect("write");
    w.finish().expect("publish");
    let err = Dataset::load(&pattern, &p.features, Split::all(0.1), None)
        .expect_err("a served item outside its pool");
    let text = err.to_string();
    assert!(
        text.contains("more-") && text.contains("not-in-the-pool"),
        "{text}"
    );
}
