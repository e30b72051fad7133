//! The serve stage against tansu, an independent Kafka-compatible broker (installed by
//! `deploy/install-deps.sh`): 5,000 requests with 5 % malformed, every valid request
//! gets a result and every malformed one lands in the dead-letter topic.

mod common;

use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use tokio::sync::watch;

use common::{requests, spawn_load, start_tansu, write_bundle};
use eglr::config::PipelineConfig;
use eglr::model::{LiveModel, ModelStore};
use eglr::stream::kafka::create_topics;
use eglr::stream::{serve, ServeSettings};

fn pipeline() -> PipelineConfig {
    let mut p = common::pipeline();
    p.kafka.group_id = "tansu-serve".into();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_requests_five_percent_malformed_on_tansu() {
    if !common::tansu_or_skip("five_thousand_requests_five_percent_malformed_on_tansu") {
        return;
    }
    let (_tansu, brokers) = start_tansu();
    let p = pipeline();
    let t = &p.kafka.topics;
    create_topics(
        &p.kafka,
        &brokers,
        &[(&t.requests, 4), (&t.results, 4), (&t.dead_letter, 1)],
    )
    .await
    .expect("create topics on tansu (it does not auto-create them)");
    let store = tempfile::tempdir().expect("tempdir");
    write_bundle(&p, &store.path().join("v000001"), 1);
    let live =
        Arc::new(LiveModel::open(ModelStore::new(store.path()), Device::Cpu).expect("model"));
    let (stop, stopped) = watch::channel(false);
    let settings = ServeSettings {
        pipeline: p.clone(),
        brokers: brokers.clone(),
        metrics_addr: None,
        model_poll: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(30),
    };
    let server = tokio::spawn(serve(settings, live, stopped));

    let (out, valid, bad) = requests(5000, 9, 20, |_| b"{\"request_id\": \"oops\"".to_vec());
    let report = spawn_load(&p.kafka, &brokers, out, valid, bad, None)
        .await
        .expect("load");
    let _ = stop.send(true);
    let summary = server.await.expect("join").expect("serve");
    // Guarantee: at least once — every valid request_id has >= 1 result.
    assert_eq!(report.missing, 0, "{report:?} {summary:?}");
    assert_eq!(report.results, 4750);
    assert_eq!(report.dlq, 250, "{report:?}");
    assert_eq!(summary.dead_letters, 250);
}
