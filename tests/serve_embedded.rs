//! The serve stage against the embedded Kafka-protocol broker (rdkafka's MockCluster):
//! bad input goes to the dead-letter topic with its error, nothing valid is lost, and a
//! bad model bundle never stops serving.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use tokio::sync::watch;

use eglr::config::PipelineConfig;
use eglr::features::{DenseNormaliser, FeatureEncoder};
use eglr::model::{Bundle, BundleMeta, Evaluator, Generator, TrainingInfo, BUNDLE_FORMAT};
use eglr::sim::{Traffic, World};
use eglr::stream::kafka::client_config;
use eglr::stream::loadgen::{self, Outgoing};
use eglr::stream::{serve, EmbeddedBroker, LiveModel, ModelStore, ServeSettings};

fn pipeline() -> PipelineConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut p = PipelineConfig::load(&root.join("pipelines/local.toml"), &[]).expect("pipeline");
    p.kafka.group_id = format!("test-{}", std::process::id());
    p.batching.max_batch = 64;
    p.batching.queue_capacity = 128;
    p
}

/// An untrained but complete bundle: serving does not care how good it is.
fn write_bundle(p: &PipelineConfig, dir: &Path, seed: u64) {
    let encoder = FeatureEncoder::new(p.features.clone(), DenseNormaliser::default());
    let (ev, gv) = (VarMap::new(), VarMap::new());
    Evaluator::new(
        &p.evaluator,
        &encoder,
        p.limits.max_list_len,
        VarBuilder::from_varmap(&ev, DType::F32, &Device::Cpu),
    )
    .expect("evaluator");
    Generator::new(
        &p.generator,
        &encoder,
        p.limits.max_list_len,
        VarBuilder::from_varmap(&gv, DType::F32, &Device::Cpu),
    )
    .expect("generator");
    eglr::train::seeded_init(&ev, seed).expect("init");
    eglr::train::seeded_init(&gv, seed + 1).expect("init");
    let meta = BundleMeta {
        format: BUNDLE_FORMAT,
        version: "test".into(),
        features: p.features.clone(),
        normaliser: DenseNormaliser::default(),
        evaluator: p.evaluator.clone(),
        generator: p.generator.clone(),
        max_list_len: p.limits.max_list_len,
        training: TrainingInfo {
            data: "none".into(),
            seed,
            git_revision: None,
            created_unix_ms: 0,
            metrics: serde_json::Value::Null,
        },
    };
    Bundle::save(dir, &meta, &ev, &gv).expect("save bundle");
}

fn broker(p: &PipelineConfig) -> EmbeddedBroker {
    let b = EmbeddedBroker::start().expect("embedded broker");
    let t = &p.kafka.topics;
    b.create_topics(&[(&t.requests, 4), (&t.results, 4), (&t.dead_letter, 1)])
        .expect("topics");
    b
}

fn settings(p: &PipelineConfig, brokers: &str) -> ServeSettings {
    ServeSettings {
        pipeline: p.clone(),
        brokers: brokers.to_owned(),
        metrics_addr: None,
        model_poll: Duration::from_millis(100),
        shutdown_timeout: Duration::from_secs(20),
    }
}

fn requests(n: usize, malformed_every: usize, seed: u64) -> (Vec<Outgoing>, Vec<String>, usize) {
    let world = World::generate(&pipeline().simulator, 10, 3);
    let t = Traffic::new(&world, seed);
    let (mut out, mut valid, mut bad) = (Vec::new(), Vec::new(), 0);
    for k in 0..n {
        let r = t.request(&t.impression(k as u64));
        let payload = if k % malformed_every == malformed_every - 1 {
            bad += 1;
            if bad % 2 == 0 {
                b"{not json".to_vec()
            } else {
                br#"{"request_id":"x","user":{"id":"u"},"candidates":[],"list_len":1,"timestamp_ms":0}"#.to_vec()
            }
        } else {
            valid.push(r.request_id.clone());
            serde_json::to_vec(&r).expect("json")
        };
        out.push(Outgoing {
            key: r.request_id,
            payload,
        });
    }
    (out, valid, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_go_to_the_dead_letter_topic_and_nothing_valid_is_lost() {
    let p = pipeline();
    let tmp = tempfile::tempdir().expect("tempdir");
    write_bundle(&p, &tmp.path().join("v000001"), 1);
    let b = broker(&p);
    let live = Arc::new(LiveModel::open(ModelStore::new(tmp.path()), Device::Cpu).expect("model"));
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(serve(settings(&p, &b.bootstrap()), live, stopped));

    let (out, valid, bad) = requests(1000, 20, 1);
    let report = loadgen::run(
        &p.kafka,
        &b.bootstrap(),
        out,
        &valid,
        bad,
        None,
        Duration::from_secs(90),
    )
    .await
    .expect("load");
    let _ = stop.send(true);
    let summary = server.await.expect("join").expect("serve");
    // At-least-once: every valid request has >= 1 result; duplicates are reported.
    assert_eq!(report.missing, 0, "{report:?}");
    assert_eq!(report.results, 950);
    assert_eq!(report.dlq, 50, "{report:?}");
    assert_eq!(summary.dead_letters, 50);
    assert_eq!(report.model_versions, vec![("v000001".to_owned(), 950)]);

    // Every dead letter carries its source and error in headers.
    let mut cfg = client_config(&p.kafka, &b.bootstrap());
    cfg.set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest");
    let c: StreamConsumer = cfg.create().expect("consumer");
    c.subscribe(&[p.kafka.topics.dead_letter.as_str()])
        .expect("subscribe");
    let mut kinds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while kinds.len() < 50 && Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), c.recv()).await {
            let headers = m.headers().expect("headers");
            let get = |k: &str| {
                headers
                    .iter()
                    .find(|h| h.key == k)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            assert_eq!(
                get("source.topic").as_deref(),
                Some(p.kafka.topics.requests.as_str())
            );
            assert!(get("source.offset").is_some() && get("error.message").is_some());
            kinds.push(get("error.kind").expect("kind"));
        }
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        vec!["empty_list".to_owned(), "malformed_json".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_bundle_never_stops_serving_and_a_good_one_is_swapped_in() {
    let p = pipeline();
    let tmp = tempfile::tempdir().expect("tempdir");
    write_bundle(&p, &tmp.path().join("v000001"), 1);
    let b = broker(&p);
    let live = Arc::new(LiveModel::open(ModelStore::new(tmp.path()), Device::Cpu).expect("model"));
    let (stop, stopped) = watch::channel(false);
    let server = tokio::spawn(serve(
        settings(&p, &b.bootstrap()),
        Arc::clone(&live),
        stopped,
    ));

    // A newer version with a corrupt weights file.
    write_bundle(&p, &tmp.path().join("v000002"), 2);
    std::fs::write(tmp.path().join("v000002/generator.safetensors"), b"garbage").expect("corrupt");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (out, valid, _) = requests(200, usize::MAX, 2);
    let report = loadgen::run(
        &p.kafka,
        &b.bootstrap(),
        out,
        &valid,
        0,
        None,
        Duration::from_secs(60),
    )
    .await
    .expect("load");
    assert_eq!(report.missing, 0);
    assert_eq!(
        report.model_versions,
        vec![("v000001".to_owned(), 200)],
        "the bad bundle was not swapped in"
    );

    // A good newer version is picked up without a restart.
    write_bundle(&p, &tmp.path().join("v000003"), 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while live.current().meta.version != "v000003" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (out, valid, _) = requests(200, usize::MAX, 3);
    let report = loadgen::run(
        &p.kafka,
        &b.bootstrap(),
        out,
        &valid,
        0,
        None,
        Duration::from_secs(60),
    )
    .await
    .expect("load");
    assert_eq!(report.missing, 0);
    assert_eq!(report.model_versions, vec![("v000003".to_owned(), 200)]);
    let _ = stop.send(true);
    server.await.expect("join").expect("serve");
}
