//! The feedback logger (`eglr log`) on real brokers — the embedded MockCluster and
//! tansu: requests, results and feedback (out of order, twice, late, for unknown
//! requests) become exactly the expected Parquet rows, the rest lands in the side file;
//! a logger killed with SIGKILL and restarted loses no list.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;

use common::{
    committed, pipeline, start_tansu, static_member_pipeline, uncommitted, EglrProcess, Ends, Tansu,
};
use eglr::config::PipelineConfig;
use eglr::list_log::LogReader;
use eglr::schema::{Feedback, RankedItem, RerankResult};
use eglr::sim::{Traffic, World};
use eglr::stream::kafka::{create_topics, producer_config};
use eglr::stream::{log, EmbeddedBroker, LogSettings};

/// Keeps the broker alive for the test.
#[allow(dead_code)]
enum Broker {
    Embedded(EmbeddedBroker),
    Tansu(Tansu),
}

async fn broker(p: &PipelineConfig, tansu: bool) -> (Broker, String) {
    let t = &p.kafka.topics;
    let topics = [
        (t.requests.as_str(), 2),
        (t.results.as_str(), 2),
        (t.feedback.as_str(), 2),
    ];
    if tansu {
        let (process, brokers) = start_tansu();
        create_topics(&p.kafka, &brokers, &topics)
            .await
            .expect("topics on tansu");
        (Broker::Tansu(process), brokers)
    } else {
        let b = EmbeddedBroker::start().expect("broker");
        b.create_topics(&topics).expect("topics");
        let brokers = b.bootstrap();
        (Broker::Embedded(b), brokers)
    }
}

/// One served list of simulated traffic: its messages and the row it must become.
struct Served {
    request: Vec<u8>,
    result: Vec<u8>,
    feedback: Vec<Feedback>,
    request_id: String,
    served: Vec<String>,
    clicks: Vec<bool>,
}

/// Impression `k`: the pool served in reverse order, clicks sampled by the simulator.
/// The request is sent at `sent_ms` and answered `lag_ms` later; the clicks follow the
/// answer.
fn served(traffic: &Traffic<'_>, k: u64, sent_ms: i64, lag_ms: i64) -> Served {
    let imp = traffic.impression(k);
    let mut request = traffic.request(&imp);
    request.timestamp_ms = sent_ms;
    let items: Vec<RankedItem> = request
        .candidates
        .iter()
        .rev()
        .map(|c| RankedItem {
            item_id: c.item_id.clone(),
            score: 0.5,
            reasoning_steps: 0,
            entropy_before: 0.0,
            entropy_after: 0.0,
        })
        .collect();
    let ids: Vec<_> = items.iter().map(|i| i.item_id.clone()).collect();
    let feedback = traffic.feedback(k, imp.user, &ids, sent_ms + lag_ms);
    let result = RerankResult {
        request_id: request.request_id.clone(),
        model_version: "v000001".into(),
        items,
        latency_ms: 1.0,
        timestamp_ms: sent_ms + lag_ms,
        source: eglr::schema::ServedSource::Model,
        exploration: None,
        schema_version: Some(eglr::schema::SCHEMA_VERSION),
    };
    Served {
        request: serde_json::to_vec(&request).expect("json"),
        result: serde_json::to_vec(&result).expect("json"),
        clicks: feedback.iter().map(|f| f.clicked).collect(),
        served: ids.iter().map(|t| t.as_str().to_owned()).collect(),
        request_id: request.request_id,
        feedback,
    }
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
}

async fn send_feedback(producer: &FutureProducer, p: &PipelineConfig, f: &Feedback) {
    let json = serde_json::to_vec(f).expect("json");
    send(producer, &p.kafka.topics.feedback, &f.request_id, &json).await;
}

/// Served items and clicks of each list, by request_id.
type Rows = BTreeMap<String, (Vec<String>, Vec<bool>)>;

/// Unique rows of the log directory by request_id (what a reader sees) and the raw
/// row count.
fn rows(dir: &Path) -> (Rows, usize) {
    let mut unique = BTreeMap::new();
    let Ok(reader) = LogReader::open(&dir.display().to_string(), 1024) else {
        return (unique, 0);
    };
    let mut batches = reader.batches();
    let mut raw = 0;
    for batch in batches.by_ref() {
        for row in batch.expect("readable log") {
            raw += 1;
            unique.insert(row.request_id, (row.served_items, row.clicks));
        }
    }
    (unique, raw + batches.duplicates())
}

/// Each served list has exactly its row: the served order and its clicks.
fn assert_rows_are(unique: &Rows, lists: &[Served]) {
    for s in lists {
        assert_eq!(
            unique.get(&s.request_id),
            Some(&(s.served.clone(), s.clicks.clone())),
            "row of {}",
            s.request_id
        );
    }
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn side_reasons(dir: &Path) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(
        dir.join(eglr::stream::UNJOINED_DIR)
            .join("unjoined-0.jsonl"),
    )
    .unwrap_or_default();
    let mut counts = HashMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("side file is JSON lines");
        *counts
            .entry(v["reason"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    counts
}

fn logger_pipeline(dir: &Path, tansu: bool) -> PipelineConfig {
    let mut p = if tansu {
        common::for_tansu(pipeline())
    } else {
        pipeline()
    };
    p.logs.dir = dir.to_owned();
    p.logs.roll_max_seconds = 1;
    p
}

/// A broker with the logger's topics, `n` served lists of traffic seed `seed` (sent
/// from now on, 1 ms apart, each answered `lag_ms` after it was sent), and a producer.
async fn setup(
    p: &PipelineConfig,
    tansu: bool,
    seed: u64,
    n: u64,
    lag_ms: i64,
) -> (Broker, String, Vec<Served>, FutureProducer) {
    let (broker, brokers) = broker(p, tansu).await;
    let world = World::generate(&p.simulator, p.limits.list_len, 3);
    let traffic = Traffic::new(&world, seed);
    let now = eglr::clock::unix_millis();
    let lists = (0..n)
        .map(|k| served(&traffic, k, now + k as i64, lag_ms))
        .collect();
    let producer = producer_config(&p.kafka, &brokers)
        .create()
        .expect("producer");
    (broker, brokers, lists, producer)
}

/// 40 lists: feedback of every 5th before its result, of every 3rd twice (the copy
/// says the opposite and must lose), 4 orphan events, 1 late event after its list was
/// written, 1 malformed feedback.
async fn join_on(tansu: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = logger_pipeline(dir.path(), tansu);
    let (_broker, brokers, lists, producer) = setup(&p, tansu, 5, 40, 0).await;
    let (stop, stopped) = watch::channel(false);
    let settings = LogSettings {
        metrics_addr: Some("127.0.0.1:0".parse().expect("address")),
        pipeline: p.clone(),
        brokers: brokers.clone(),
        group_id: "logger-test".into(),
        window: Duration::from_secs(3),
        instance: "0".into(),
    };
    let logger = tokio::spawn(log(settings, stopped));
    let t = &p.kafka.topics;
    for (k, s) in lists.iter().enumerate() {
        send(&producer, &t.requests, &s.request_id, &s.request).await;
        if k % 5 == 0 {
            for f in &s.feedback {
                send_feedback(&producer, &p, f).await;
            }
        }
        send(&producer, &t.results, &s.request_id, &s.result).await;
        if k % 5 != 0 {
            for f in &s.feedback {
                send_feedback(&producer, &p, f).await;
            }
        }
        if k % 3 == 0 {
            let mut copy = s.feedback[0].clone();
            copy.clicked = !copy.clicked;
            send_feedback(&producer, &p, &copy).await;
        }
    }
    for (k, list) in lists.iter().take(4).enumerate() {
        let mut orphan = list.feedback[0].clone();
        orphan.request_id = format!("never-served-{k}");
        send_feedback(&producer, &p, &orphan).await;
    }
    send(&producer, &t.feedback, "x", b"{\"request_id\": 1").await;
    wait_for("40 lists in the log", Duration::from_secs(30), || {
        rows(dir.path()).0.len() == 40
    })
    .await;
    let mut late = lists[1].feedback[1].clone();
    late.clicked = true;
    send_feedback(&producer, &p, &late).await;
    wait_for(
        "the orphans and the late event",
        Duration::from_secs(30),
        || {
            let r = side_reasons(dir.path());
            r.get("late_feedback") == Some(&1) && r.get("orphan_feedback") == Some(&4)
        },
    )
    .await;
    let _ = stop.send(true);
    let summary = logger.await.expect("join").expect("logger");

    let (unique, raw) = rows(dir.path());
    assert_eq!(raw, 40, "no duplicate rows without a crash");
    assert_rows_are(&unique, &lists);
    assert_eq!(summary.join.duplicate_feedback, 14, "{summary:?}");
    assert_eq!(summary.malformed, 1, "{summary:?}");
    assert_eq!(side_reasons(dir.path()).get("malformed"), Some(&1));
    read_as_one_data_set(dir.path(), 40);
}

/// The log directory as it is, read by pyarrow (`pyarrow.dataset`) and DuckDB
/// (`read_parquet('DIR/*.parquet')`), has `rows` rows and distinct request ids: the side
/// files, locks and temporary files stay out of the data set. Skipped (unless
/// `TANSU_REQUIRED=1`) when `install-deps.sh --with-tansu` has not installed them.
fn read_as_one_data_set(dir: &Path, rows: usize) {
    let python = common::python_tool("python");
    let hint = "bash deploy/install-deps.sh --with-tansu";
    let present = python.is_file();
    if !common::present_or_skip(
        "the pyarrow and DuckDB read",
        "pyarrow and duckdb",
        hint,
        present,
    ) {
        return;
    }
    assert!(dir
        .join(eglr::stream::UNJOINED_DIR)
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));
    let script = r#"
import sys, pyarrow.dataset as ds, duckdb
d = sys.argv[1]
t = ds.dataset(d, format="parquet").to_table(columns=["request_id"])
q = duckdb.sql(f"select count(*), count(distinct request_id) from read_parquet('{d}/*.parquet')").fetchall()[0]
print(t.num_rows, len(set(t.column("request_id").to_pylist())), q[0], q[1])
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, &dir.display().to_string()])
        .output()
        .expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = format!("{rows} {rows} {rows} {rows}");
    assert_eq!(text.trim(), want, "pyarrow rows, ids; DuckDB rows, ids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_duplicate_and_orphan_feedback_on_the_embedded_broker() {
    join_on(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_duplicate_and_orphan_feedback_on_tansu() {
    if !common::tansu_or_skip("late_duplicate_and_orphan_feedback_on_tansu") {
        return;
    }
    join_on(true).await;
}

/// `eglr log` as a process, SIGKILLed once it has committed part of the load and
/// restarted with the same identity: every list is in the log; lists the first had
/// published but not committed are re-read and repeat (counted), removed on read.
async fn kill_and_restart_on(tansu: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    let p = logger_pipeline(&logs, tansu);
    let (_broker, brokers, lists, producer) = setup(&p, tansu, 6, 200, 0).await;
    let pipeline_file = static_member_pipeline(dir.path(), "logger-0");
    let logs_arg = logs.display().to_string();
    let start = || {
        EglrProcess::start(
            Some(&pipeline_file),
            &[
                "log",
                "--brokers",
                &brokers,
                "--logs",
                &logs_arg,
                "--window-s",
                "1",
                "--group",
                "kill-test",
                "--metrics-addr",
                "127.0.0.1:0",
            ],
            &[("EGLR_LOGS__ROLL_MAX_SECONDS", "1")],
        )
    };
    let t = &p.kafka.topics;
    let produce = |range: std::ops::Range<usize>| {
        let (producer, lists, p) = (&producer, &lists, &p);
        async move {
            for s in &lists[range] {
                send(producer, &t.requests, &s.request_id, &s.request).await;
                send(producer, &t.results, &s.request_id, &s.result).await;
                for f in &s.feedback {
                    send_feedback(producer, p, f).await;
                }
            }
        }
    };
    let mut first = start();
    produce(0..50).await;
    let partitions: Ends = [&t.requests, &t.results, &t.feedback]
        .into_iter()
        .flat_map(|topic| (0..2).map(move |i| ((topic.clone(), i), 0)))
        .collect();
    let done = |c: &Ends| c.values().sum::<i64>();
    wait_for("a first commit", Duration::from_secs(60), || {
        done(&committed(&brokers, "kill-test", &partitions)) > 0
    })
    .await;
    // More load, and the kill as soon as it is in the topics: part of it is uncommitted.
    produce(50..100).await;
    first.sigkill();
    let at_kill = done(&committed(&brokers, "kill-test", &partitions));
    let published_by_first = rows(&logs).0.len();
    let events: usize = lists[..100].iter().map(|s| 2 + s.feedback.len()).sum();
    assert!(
        at_kill < events as i64,
        "killed with part of the load uncommitted: {at_kill} of {events}"
    );
    produce(100..200).await;
    let mut second = start();
    wait_for("all 200 lists", Duration::from_secs(90), || {
        rows(&logs).0.len() == 200
    })
    .await;
    assert!(second.sigterm().success(), "graceful stop exits 0");
    let (unique, raw) = rows(&logs);
    assert_rows_are(&unique, &lists);
    let re_read = raw - 200;
    println!(
        "committed at the kill {at_kill} of {events} events; lists published by the first {published_by_first}; rows {raw} for 200 lists (re-read after the kill: {re_read})"
    );
    assert_eq!(
        re_read, 0,
        "a restarted logger remembers the lists in its files and writes none twice ({published_by_first} published before the kill)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_loses_no_list_on_the_embedded_broker() {
    kill_and_restart_on(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_loses_no_list_on_tansu() {
    if !common::tansu_or_skip("sigkill_and_restart_loses_no_list_on_tansu") {
        return;
    }
    kill_and_restart_on(true).await;
}

/// librdkafka's statistics (about 15 KB a second) feed the lag gauge; they are never
/// written to the log, even at info level.
#[test]
fn the_logger_does_not_log_librdkafka_statistics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eglr"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["log", "--logs"])
        .arg(dir.path())
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("eglr log starts");
    // Three statistics intervals on the embedded broker.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("stats"), "statistics logged:\n{stderr}");
    assert!(
        stderr.len() < 8_000,
        "{} bytes of log in 4 s:\n{stderr}",
        stderr.len()
    );
}

/// Produces `(topic, key, payload)` records, queueing a chunk at a time without waiting
/// for each acknowledgement, then checking every one was delivered.
async fn produce_all(
    producer: &FutureProducer,
    records: &[(&str, &str, Vec<u8>)],
    ends: &mut Ends,
) {
    for chunk in records.chunks(5000) {
        let mut deliveries = Vec::new();
        for (topic, key, payload) in chunk {
            let record = FutureRecord::to(topic).key(*key).payload(payload);
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("queued"),
            );
        }
        for (d, (topic, _, _)) in deliveries.into_iter().zip(chunk) {
            let delivered = d.await.expect("delivery").expect("delivered");
            let end = ends
                .entry(((*topic).to_owned(), delivered.partition))
                .or_default();
            *end = (*end).max(delivered.offset + 1);
        }
    }
}

/// How the lists reach the logger.
#[derive(Debug, Clone, Copy)]
enum Arrival {
    /// Every request answered and its feedback given before the logger starts.
    Backlog,
    /// The requests are there when the logger starts; `serve`, lagging, answers them
    /// over four seconds (four windows), and the users click as the results come.
    ServeLags,
}

/// The logger reading `n` lists that reach it as `arrival` says, with a window of 1 s,
/// far shorter than catching up takes: the join runs on the events' time, so every list
/// is written, nothing is set aside and every offset is committed.
async fn catch_up_on(tansu: bool, n: u64, arrival: Arrival) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = logger_pipeline(dir.path(), tansu);
    p.logs.idle_ms = 3000;
    let lag_ms = match arrival {
        Arrival::Backlog => 0,
        Arrival::ServeLags => 3000,
    };
    let (_broker, brokers, lists, producer) = setup(&p, tansu, 7, n, lag_ms).await;
    let t = &p.kafka.topics;
    let requests: Vec<_> = lists
        .iter()
        .map(|s| {
            (
                t.requests.as_str(),
                s.request_id.as_str(),
                s.request.clone(),
            )
        })
        .collect();
    let answers: Vec<_> = lists
        .iter()
        .flat_map(|s| {
            let result = (t.results.as_str(), s.request_id.as_str(), s.result.clone());
            let clicks = s.feedback.iter().map(|f| {
                let json = serde_json::to_vec(f).expect("json");
                (t.feedback.as_str(), s.request_id.as_str(), json)
            });
            std::iter::once(result).chain(clicks)
        })
        .collect();
    let mut ends = Ends::new();
    if matches!(arrival, Arrival::Backlog) {
        produce_all(&producer, &requests, &mut ends).await;
        produce_all(&producer, &answers, &mut ends).await;
    }
    // Small fetches, as an operator bounding the logger's memory would set: a fetch
    // brings a few large requests but many small results and feedback events, so the
    // logger reads the results far ahead of their requests.
    p.kafka
        .properties
        .insert("max.partition.fetch.bytes".into(), "16384".into());
    let (stop, stopped) = watch::channel(false);
    let group = "catch-up-test";
    let settings = LogSettings {
        metrics_addr: None,
        pipeline: p.clone(),
        brokers: brokers.clone(),
        group_id: group.into(),
        window: Duration::from_secs(1),
        instance: "0".into(),
    };
    let started = Instant::now();
    let logger = tokio::spawn(log(settings, stopped));
    if matches!(arrival, Arrival::ServeLags) {
        // A first whole list, to know the logger is reading.
        let first = 1 + lists[0].feedback.len();
        produce_all(&producer, &requests[..1], &mut ends).await;
        produce_all(&producer, &answers[..first], &mut ends).await;
        wait_for("the first list", Duration::from_secs(60), || {
            !rows(dir.path()).0.is_empty()
        })
        .await;
        produce_all(&producer, &requests[1..], &mut ends).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let answers = &answers[first..];
        for part in answers.chunks(answers.len().div_ceil(10)) {
            produce_all(&producer, part, &mut ends).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    let want = n as usize;
    let deadline = Instant::now() + Duration::from_secs(180);
    // Reading the whole log is costly: look every few seconds.
    while rows(dir.path()).0.len() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // The last publish and its commit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);
    let summary = logger.await.expect("join").expect("logger");
    let (unique, _) = rows(dir.path());
    let reasons = side_reasons(dir.path());
    println!(
        "{arrival:?} of {n} lists: {} written in {:.1} s, side file {reasons:?}, {summary:?}",
        unique.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        unique.len(),
        want,
        "every list written; side file {reasons:?}"
    );
    assert_rows_are(&unique, &lists);
    assert!(reasons.is_empty(), "nothing set aside: {reasons:?}");
    assert_eq!(
        uncommitted(&brokers, group, &ends),
        0,
        "every offset committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_caught_up_with_a_short_window_loses_no_list_on_the_embedded_broker() {
    catch_up_on(false, 5000, Arrival::Backlog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_lagging_by_more_than_the_window_loses_no_list_on_the_embedded_broker() {
    catch_up_on(false, 5000, Arrival::ServeLags).await;
}

/// The issue's measurement: 20,000 lists on tansu.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_caught_up_with_a_short_window_loses_no_list_on_tansu() {
    if !common::tansu_or_skip("a_backlog_caught_up_with_a_short_window_loses_no_list_on_tansu") {
        return;
    }
    catch_up_on(true, 20_000, Arrival::Backlog).await;
}

/// The partition of `key` among `partitions` as the Java client's default partitioner
/// puts it: `toPositive(murmur2(key)) % partitions` (Kafka's `Utils.murmur2`, written
/// out here so that the test does not take eglr's word for it).
fn java_partition(key: &[u8], partitions: u32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for c in chunks.by_ref() {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    i32::try_from((h & 0x7fff_ffff) % partitions).expect("a partition number")
}

#[test]
fn java_partition_matches_kafkas_published_values() {
    // Kafka's UtilsTest: murmur2 of these strings (before toPositive).
    let cases: [(&str, i32); 3] = [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
    ];
    for (key, hash) in cases {
        let want = (hash & 0x7fff_ffff) % 1000;
        assert_eq!(java_partition(key.as_bytes(), 1000), want, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_logger_instances_of_one_group_write_every_list_once_on_tansu() {
    if !common::tansu_or_skip("two_logger_instances_of_one_group_write_every_list_once_on_tansu") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let p = logger_pipeline(dir.path(), true);
    // Two partitions per topic: each instance gets one of each (range assignor).
    let (_broker, brokers, lists, results) = setup(&p, true, 11, 200, 0).await;
    let mut stops = Vec::new();
    let mut loggers = Vec::new();
    for instance in ["0", "1"] {
        let mut member = p.clone();
        member
            .kafka
            .properties
            .insert("group.instance.id".into(), format!("logger-{instance}"));
        let (stop, stopped) = watch::channel(false);
        let settings = LogSettings {
            metrics_addr: None,
            pipeline: member,
            brokers: brokers.clone(),
            group_id: "two-loggers".into(),
            window: Duration::from_secs(3),
            instance: instance.into(),
        };
        loggers.push(tokio::spawn(log(settings, stopped)));
        stops.push(stop);
    }
    // Both members in the group before anything is produced.
    tokio::time::sleep(Duration::from_secs(8)).await;

    // Upstream: requests and feedback placed by the Java partitioner; results by
    // eglr's own producer (keyed by request id, partition left to it).
    let upstream: FutureProducer = producer_config(&p.kafka, &brokers)
        .create()
        .expect("producer");
    let place = |topic: &str, key: &str, payload: Vec<u8>| {
        let partition = java_partition(key.as_bytes(), 2);
        let (topic, key) = (topic.to_owned(), key.to_owned());
        let upstream = upstream.clone();
        async move {
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .partition(partition);
            upstream
                .send(record, Duration::from_secs(10))
                .await
                .expect("produce");
        }
    };
    let t = &p.kafka.topics;
    let mut sides = [0usize; 2];
    for s in &lists {
        sides[java_partition(s.request_id.as_bytes(), 2) as usize] += 1;
        place(&t.requests, &s.request_id, s.request.clone()).await;
        send(&results, &t.results, &s.request_id, &s.result).await;
        for f in &s.feedback {
            let json = serde_json::to_vec(f).expect("json");
            place(&t.feedback, &f.request_id, json).await;
        }
    }
    assert!(
        sides.iter().all(|&n| n > 20),
        "keys on both partitions: {sides:?}"
    );
    wait_for("200 lists in the log", Duration::from_secs(90), || {
        rows(dir.path()).0.len() == 200
    })
    .await;
    for stop in &stops {
        let _ = stop.send(true);
    }
    let mut written = Vec::new();
    for logger in loggers {
        let summary = logger.await.expect("join").expect("logger");
        assert_eq!(summary.join.results_without_request, 0, "{summary:?}");
        written.push(summary.join.lists);
    }
    assert!(
        written.iter().all(|&n| n > 0),
        "both instances wrote lists: {written:?}"
    );
    let (unique, raw) = rows(dir.path());
    assert_eq!(raw, 200, "every list exactly once: {written:?}");
    assert_rows_are(&unique, &lists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_with_different_partition_counts_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = logger_pipeline(dir.path(), false);
    let b = EmbeddedBroker::start().expect("broker");
    let t = &p.kafka.topics;
    b.create_topics(&[
        (t.requests.as_str(), 4),
        (t.results.as_str(), 4),
        (t.feedback.as_str(), 8),
    ])
    .expect("topics");
    let (_stop, stopped) = watch::channel(false);
    let settings = LogSettings {
        metrics_addr: None,
        pipeline: p.clone(),
        brokers: b.bootstrap(),
        group_id: "mismatch".into(),
        window: Duration::from_secs(3),
        instance: "0".into(),
    };
    let error = log(settings, stopped).await.expect_err("refused");
    let text = error.to_string();
    assert!(
        text.contains("different partition counts") && text.contains(&format!("{} 8", t.feedback)),
        "{text}"
    );
    assert_eq!(
        eglr::fault::HasFault::fault(&error),
        eglr::fault::Fault::Input
    );
}
