//! `eglr serve` as real processes in one consumer group, against two Kafka-protocol
//! brokers — tansu (an independent Kafka-compatible broker process) and the embedded
//! MockCluster (owned by this test so it outlives the servers): a server killed with
//! SIGKILL mid-stream (after it committed part of the load) and restarted loses no
//! request and answers again what was uncommitted; two servers share the partitions
//! and one takes over when the other stops.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    committed, pipeline, read_topics, requests, spawn_load, start_tansu, static_member_pipeline,
    write_bundle, EglrProcess, Ends, Tansu,
};
use eglr::config::PipelineConfig;
use eglr::stream::kafka::create_topics;
use eglr::stream::EmbeddedBroker;

/// `eglr serve` in the consumer group `group`.
fn start_server(brokers: &str, store: &Path, group: &str, pipeline: Option<&Path>) -> EglrProcess {
    let store = store.display().to_string();
    EglrProcess::start(
        pipeline,
        &[
            "serve",
            "--brokers",
            brokers,
            "--metrics-addr",
            "127.0.0.1:0",
            "--model-store",
            &store,
        ],
        &[("EGLR_KAFKA__GROUP_ID", group)],
    )
}

/// The tests of this file run one at a time: each starts servers (and a broker)
/// as processes, and four at once on two cores made group rebalances on tansu miss
/// their deadlines.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The broker a test runs against; kept alive for the test's duration.
enum Broker {
    Embedded { _broker: EmbeddedBroker },
    Tansu { _process: Tansu },
}

/// A broker with the stage's topics and a model store holding `v000001`.
async fn setup(tansu: bool) -> (PipelineConfig, Broker, String, tempfile::TempDir) {
    let p = if tansu {
        common::for_tansu(pipeline())
    } else {
        pipeline()
    };
    let t = &p.kafka.topics;
    let topics = [
        (t.requests.as_str(), 4),
        (t.results.as_str(), 4),
        (t.dead_letter.as_str(), 1),
    ];
    let (broker, brokers) = if tansu {
        let (process, brokers) = start_tansu();
        create_topics(&p.kafka, &brokers, &topics)
            .await
            .expect("topics on tansu");
        (Broker::Tansu { _process: process }, brokers)
    } else {
        let b = EmbeddedBroker::start().expect("broker");
        b.create_topics(&topics).expect("topics");
        let brokers = b.bootstrap();
        (Broker::Embedded { _broker: b }, brokers)
    };
    let store = tempfile::tempdir().expect("tempdir");
    write_bundle(&p, &store.path().join("v000001"), 1);
    (p, broker, brokers, store)
}

/// Kill one server mid-stream with SIGKILL, start another in the same group (with
/// the killed one's static identity when `static_member`). Not vacuous: the first had
/// committed part of the load when it was killed, and every request it had answered
/// past its committed offsets is answered again by the second (counted as duplicates).
async fn sigkill_then_restart(tansu: bool, static_member: bool) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (p, _broker, brokers, store) = setup(tansu).await;
    let pipeline = static_member.then(|| static_member_pipeline(store.path(), "serve-0"));
    let start = || start_server(&brokers, store.path(), "kill-test", pipeline.as_deref());
    let mut first = start();
    let n = 4000;
    let (out, keys, _) = requests(n, 1, usize::MAX, |_| Vec::new());
    let load = spawn_load(&p.kafka, &brokers, out, keys, 0, Some(1000.0));
    let t = &p.kafka.topics;
    let partitions: Ends = (0..4).map(|i| ((t.requests.clone(), i), 0)).collect();
    let done = |c: &Ends| c.values().sum::<i64>();
    // Kill it as soon as it has committed something (the load runs for 4 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    while done(&committed(&brokers, "kill-test", &partitions)) == 0 {
        assert!(
            Instant::now() < deadline,
            "the first server never committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.sigkill();
    // A commit the server sent just before it died may still be on its way to the
    // broker (another connection than this read's): in the whole suite on tansu the
    // read once came first, and the "uncommitted" answers it counted were committed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_kill = committed(&brokers, "kill-test", &partitions);
    let messages = read_topics(&brokers, &[&t.requests, &t.results], Duration::from_secs(2));
    let answered_by_first: HashSet<&str> = messages
        .iter()
        .filter(|m| m.0 == t.results)
        .map(|m| m.3.as_str())
        .collect();
    let must_repeat = messages
        .iter()
        .filter(|(topic, partition, offset, key)| {
            topic == &t.requests
                && *offset >= at_kill[&(topic.clone(), *partition)]
                && answered_by_first.contains(key.as_str())
        })
        .count();
    let _second = start();
    let report = load.await.expect("load");
    println!(
        "committed at the kill {}, answered by the first {}, answered past the commit {must_repeat}, duplicates {}",
        done(&at_kill),
        answered_by_first.len(),
        report.duplicates
    );
    assert!(done(&at_kill) < n as i64, "killed mid-stream: {at_kill:?}");
    // At-least-once: every request has a result; what the first answered past its
    // commit is re-delivered and answered again, which consumers of the results topic
    // dedupe by request_id.
    assert_eq!(report.missing, 0, "{report:?}");
    assert_eq!(report.results, n);
    assert!(
        report.duplicates >= must_repeat,
        "re-delivered past the commit: {must_repeat}, duplicates seen {}",
        report.duplicates
    );
}

/// Two servers in one group; one stops gracefully mid-stream, the other takes over.
async fn two_servers_then_one(tansu: bool) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (p, _broker, brokers, store) = setup(tansu).await;
    let mut a = start_server(&brokers, store.path(), "pair-test", None);
    let _b = start_server(&brokers, store.path(), "pair-test", None);
    let (out, keys, _) = requests(4000, 2, usize::MAX, |_| Vec::new());
    let load = spawn_load(&p.kafka, &brokers, out, keys, 0, Some(1000.0));
    // The load runs for 4 s from the start: stop one server in the middle of it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = tokio::task::spawn_blocking(move || a.sigterm())
        .await
        .expect("join");
    assert!(status.success(), "graceful stop exits 0: {status:?}");
    let report = load.await.expect("load");
    assert_eq!(report.missing, 0, "{report:?}");
    assert_eq!(report.results, 4000);
}

/// On tansu the restarted server keeps the killed one's static identity. Without it
/// Kafka would expire the dead member after the 10 s session timeout and hand its
/// partitions over (the embedded-broker test below checks that path); tansu 0.6 does
/// not: with librdkafka's `debug=cgrp` the restarted member's JoinGroup answers keep
/// naming the SIGKILLed member as leader and its SyncGroup returns an empty assignment
/// for as long as we waited (3 minutes). Static membership is what a deployment with
/// stable instance names (a StatefulSet) uses anyway; deploy/README.md says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_nothing_on_tansu() {
    if !common::tansu_or_skip("sigkill_mid_stream_then_restart_loses_nothing_on_tansu") {
        return;
    }
    sigkill_then_restart(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_nothing_on_the_embedded_broker() {
    sigkill_then_restart(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_partitions_and_one_takes_over_on_tansu() {
    if !common::tansu_or_skip("two_servers_share_partitions_and_one_takes_over_on_tansu") {
        return;
    }
    two_servers_then_one(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_partitions_and_one_takes_over_on_the_embedded_broker() {
    two_servers_then_one(false).await;
}
