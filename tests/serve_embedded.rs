//! The serve stage against the embedded Kafka-protocol broker (rdkafka's MockCluster):
//! bad input goes to the dead-letter topic with its error, nothing valid is lost (also
//! through a broker outage), and a bad model bundle never stops serving.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use common::{requests, spawn_load, write_bundle};
use eglr::config::PipelineConfig;
use eglr::drive::loadgen::{Body, LoadReport, Outgoing};
use eglr::model::{LiveModel, ModelStore};
use eglr::stream::kafka::{client_config, producer_config};
use eglr::stream::{serve, EmbeddedBroker, ServeSettings, ServeSummary, StreamError};

fn pipeline() -> PipelineConfig {
    let mut p = common::pipeline();
    p.kafka.group_id = format!("test-{}", std::process::id());
    p.batching.max_batch = 64;
    p.batching.queue_capacity = 128;
    p
}

/// The tests of this file run one at a time: their faults are timed against a load
/// of a few seconds, and four stages plus four load generators on two cores stretched
/// that load to minutes (in one such run one request acknowledged by the embedded
/// broker never reached the stage's consumer; see the issue's closing note).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A broker with the stage's topics, a store holding `v000001`, and a running stage.
struct Stage {
    _turn: std::sync::MutexGuard<'static, ()>,
    p: PipelineConfig,
    broker: EmbeddedBroker,
    store: tempfile::TempDir,
    live: Arc<LiveModel>,
    /// The stage's metrics and health endpoint.
    metrics: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<ServeSummary, StreamError>>,
}

impl Stage {
    fn start() -> Self {
        Self::start_with(|_, _| {})
    }

    /// `edit` changes the pipeline the serving bundle is built with and the stage's.
    fn start_with(edit: impl FnOnce(&mut PipelineConfig, &mut PipelineConfig)) -> Self {
        // A test that failed while holding the lock does not stop the others.
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let mut p = pipeline();
        let store = tempfile::tempdir().expect("tempdir");
        let mut bundle_pipeline = p.clone();
        edit(&mut bundle_pipeline, &mut p);
        write_bundle(&bundle_pipeline, &store.path().join("v000001"), 1);
        let broker = EmbeddedBroker::start().expect("embedded broker");
        let t = &p.kafka.topics;
        broker
            .create_topics(&[(&t.requests, 4), (&t.results, 4), (&t.dead_letter, 1)])
            .expect("topics");
        let live =
            Arc::new(LiveModel::open(ModelStore::new(store.path()), Device::Cpu).expect("model"));
        let metrics = free_local_port();
        let (stop, server) = spawn_serve(&p, &broker, &live, metrics);
        Self {
            _turn: turn,
            p,
            broker,
            store,
            live,
            metrics,
            stop,
            server,
        }
    }

    /// `n` valid requests offered at 500/s by a load generator task.
    fn valid_load_at_500_per_s(&self, n: usize) -> JoinHandle<LoadReport> {
        let (out, valid, _) = requests(n, 4, usize::MAX, no_bad);
        spawn_load(
            &self.p.kafka,
            &self.broker.bootstrap(),
            out,
            valid,
            0,
            Some(500.0),
        )
    }

    /// Takes the results topic's leader away (`true`: producers cannot deliver to it)
    /// or gives it back.
    fn results_outage(&self, on: bool) {
        use rdkafka::types::RDKafkaRespErr;
        let error = if on {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE
        } else {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
        };
        self.broker
            .cluster()
            .topic_error(&self.p.kafka.topics.results, error)
            .expect("topic error");
    }

    /// Starts the stage again (same group) once the previous one has returned.
    fn restart(&mut self) {
        assert!(self.server.is_finished(), "the previous stage still runs");
        // The endpoint of the stopped stage is a task of this runtime that still holds
        // its port.
        self.metrics = free_local_port();
        (self.stop, self.server) = spawn_serve(&self.p, &self.broker, &self.live, self.metrics);
    }

    async fn stop(self) -> ServeSummary {
        let _ = self.stop.send(true);
        self.server.await.expect("join").expect("serve")
    }
}

/// A running stage: its stop switch and its task.
type Running = (
    watch::Sender<bool>,
    JoinHandle<Result<ServeSummary, StreamError>>,
);

fn spawn_serve(
    p: &PipelineConfig,
    broker: &EmbeddedBroker,
    live: &Arc<LiveModel>,
    metrics: std::net::SocketAddr,
) -> Running {
    let settings = ServeSettings {
        pipeline: p.clone(),
        brokers: broker.bootstrap(),
        metrics_addr: Some(metrics),
        model_poll: Duration::from_millis(100),
        shutdown_timeout: Duration::from_secs(20),
    };
    let (stop, stopped) = watch::channel(false);
    (
        stop,
        tokio::spawn(serve(settings, Arc::clone(live), stopped)),
    )
}

/// A local address nothing listens on.
fn free_local_port() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()))
}

/// The value of the unlabelled metric `name` on the endpoint at `addr`.
/// The stage's `/metrics` response.
fn metrics_text(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    socket
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    socket.read_to_string(&mut text).expect("response");
    text
}

fn scrape(addr: std::net::SocketAddr, name: &str) -> f64 {
    let text = metrics_text(addr);
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// The status code and body of `GET path` on the endpoint at `addr`; code 0 while
/// nothing listens there yet.
fn probe(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut socket = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return (0, e.to_string()),
    };
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    if let Err(e) = socket.write_all(request.as_bytes()) {
        return (0, e.to_string());
    }
    let mut text = String::new();
    socket.read_to_string(&mut text).expect("response");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (code, body)
}

/// Waits up to 20 s for `GET path` to answer `code`; the last answer.
async fn probe_until(addr: std::net::SocketAddr, path: &str, code: u16) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = probe(addr, path);
        if answer.0 == code || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Produces `out` to the requests topic and waits for every acknowledgement.
async fn produce_requests(s: &Stage, out: Vec<Outgoing>) {
    let none = out.iter().map(|_| Vec::new()).collect();
    produce_requests_with_headers(s, out, none).await
}

/// [`produce_requests`], the k-th message with the headers `headers[k]`.
async fn produce_requests_with_headers(
    s: &Stage,
    out: Vec<Outgoing>,
    headers: Vec<Vec<(&str, &str)>>,
) {
    let producer: FutureProducer =
        producer_config(&common::pipeline().kafka, &s.broker.bootstrap())
            .create()
            .expect("producer");
    let mut deliveries = Vec::new();
    for (o, h) in out.into_iter().zip(headers) {
        let payload = match o.body {
            Body::Request(mut request) => {
                request.timestamp_ms = eglr::clock::unix_millis();
                serde_json::to_vec(&request).expect("encode")
            }
            Body::Raw(bytes) => bytes,
        };
        let owned = h.into_iter().fold(OwnedHeaders::new(), |o, (key, value)| {
            o.insert(Header {
                key,
                value: Some(value),
            })
        });
        let record = FutureRecord::to(&s.p.kafka.topics.requests)
            .key(&o.key)
            .payload(&payload)
            .headers(owned);
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queued"),
        );
    }
    for d in deliveries {
        d.await.expect("delivery").expect("delivered");
    }
}

/// The request ids of the results topic, read until `n` distinct ones came or none
/// came for a while.
fn answered(s: &Stage, n: usize) -> std::collections::HashSet<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let results = common::read_topics(
            &s.broker.bootstrap(),
            &[&s.p.kafka.topics.results],
            Duration::from_secs(3),
        );
        let ids: std::collections::HashSet<String> = results.into_iter().map(|m| m.3).collect();
        if ids.len() >= n || Instant::now() > deadline {
            return ids;
        }
    }
}

fn no_bad(_: usize) -> Vec<u8> {
    Vec::new()
}

/// With `exploration.share = 0.1` about a tenth of the requests (binomial bounds) are
/// answered by the logging policy, each list with its propensities (the items' scores);
/// a request delivered again gets the same list, explored or not; with share 0 none is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_of_requests_is_served_by_the_logging_policy_the_same_way_each_time() {
    use eglr::schema::{LoggingPolicy, RerankResult, ServedSource};
    let n = 600;
    let again = 100;
    for share in [0.1, 0.0] {
        let s = Stage::start_with(|_, stage| {
            stage.exploration.share = share;
            stage.batching.quality_every = 1;
        });
        let (out, _, _) = requests(n, 4, usize::MAX, no_bad);
        let repeated: Vec<Outgoing> = out.iter().take(again).cloned().collect();
        produce_requests(&s, out).await;
        produce_requests(&s, repeated).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let results: Vec<RerankResult> = loop {
            let payloads = common::read_payloads(
                &s.broker.bootstrap(),
                &s.p.kafka.topics.results,
                Duration::from_secs(2),
            );
            if payloads.len() >= n + again || Instant::now() > deadline {
                break payloads
                    .iter()
                    .map(|p| serde_json::from_slice(p).expect("a result"))
                    .collect();
            }
        };
        let metric = |name: &str| scrape(s.metrics, name);
        let served = (n + again) as f64;
        let longest = results.iter().map(|r| r.items.len()).max().unwrap_or(0) as f64;
        // Every batch is assessed (quality_every = 1): the serving evaluator's expected
        // clicks of the served and the upstream lists are clicks, at most one a position.
        assert_eq!(metric("eglr_quality_assessed_lists_total"), served);
        for list in ["served", "upstream"] {
            let clicks = metric(&format!(
                "eglr_quality_expected_clicks_total{{list=\"{list}\"}}"
            ));
            assert!(
                clicks > 0.0 && clicks <= served * longest,
                "{list}: {clicks}"
            );
        }
        assert_eq!(metric("eglr_exploration_target_share"), share);
        let explored_all = results
            .iter()
            .filter(|r| r.source == ServedSource::Exploration)
            .count() as f64;
        let copies = metric("eglr_upstream_order_lists_total");
        let fallbacks = results
            .iter()
            .filter(|r| r.source == ServedSource::Upstream)
            .count() as f64;
        assert!(copies >= fallbacks && copies <= served, "{copies} copies");
        if share > 0.0 {
            let uniform = |m: &str| metric(&format!("{m}{{policy=\"uniform\"}}"));
            assert_eq!(uniform("eglr_exploration_lists_total"), explored_all);
            // The evaluator's clicks given up: a difference of two lists' clicks each.
            let cost = uniform("eglr_exploration_cost_clicks_total");
            assert!(cost.abs() <= explored_all * longest, "{cost}");
        } else {
            let text = metrics_text(s.metrics);
            assert!(!text.contains("eglr_exploration_lists_total{"), "{text}");
        }
        s.stop().await;
        assert_eq!(results.len(), n + again, "share {share}");
        let mut first: std::collections::HashMap<&str, &RerankResult> = Default::default();
        for r in &results {
            let seen = first.entry(r.request_id.as_str()).or_insert(r);
            let ids = |r: &RerankResult| {
                r.items
                    .iter()
                    .map(|i| i.item_id.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                (ids(seen), seen.source),
                (ids(r), r.source),
                "{}",
                r.request_id
            );
        }
        assert_eq!(first.len(), n);
        let explored: Vec<&&RerankResult> = first
            .values()
            .filter(|r| r.source == ServedSource::Exploration)
            .collect();
        let expected = share * n as f64;
        let bound = 4.0 * (n as f64 * share * (1.0 - share)).sqrt();
        assert!(
            (explored.len() as f64 - expected).abs() <= bound,
            "share {share}: {} of {n} explored",
            explored.len()
        );
        for r in explored {
            let draw = r.exploration.as_ref().expect("how the list was drawn");
            assert_eq!(draw.policy, LoggingPolicy::Uniform);
            assert_eq!(draw.propensities.len(), r.items.len());
            // Uniform over the pool: 1 / (pool - t) at position t, so the first step
            // reads the pool's size.
            let pool = (1.0 / draw.propensities[0]).round();
            for (t, (p, item)) in draw.propensities.iter().zip(&r.items).enumerate() {
                assert!((p - 1.0 / (pool - t as f64)).abs() < 1e-12, "{p} at {t}");
                assert_eq!(item.score, *p);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_go_to_the_dead_letter_topic_and_nothing_valid_is_lost() {
    let s = Stage::start();
    let bad = |k: usize| {
        if k.is_multiple_of(2) {
            b"{not json".to_vec()
        } else {
            br#"{"request_id":"x","user":{"id":"u"},"candidates":[],"list_len":1,"timestamp_ms":0}"#
                .to_vec()
        }
    };
    let (out, valid, n_bad) = requests(1000, 1, 20, bad);
    let report = spawn_load(&s.p.kafka, &s.broker.bootstrap(), out, valid, n_bad, None)
        .await
        .expect("load");
    // At-least-once: every valid request has >= 1 result; duplicates are reported.
    assert_eq!(report.missing, 0, "{report:?}");
    assert_eq!(report.results, 950);
    assert_eq!(report.dlq, 50, "{report:?}");
    assert_eq!(report.model_versions, vec![("v000001".to_owned(), 950)]);
    // Every ranked request's time is split into its phases, once each.
    for phase in ["eglr_queue_wait_seconds", "eglr_batch_assembly_seconds"] {
        assert_eq!(
            scrape(s.metrics, &format!("{phase}_count")),
            950.0,
            "{phase}"
        );
    }

    // Every dead letter carries its source and error in headers.
    let mut cfg = client_config(&s.p.kafka, &s.broker.bootstrap(), &[]);
    cfg.set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest");
    let c: StreamConsumer = cfg.create().expect("consumer");
    c.subscribe(&[s.p.kafka.topics.dead_letter.as_str()])
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
                Some(s.p.kafka.topics.requests.as_str())
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
    assert_eq!(s.stop().await.dead_letters, 50);
}

/// A bundle with GR2's semantic ids (its tokenizer in the bundle) serves like any
/// other: every request is answered by it, none dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_with_semantic_ids_serves_every_request() {
    let s = Stage::start_with(|bundle, stage| {
        for p in [bundle, stage] {
            p.features.semantic_ids = Some(eglr::features::SemanticIdSpec {
                levels: 2,
                codes: 16,
                ..Default::default()
            });
        }
    });
    assert!(s.live.current().meta.semantic_ids.is_some());
    let report = s.valid_load_at_500_per_s(300).await.expect("load");
    assert_eq!((report.missing, report.dlq), (0, 0), "{report:?}");
    assert_eq!(report.model_versions, vec![("v000001".to_owned(), 300)]);
    assert_eq!(s.stop().await.dead_letters, 0);
}

/// The headers of the first message of each key in `topic`, read until `n` keys came
/// or 60 s passed.
async fn headers_by_key(
    s: &Stage,
    topic: &str,
    n: usize,
) -> std::collections::HashMap<String, Vec<(String, String)>> {
    let mut cfg = client_config(&s.p.kafka, &s.broker.bootstrap(), &[]);
    cfg.set("group.id", format!("{topic}-header-reader"))
        .set("auto.offset.reset", "earliest");
    let c: StreamConsumer = cfg.create().expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let mut seen = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < n && Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), c.recv()).await {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let headers = m.headers().map_or_else(Vec::new, |h| {
                h.iter()
                    .map(|x| {
                        let v = x.value.map(String::from_utf8_lossy).unwrap_or_default();
                        (x.key.to_owned(), v.into_owned())
                    })
                    .collect()
            });
            seen.entry(key).or_insert(headers);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_carry_their_identity_and_the_trace_and_dead_letters_keep_the_headers() {
    let s = Stage::start();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (mut out, valid, _) = requests(2, 6, usize::MAX, no_bad);
    out.push(Outgoing {
        key: "broken".into(),
        body: Body::Raw(b"{not json".to_vec()),
    });
    let headers = vec![
        vec![("traceparent", parent), ("tracestate", "vendor=1")],
        // Not a traceparent: dropped, and the state with it.
        vec![("traceparent", "hello"), ("tracestate", "vendor=2")],
        vec![("tenant", "a"), ("traceparent", parent)],
    ];
    produce_requests_with_headers(&s, out, headers).await;

    let results = headers_by_key(&s, &s.p.kafka.topics.results, 2).await;
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let identity = |id: &str| {
        vec![
            pair("request_id", id),
            pair("model_version", "v000001"),
            pair("content-type", "application/json"),
        ]
    };
    let mut traced = identity(&valid[0]);
    traced.extend([pair("traceparent", parent), pair("tracestate", "vendor=1")]);
    assert_eq!(results.get(&valid[0]), Some(&traced));
    assert_eq!(results.get(&valid[1]), Some(&identity(&valid[1])));

    let dead = headers_by_key(&s, &s.p.kafka.topics.dead_letter, 1).await;
    let dead = dead.values().next().expect("a dead letter");
    assert_eq!(
        dead[..2],
        [pair("tenant", "a"), pair("traceparent", parent)],
        "the request's own headers first: {dead:?}"
    );
    assert!(
        dead.contains(&pair("error.kind", "malformed_json")),
        "{dead:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_makes_the_stage_unready_but_not_dead() {
    let s = Stage::start();
    let (code, body) = probe_until(s.metrics, "/readyz", 200).await;
    assert_eq!(code, 200, "ready once connected: {body}");
    assert_eq!(probe(s.metrics, "/livez").0, 200);
    s.broker.cluster().broker_down(1).expect("broker down");
    let (code, body) = probe_until(s.metrics, "/readyz", 503).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no broker connection"), "{body}");
    let (code, body) = probe(s.metrics, "/livez");
    assert_eq!(code, 200, "an outage is no reason to restart: {body}");
    s.broker.cluster().broker_up(1).expect("broker up");
    assert_eq!(probe_until(s.metrics, "/readyz", 200).await.0, 200);
    assert_eq!(probe(s.metrics, "/nope").0, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_bundle_never_stops_serving_and_a_good_one_is_swapped_in() {
    let s = Stage::start();
    // A newer version with a corrupt weights file.
    write_bundle(&s.p, &s.store.path().join("v000002"), 2);
    std::fs::write(
        s.store.path().join("v000002/generator.safetensors"),
        b"garbage",
    )
    .expect("corrupt");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (out, valid, _) = requests(200, 2, usize::MAX, no_bad);
    let report = spawn_load(&s.p.kafka, &s.broker.bootstrap(), out, valid, 0, None)
        .await
        .expect("load");
    assert_eq!(report.missing, 0);
    assert_eq!(
        report.model_versions,
        vec![("v000001".to_owned(), 200)],
        "the bad bundle was not swapped in"
    );

    // A good newer version is picked up without a restart.
    write_bundle(&s.p, &s.store.path().join("v000003"), 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.live.current().meta.version != "v000003" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (out, valid, _) = requests(200, 3, usize::MAX, no_bad);
    let report = spawn_load(&s.p.kafka, &s.broker.bootstrap(), out, valid, 0, None)
        .await
        .expect("load");
    assert_eq!(report.missing, 0);
    assert_eq!(report.model_versions, vec![("v000003".to_owned(), 200)]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_and_up_mid_stream_loses_nothing() {
    let s = Stage::start();
    let load = s.valid_load_at_500_per_s(2000);
    // Take the only broker away for 2 s in the middle of the stream: the load generator
    // produces for 4 s from the start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.broker.cluster().broker_down(1).expect("broker down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.broker.cluster().broker_up(1).expect("broker up");
    let report = load.await.expect("load");
    assert_eq!(report.missing, 0, "{report:?}");
    assert_eq!(
        report.produce_errors, 0,
        "the producers retry through the outage"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_request_errors_on_produce_fetch_and_commit_lose_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let s = Stage::start();
    let load = s.valid_load_at_500_per_s(1500);
    // Mid-stream (the load generator produces for 3 s from the start), the broker
    // answers the next requests of each kind with retriable errors and dropped
    // connections. Kafka clients must retry them; the stage must neither lose nor
    // give up on a request.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let cluster = s.broker.cluster();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ],
    );
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    let report = load.await.expect("load");
    let summary = s.stop().await;
    assert_eq!(report.missing, 0, "{report:?} {summary:?}");
    assert_eq!(report.produce_errors, 0, "retriable errors are retried");
    assert!(summary.results >= 1500, "{summary:?}");
}

/// The broker cannot take results for longer than `message.timeout.ms` (the results
/// topic has no leader). The stage must not serve on while its partitions never commit
/// again: after its retries it stops with an error (it is unhealthy at once and the
/// process exits non-zero), having committed nothing it did not deliver, and a restart
/// after the outage answers every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_message_timeout_stops_the_stage_and_loses_nothing() {
    let mut s = Stage::start_with(|_, serving| {
        serving
            .kafka
            .properties
            .insert("message.timeout.ms".into(), "1000".into());
    });
    let results = s.p.kafka.topics.results.clone();
    s.results_outage(true);
    // Produced directly: a load generator would need the results topic's metadata.
    let (out, valid, _) = requests(100, 6, usize::MAX, no_bad);
    produce_requests(&s, out).await;
    let stopped = tokio::time::timeout(Duration::from_secs(90), &mut s.server)
        .await
        .expect("the stage stops within its retries")
        .expect("join");
    let error = stopped.expect_err("a stage that cannot deliver must not end well");
    assert!(error.to_string().contains(&results), "{error}");
    let requests_topic = &s.p.kafka.topics.requests;
    let partitions: common::Ends = (0..4).map(|p| ((requests_topic.clone(), p), 0)).collect();
    let committed = common::committed(&s.broker.bootstrap(), &s.p.kafka.group_id, &partitions);
    assert!(
        committed.values().all(|&offset| offset == 0),
        "nothing was delivered, so nothing may be committed: {committed:?}"
    );

    // The outage ends; the restarted stage re-reads and answers everything.
    s.results_outage(false);
    s.restart();
    let answered = answered(&s, valid.len());
    let summary = s.stop().await;
    assert!(valid.iter().all(|id| answered.contains(id)), "{summary:?}");
}

/// Every buffer between the intake and the broker is bounded (the job queue, the
/// channel of finished batches to the sink, the producer's queue): while the sink cannot
/// deliver (the results topic has no leader, for less than `message.timeout.ms`), the
/// intake pauses its partitions after a few hundred requests instead of reading the
/// whole backlog into memory, and answers everything once the outage ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_cannot_deliver_holds_the_intake_back() {
    const PRODUCER_QUEUE: usize = 50;
    let s = Stage::start_with(|_, serving| {
        let properties = &mut serving.kafka.properties;
        properties.insert(
            "queue.buffering.max.messages".into(),
            PRODUCER_QUEUE.to_string(),
        );
        properties.insert("message.timeout.ms".into(), "120000".into());
    });
    s.results_outage(true);
    let backlog = 3000;
    let (out, valid, _) = requests(backlog, 7, usize::MAX, no_bad);
    produce_requests(&s, out).await;
    // What the stage may hold while it cannot deliver: the job queue, the finished
    // batches in the channel to the sink, one batch at the model, one at the sink, the
    // producer's queue, and what one poll fetched before the pause (one queue's worth).
    let b = &s.p.batching;
    let channel_batches = b.queue_capacity / b.max_batch + 1;
    let bound = 2 * b.queue_capacity + (channel_batches + 2) * b.max_batch + PRODUCER_QUEUE;
    assert!(bound < backlog / 2, "the backlog must dwarf the bound");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut taken = 0.0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = scrape(s.metrics, "eglr_requests_total");
        if now == taken && scrape(s.metrics, "eglr_paused") == 1.0 {
            break; // settled: paused and taking nothing more
        }
        taken = now;
    }
    assert_eq!(scrape(s.metrics, "eglr_paused"), 1.0, "the intake pauses");
    assert!(
        taken > 0.0 && taken <= bound as f64,
        "{taken} requests taken in while nothing could be delivered (bound {bound})"
    );

    s.results_outage(false);
    let answered = answered(&s, backlog);
    let summary = s.stop().await;
    assert!(valid.iter().all(|id| answered.contains(id)), "{summary:?}");
    assert_eq!(summary.results, backlog as u64, "{summary:?}");
}

/// Changes to the pipelines of the serving bundle and of the stage.
type Edit = fn(&mut PipelineConfig, &mut PipelineConfig);

/// A valid request the model cannot rank (its list_len is above the bundle's maximum)
/// or past its deadline is answered with the upstream order and counted, never
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_model_cannot_rank_in_time_get_the_upstream_order() {
    let cases: [(&str, Edit); 2] = [
        ("list_len above the bundle's maximum", |bundle, _| {
            bundle.limits.max_list_len = 2
        }),
        // The load stamps requests when it sends them; its producer lingers 10 ms
        // (the stage's pipeline is the load's too), so every one is older than 1 ms
        // when its batch runs.
        ("past the deadline", |_, serving| {
            serving.batching.max_request_age_ms = Some(1);
            serving
                .kafka
                .properties
                .insert("linger.ms".into(), "10".into());
        }),
    ];
    for (case, edit) in cases {
        let s = Stage::start_with(edit);
        let report = s.valid_load_at_500_per_s(200).await.expect("load");
        let summary = s.stop().await;
        assert!(
            report.requests == 200 && report.missing == 0,
            "{case}: {report:?}"
        );
        assert_eq!(report.dlq, 0, "{case}: {report:?}");
        assert_eq!(summary.dead_letters, 0, "{case}: {summary:?}");
        assert!(summary.upstream_fallbacks >= 200, "{case}: {summary:?}");
    }
}

/// A malformed request larger than the producer may send cannot be copied whole to the
/// dead-letter topic: it is cut to fit (a header gives its size) and its offset
/// finishes, so the partition keeps committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_too_large_to_copy_is_dead_lettered_truncated() {
    let s = Stage::start();
    let (out, valid, n_bad) = requests(90, 5, 30, |_| vec![b'x'; 1_200_000]);
    assert_eq!(n_bad, 3);
    // The upstream producer may send 1.2 MB (the broker accepts it); serve's producer
    // keeps librdkafka's 1 MB limit.
    let mut upstream = s.p.kafka.clone();
    upstream
        .properties
        .insert("message.max.bytes".into(), "2000000".into());
    let report = spawn_load(&upstream, &s.broker.bootstrap(), out, valid, n_bad, None)
        .await
        .expect("load");
    let summary = s.stop().await;
    assert_eq!(report.produce_errors, 0, "{report:?}");
    assert_eq!(report.missing, 0, "{report:?}");
    assert_eq!(report.dlq, n_bad, "{report:?}");
    assert_eq!(summary.dead_letters, n_bad as u64, "{summary:?}");
}
