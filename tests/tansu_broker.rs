//! The serve stage against tansu, an independent Kafka-compatible broker (installed by
//! `deploy/install-deps.sh`): 5,000 requests with 5 % malformed, every valid request
//! gets a result and every malformed one lands in the dead-letter topic; an intake that
//! keeps pausing; and the tansu defect the tansu tests work around.

mod common;

use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use tokio::sync::watch;

use common::{requests, spawn_load, start_tansu, write_bundle};
use eglr::config::PipelineConfig;
use eglr::drive::loadgen::LoadReport;
use eglr::model::{LiveModel, ModelStore};
use eglr::stream::kafka::create_topics;
use eglr::stream::{serve, ServeSettings, ServeSummary};

fn pipeline() -> PipelineConfig {
    let mut p = common::for_tansu(common::pipeline());
    p.kafka.group_id = "tansu-serve".into();
    p
}

/// When `serve` starts: with the load (it reads requests as they arrive), or once all
/// of them are on the topic (a backlog: the intake is handed more than its queue holds).
#[derive(Clone, Copy, PartialEq)]
enum Start {
    WithTheLoad,
    AfterABacklog,
}

/// `n` requests, every 20th malformed, through `serve` on tansu: what the load
/// generator saw and the stage's own counts.
async fn serve_on_tansu(p: PipelineConfig, n: usize, start: Start) -> (LoadReport, ServeSummary) {
    let (_tansu, brokers) = start_tansu();
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
    let (out, valid, bad) = requests(n, 9, 20, |_| b"{\"request_id\": \"oops\"".to_vec());
    let load = spawn_load(&p.kafka, &brokers, out, valid, bad, None);
    if start == Start::AfterABacklog {
        wait_for_records(&brokers, &t.requests, n).await;
    }
    let server = tokio::spawn(serve(settings, live, stopped));
    let report = load.await.expect("load");
    let _ = stop.send(true);
    let summary = server.await.expect("join").expect("serve");
    (report, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_requests_five_percent_malformed_on_tansu() {
    if !common::tansu_or_skip("five_thousand_requests_five_percent_malformed_on_tansu") {
        return;
    }
    let (report, summary) = serve_on_tansu(pipeline(), 5000, Start::WithTheLoad).await;
    // Guarantee: at least once — every valid request_id has >= 1 result.
    assert_eq!(report.missing, 0, "{report:?} {summary:?}");
    assert_eq!(report.results, 4750);
    assert_eq!(report.dlq, 250, "{report:?}");
    assert_eq!(summary.dead_letters, 250);
    assert_eq!(summary.skipped_offsets, 0, "{summary:?}");
}

/// A backlog of 2,000 requests against a queue of 64 makes the intake pause and resume
/// all the time; every resume starts fetching inside the log, and nothing may be
/// skipped or left behind. (Started with the load, `serve`'s workers keep up with what
/// tansu delivers one record per batch, and the intake need never pause.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_that_keeps_pausing_loses_nothing_on_tansu() {
    if !common::tansu_or_skip("an_intake_that_keeps_pausing_loses_nothing_on_tansu") {
        return;
    }
    let mut p = pipeline();
    p.batching.queue_capacity = 64;
    p.batching.max_batch = 32;
    let (report, summary) = serve_on_tansu(p, 2000, Start::AfterABacklog).await;
    assert!(summary.pauses > 0, "the intake paused: {summary:?}");
    assert_eq!(report.missing, 0, "{report:?} {summary:?}");
    assert_eq!(report.results, 1900, "{report:?}");
    assert_eq!(report.dlq, 100, "{report:?}");
    assert_eq!(summary.skipped_offsets, 0, "{summary:?}");
}

/// Waits until `topic` holds `n` records (read back from the beginning: tansu 0.6's
/// watermarks differ from what it delivers).
async fn wait_for_records(brokers: &str, topic: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (brokers, name) = (brokers.to_owned(), topic.to_owned());
        let held = tokio::task::spawn_blocking(move || {
            common::read_topics(&brokers, &[&name], Duration::from_secs(1)).len()
        })
        .await
        .expect("read the topic");
        if held >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{topic} holds {held} of {n} records after 120 s"
        );
    }
}

/// What the first record read is when a consumer starts at each of `starts` in a
/// one-partition topic holding three batches of 100 records produced with `batching`.
async fn first_offsets_read_from(batching: &[(&str, &str)], starts: &[i64]) -> Vec<Option<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::Message;
    let (_tansu, brokers) = start_tansu();
    let p = common::pipeline();
    create_topics(&p.kafka, &brokers, &[("batches", 1)])
        .await
        .expect("topic");
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "200");
    for (k, v) in batching {
        config.set(*k, *v);
    }
    let producer: BaseProducer = config.create().expect("producer");
    for batch in 0..3 {
        for i in 0..100 {
            let payload = format!("{batch}-{i}");
            producer
                .send(BaseRecord::<(), _>::to("batches").payload(&payload))
                .expect("queued");
        }
        producer.flush(Duration::from_secs(10)).expect("flushed");
    }
    let mut first = Vec::new();
    for &start in starts {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "batches-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset("batches", 0, rdkafka::Offset::Offset(start))
            .expect("offset");
        consumer.assign(&tpl).expect("assign");
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let mut got = None;
        while got.is_none() && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                got = Some(m.offset());
            }
        }
        first.push(got);
    }
    first
}

/// The tansu tests write one record per batch ([`common::ONE_RECORD_PER_BATCH`]): tansu
/// 0.6 answers a fetch from inside a batch with the next batch, and a consumer starts
/// inside one after every pause, seek and restart. With one record per batch a consumer
/// started anywhere reads from exactly where it started; the ordinary batching's
/// answer is printed, the reason for the workaround (on tansu 0.6: 50 -> 100, 250 ->
/// nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_skips_the_rest_of_a_batch_fetched_from_inside() {
    if !common::tansu_or_skip("tansu_skips_the_rest_of_a_batch_fetched_from_inside") {
        return;
    }
    let starts = [0, 50, 150, 250, 299];
    let ordinary = first_offsets_read_from(&[], &starts).await;
    eprintln!("first offset read from {starts:?} with ordinary batching: {ordinary:?}");
    let one = first_offsets_read_from(&[common::ONE_RECORD_PER_BATCH], &starts).await;
    let want: Vec<Option<i64>> = starts.iter().map(|&s| Some(s)).collect();
    assert_eq!(
        one, want,
        "one record per batch: read from where it started"
    );
}
