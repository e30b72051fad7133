//! The continuous trainer's round: a candidate that is not better than the serving
//! model is kept aside and not published; a better one is published and a running
//! `serve` swaps it in without a restart and without a failed request.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use tokio::sync::watch;

use common::{pipeline, requests, spawn_load};
use eglr::config::PipelineConfig;
use eglr::list_log::{LogWriter, RollPolicy};
use eglr::model::{LiveModel, ModelStore};
use eglr::sim::{write_logs, Traffic, World};
use eglr::stream::{round_once, serve, EmbeddedBroker, ServeSettings, TrainerSettings};
use eglr::train::{self, TrainJob, TrainingConfig};

/// `n` simulated lists from the world the test requests come from.
fn simulated_logs(p: &PipelineConfig, dir: &Path, n: u64) {
    let world = World::generate(&p.simulator, 10, 3);
    let policy = RollPolicy {
        max_bytes: p.logs.roll_max_bytes,
        row_group_rows: 512,
    };
    let mut w = LogWriter::create(dir, "lists", policy).expect("writer");
    write_logs(&Traffic::new(&world, 21), n, 512, &mut w, |_| {}).expect("logs");
    w.finish().expect("publish");
}

/// The serving model `v000001`, trained on `logs`.
fn train_serving(p: &PipelineConfig, logs: &Path, store: &Path, epochs: usize, grpo_steps: usize) {
    let data = logs.display().to_string();
    let job = TrainJob {
        data: &data,
        evaluator: p.evaluator.clone(),
        generator: p.generator.clone(),
        // The loop's mechanics, not the model's quality, are under test: no search warm
        // start (minutes of imitation).
        training: TrainingConfig {
            evaluator_epochs: epochs,
            grpo_steps,
            search_warm_start_steps: 0,
            ..p.training.clone()
        },
        features: &p.features,
        list_len: p.limits.list_len,
        max_list_len: p.limits.max_list_len,
        evaluator_from: None,
        part: eglr::train::DataPart::All,
        evaluator_only: false,
        monitor: None,
        out: &store.join("v000001"),
        version: "v000001".into(),
        git_revision: None,
    };
    train::run(&job, &Device::Cpu).expect("serving model");
}

fn settings(
    p: &PipelineConfig,
    store: &Path,
    logs: &Path,
    grpo_steps: usize,
    lr: f64,
) -> TrainerSettings {
    let mut p = p.clone();
    p.model.store = store.to_owned();
    p.logs.dir = logs.to_owned();
    p.trainer.grpo_steps = grpo_steps;
    p.trainer.evaluator_epochs = 2;
    p.training.generator_lr = lr;
    TrainerSettings {
        pipeline: p,
        brokers: None,
        git_revision: None,
        world: None,
        device: candle_core::Device::Cpu,
        metrics_addr: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_no_better_than_serving_is_kept_aside_and_not_published() {
    let p = pipeline();
    let dir = tempfile::tempdir().expect("tempdir");
    let (logs, store) = (dir.path().join("logs"), dir.path().join("store"));
    simulated_logs(&p, &logs, 1500);
    train_serving(&p, &logs, &store, 3, 100);

    // No GRPO update: the candidate's lists are the serving model's, so they cannot
    // beat them by the (zero) margin.
    let same = round_once(&settings(&p, &store, &logs, 0, 1e-3))
        .await
        .expect("round");
    assert!(!same.published, "{same:?}");
    assert_eq!(same.candidate_score, same.serving_score);
    // A destructive learning rate: the generator's lists get worse by its judge.
    let worse = round_once(&settings(&p, &store, &logs, 40, 1.0))
        .await
        .expect("round");
    assert!(!worse.published, "{worse:?}");
    assert!(worse.candidate_score < worse.serving_score, "{worse:?}");
    assert!(worse
        .rejected_because
        .iter()
        .any(|r| r.contains("Evaluator Score")));

    assert_eq!(
        ModelStore::new(&store).versions(),
        vec!["v000001".to_owned()]
    );
    for report in [&same, &worse] {
        assert!(report.bundle.starts_with(store.join("rejected")));
        let kept: serde_json::Value = serde_json::from_slice(
            &std::fs::read(report.bundle.join("round.json")).expect("round.json kept"),
        )
        .expect("json");
        assert_eq!(kept["published"], false);
        assert!(!kept["rejected_because"]
            .as_array()
            .expect("reasons")
            .is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_better_candidate_is_published_and_served_without_restart() {
    let p = pipeline();
    let dir = tempfile::tempdir().expect("tempdir");
    let (logs, store) = (dir.path().join("logs"), dir.path().join("store"));
    simulated_logs(&p, &logs, 1500);
    // The serving model: a weak one, trained on 150 lists with 5 GRPO updates.
    let few = dir.path().join("few");
    simulated_logs(&p, &few, 150);
    train_serving(&p, &few, &store, 1, 5);

    let broker = EmbeddedBroker::start().expect("broker");
    let t = &p.kafka.topics;
    broker
        .create_topics(&[(&t.requests, 2), (&t.results, 2), (&t.dead_letter, 1)])
        .expect("topics");
    let brokers = broker.bootstrap();
    let live = Arc::new(LiveModel::open(ModelStore::new(&store), Device::Cpu).expect("model"));
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(serve(
        ServeSettings {
            pipeline: p.clone(),
            brokers: brokers.clone(),
            metrics_addr: None,
            model_poll: Duration::from_millis(200),
            shutdown_timeout: Duration::from_secs(30),
        },
        live,
        stopped,
    ));
    // Traffic while the round trains (served by v000001)...
    let (out, keys, _) = requests(2000, 4, usize::MAX, |_| Vec::new());
    let during = spawn_load(&p.kafka, &brokers, out, keys, 0, Some(200.0));
    let round = round_once(&settings(&p, &store, &logs, 100, 1e-3))
        .await
        .expect("round");
    assert!(round.published, "{round:?}");
    assert!(round.candidate_score > round.serving_score);
    // ...and traffic from the moment it is published, so the swap happens under load.
    let (out, keys, _) = requests(1000, 5, usize::MAX, |_| Vec::new());
    let after = spawn_load(&p.kafka, &brokers, out, keys, 0, Some(200.0));
    let during = during.await.expect("load");
    let after = after.await.expect("load");
    let _ = stop.send(true);
    let summary = server.await.expect("join").expect("serve");
    for report in [&during, &after] {
        assert_eq!(report.missing, 0, "{report:?}");
        assert_eq!(report.dlq, 0);
    }
    assert_eq!(summary.dead_letters, 0);
    assert_eq!(during.model_versions[0].0, "v000001", "{during:?}");
    let last = after.model_versions.last().map(|(v, _)| v.as_str());
    assert_eq!(last, Some("v000002"), "{after:?}");
}
