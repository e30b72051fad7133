//! `eglr serve` as real processes in one consumer group, against a Kafka-protocol broker
//! (the embedded MockCluster, owned by this test so it outlives the servers): a server
//! killed with SIGKILL mid-stream and restarted loses no request; two servers share the
//! partitions and one takes over when the other stops.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use eglr::config::PipelineConfig;
use eglr::features::{DenseNormaliser, FeatureEncoder};
use eglr::model::{Bundle, BundleMeta, Evaluator, Generator, TrainingInfo, BUNDLE_FORMAT};
use eglr::sim::{Traffic, World};
use eglr::stream::loadgen::{self, Outgoing};
use eglr::stream::EmbeddedBroker;

fn pipeline() -> PipelineConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    PipelineConfig::load(&root.join("pipelines/local.toml"), &[]).expect("pipeline")
}

fn write_bundle(p: &PipelineConfig, dir: &Path) {
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
    eglr::train::seeded_init(&ev, 1).expect("init");
    eglr::train::seeded_init(&gv, 2).expect("init");
    let meta = BundleMeta {
        format: BUNDLE_FORMAT,
        version: "v000001".into(),
        features: p.features.clone(),
        normaliser: DenseNormaliser::default(),
        evaluator: p.evaluator.clone(),
        generator: p.generator.clone(),
        max_list_len: p.limits.max_list_len,
        training: TrainingInfo {
            data: "none".into(),
            seed: 1,
            git_revision: None,
            created_unix_ms: 0,
            metrics: serde_json::Value::Null,
        },
    };
    Bundle::save(dir, &meta, &ev, &gv).expect("save");
}

struct Server(Child);

impl Server {
    fn start(brokers: &str, store: &Path, group: &str) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let child = Command::new(env!("CARGO_BIN_EXE_eglr"))
            .current_dir(root)
            .args([
                "serve",
                "--brokers",
                brokers,
                "--metrics-addr",
                "127.0.0.1:0",
                "--model-store",
            ])
            .arg(store)
            .env("EGLR_KAFKA__GROUP_ID", group)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("eglr serve starts");
        Server(child)
    }

    fn sigkill(&mut self) {
        self.0.kill().expect("SIGKILL");
        let _ = self.0.wait();
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.0.wait().expect("exit")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn traffic(n: usize, seed: u64) -> (Vec<Outgoing>, Vec<String>) {
    let world = World::generate(&pipeline().simulator, 10, 5);
    let t = Traffic::new(&world, seed);
    let out: Vec<Outgoing> = (0..n as u64)
        .map(|k| {
            let r = t.request(&t.impression(k));
            Outgoing {
                key: r.request_id.clone(),
                payload: serde_json::to_vec(&r).expect("json"),
            }
        })
        .collect();
    let keys = out.iter().map(|o| o.key.clone()).collect();
    (out, keys)
}

fn setup() -> (PipelineConfig, EmbeddedBroker, tempfile::TempDir) {
    let p = pipeline();
    let b = EmbeddedBroker::start().expect("broker");
    let t = &p.kafka.topics;
    b.create_topics(&[(&t.requests, 4), (&t.results, 4), (&t.dead_letter, 1)])
        .expect("topics");
    let store = tempfile::tempdir().expect("tempdir");
    write_bundle(&p, &store.path().join("v000001"));
    (p, b, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_nothing() {
    let (p, b, store) = setup();
    let brokers = b.bootstrap();
    let mut first = Server::start(&brokers, store.path(), "kill-test");
    let (out, keys) = traffic(4000, 1);
    let load = {
        let (kafka, brokers) = (p.kafka.clone(), brokers.clone());
        tokio::spawn(async move {
            loadgen::run(
                &kafka,
                &brokers,
                out,
                &keys,
                0,
                Some(1000.0),
                Duration::from_secs(120),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first.sigkill();
    let _second = Server::start(&brokers, store.path(), "kill-test");
    let report = load.await.expect("join").expect("load");
    // At-least-once: every request has a result; re-delivery after the kill may
    // duplicate some, which consumers of the results topic dedupe by request_id.
    assert_eq!(report.missing, 0, "{report:?}");
    assert_eq!(report.results, 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_partitions_and_one_takes_over() {
    let (p, b, store) = setup();
    let brokers = b.bootstrap();
    let mut a = Server::start(&brokers, store.path(), "pair-test");
    let _b = Server::start(&brokers, store.path(), "pair-test");
    let (out, keys) = traffic(4000, 2);
    let load = {
        let (kafka, brokers) = (p.kafka.clone(), brokers.clone());
        tokio::spawn(async move {
            loadgen::run(
                &kafka,
                &brokers,
                out,
                &keys,
                0,
                Some(1000.0),
                Duration::from_secs(120),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let status = tokio::task::spawn_blocking(move || a.sigterm())
        .await
        .expect("join");
    assert!(status.success(), "graceful stop exits 0: {status:?}");
    let report = load.await.expect("join").expect("load");
    assert_eq!(report.missing, 0, "{report:?}");
    assert_eq!(report.results, 4000);
}
