//! A load generator for any broker: produces requests (at a rate or as fast as
//! possible), consumes results and dead letters, and measures end-to-end latency from
//! produce to consume.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::KafkaConfig;
use crate::schema::{RerankRequest, RerankResult};
use crate::sim::Traffic;
use crate::stream::kafka::{client_config, producer_config, LOW_LATENCY_FETCH};
use crate::stream::StreamError;

/// One message to produce to the requests topic.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub key: String,
    pub body: Body,
}

/// What an [`Outgoing`] message carries.
#[derive(Debug, Clone)]
pub enum Body {
    /// A well-formed request, stamped with the time it is sent and encoded then, as
    /// upstream would: `serve`'s request deadline and the logger's event-time join read
    /// that time, and a load built up front would otherwise age while it is offered.
    Request(Box<RerankRequest>),
    /// Bytes sent as they are (a deliberately malformed request).
    Raw(Vec<u8>),
}

impl Outgoing {
    /// The payload as sent at `now_ms`.
    fn payload_at(&mut self, now_ms: i64) -> Vec<u8> {
        match &mut self.body {
            Body::Request(request) => {
                request.timestamp_ms = now_ms;
                serde_json::to_vec(request).unwrap_or_default()
            }
            Body::Raw(bytes) => std::mem::take(bytes),
        }
    }
}

/// Requests of simulated traffic, some deliberately malformed.
#[derive(Debug, Clone)]
pub struct SimulatedLoad {
    pub outgoing: Vec<Outgoing>,
    /// Ids of the well-formed requests (each must get a result).
    pub valid: Vec<String>,
    /// How many were replaced by malformed payloads (each must be a dead letter).
    pub malformed: usize,
}

/// Impressions `0..n` of `traffic` as request messages; with `malformed_every = Some(m)`
/// every m-th payload is replaced by `malformed(i)`, `i` counting malformed ones from 1.
pub fn simulated_requests(
    traffic: &Traffic<'_>,
    n: usize,
    malformed_every: Option<usize>,
    malformed: impl Fn(usize) -> Vec<u8>,
) -> SimulatedLoad {
    let mut load = SimulatedLoad {
        outgoing: Vec::with_capacity(n),
        valid: Vec::with_capacity(n),
        malformed: 0,
    };
    for k in 0..n {
        let request = traffic.request(&traffic.impression(k as u64));
        let key = request.request_id.clone();
        let body = if malformed_every.is_some_and(|m| k % m == m - 1) {
            load.malformed += 1;
            Body::Raw(malformed(load.malformed))
        } else {
            load.valid.push(key.clone());
            Body::Request(Box::new(request))
        };
        load.outgoing.push(Outgoing { key, body });
    }
    load
}

/// What a load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub requests: usize,
    pub results: usize,
    pub dlq: usize,
    /// Requests whose latency is in the percentiles (those sent after the warm-up).
    pub latency_samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Median time inside `serve`, from taking a request off the consumer to its result
    /// being ready (the results' `latency_ms`; measured requests only): the rest of
    /// `p50_ms` is the Kafka path.
    pub server_p50_ms: f64,
    /// 99th percentile of the time inside `serve`.
    pub server_p99_ms: f64,
    pub throughput_rps: f64,
    pub reasoning_steps_per_list: f64,
    /// Results per model version, in order of first appearance.
    pub model_versions: Vec<(String, usize)>,
    /// Valid requests without a result at the end (0 means nothing lost).
    pub missing: usize,
    /// Results delivered more than once (allowed under at-least-once).
    pub duplicates: usize,
    /// Requests the broker did not acknowledge (they cannot have results).
    pub produce_errors: usize,
    /// Messages on the results topic that do not decode as a result (logged).
    pub undecodable_results: usize,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The first result of one request, as the load generator saw it.
#[derive(Debug)]
struct Received {
    at: Instant,
    steps: u32,
    version: String,
    /// Time inside `serve` (the result's `latency_ms`).
    server_ms: f64,
}

/// What to offer and what to expect back.
#[derive(Debug)]
pub struct LoadPlan<'a> {
    pub outgoing: Vec<Outgoing>,
    /// Keys that must each get a result.
    pub expect_results: &'a [String],
    /// Dead letters to wait for.
    pub expect_dlq: usize,
    /// Offered requests/s; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// At most this many requests sent and not yet answered (result or dead letter):
    /// a closed-loop bound so "as fast as possible" measures the stage's throughput
    /// instead of piling up a backlog (the embedded broker keeps only a few MB per
    /// partition and drops older unconsumed messages).
    pub max_in_flight: Option<usize>,
    /// Requests sent during this first stretch (at most the first tenth of the
    /// requests) are delivered and checked like the rest but left out of the latency
    /// percentiles: connections, group joins and the first batches warm up then.
    pub warmup: Duration,
    /// How long to wait for the expected results after the last request was sent
    /// (and how long the `max_in_flight` window may hold sending up before it is given
    /// up for the rest of the run).
    pub timeout: Duration,
    /// Send the first request alone and start the clock once it is answered: the
    /// stage's start-up (group join, first batch) is then not measured as latency.
    pub wait_until_answered: bool,
}

/// Produces the plan's requests, then waits (up to its timeout) for a result for every
/// expected key and for the expected dead letters.
pub async fn run(
    kafka: &KafkaConfig,
    brokers: &str,
    mut plan: LoadPlan<'_>,
) -> Result<LoadReport, StreamError> {
    let (consumer, start_offsets) = listen_from_the_end(kafka, brokers)?;
    let producer: FutureProducer = producer_config(kafka, brokers)
        .create()
        .map_err(StreamError::kafka("create the producer"))?;
    let progress = Progress::default();
    // Results are read while requests are produced, so latency is not inflated by
    // reading them late; each first result records when it was consumed.
    let reader = tokio::spawn(read_answers(
        consumer,
        start_offsets,
        Expected {
            ids: plan.expect_results.iter().cloned().collect(),
            dead_letters: plan.expect_dlq,
            dead_letter_topic: kafka.topics.dead_letter.clone(),
        },
        progress.clone(),
        plan.timeout,
    ));
    let outgoing = std::mem::take(&mut plan.outgoing);
    let requests = outgoing.len();
    let sent = send_requests(
        &producer,
        &kafka.topics.requests,
        outgoing,
        &plan,
        &progress,
    )
    .await;
    let read = reader
        .await
        .map_err(|_| StreamError::Internal("the results reader panicked"))?;
    Ok(report(requests, plan.expect_results, &sent, read))
}

/// Where the reader starts in each (topic, partition): what lies before was there before
/// the run.
type StartOffsets = HashMap<(String, i32), i64>;

/// A consumer of the results and dead-letter topics assigned at their current ends,
/// fixed before the first request is sent: no group join to wait for, and no "latest"
/// offset looked up late (after a broker error, say) that would skip results. With the
/// start offsets, below which anything read is ignored.
fn listen_from_the_end(
    kafka: &KafkaConfig,
    brokers: &str,
) -> Result<(StreamConsumer, StartOffsets), StreamError> {
    // A fresh group id per run (nothing is committed; the partitions are assigned).
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let group = format!("eglr-loadgen-{}-{nonce}", std::process::id());
    let mut defaults = vec![
        ("group.id", group.as_str()),
        // Only consulted if a fetch position is out of range (a broker hiccup): re-read
        // the partition rather than jump to its end and miss results; what lies before
        // the start offsets fixed below is ignored.
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
    ];
    // The measuring client must not add latency of its own.
    defaults.extend(LOW_LATENCY_FETCH);
    let consumer: StreamConsumer = client_config(kafka, brokers, &defaults)
        .create()
        .map_err(StreamError::kafka("create the results consumer"))?;
    let mut start = TopicPartitionList::new();
    let mut start_offsets = StartOffsets::new();
    for topic in [
        kafka.topics.results.as_str(),
        kafka.topics.dead_letter.as_str(),
    ] {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(20))
            .map_err(StreamError::kafka("read topic metadata"))?;
        for t in metadata.topics() {
            for partition in t.partitions() {
                let (_, high) = consumer
                    .fetch_watermarks(topic, partition.id(), Duration::from_secs(20))
                    .map_err(StreamError::kafka("read the end offsets"))?;
                start
                    .add_partition_offset(topic, partition.id(), Offset::Offset(high))
                    .map_err(StreamError::kafka("set a start offset"))?;
                start_offsets.insert((topic.to_owned(), partition.id()), high);
            }
        }
    }
    consumer
        .assign(&start)
        .map_err(StreamError::kafka("assign the results partitions"))?;
    Ok((consumer, start_offsets))
}

/// What the sender and the reader share: requests answered so far (results and dead
/// letters, for the in-flight window), and when the last request went out (ms since
/// `clock`; the reader waits `timeout` past it, however long sending takes: a paced run
/// of ten minutes, or a broker slower than the rate).
#[derive(Debug, Clone)]
struct Progress {
    answered: Arc<AtomicUsize>,
    clock: Instant,
    last_sent_ms: Arc<AtomicU64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            answered: Arc::default(),
            clock: Instant::now(),
            last_sent_ms: Arc::default(),
        }
    }
}

/// What the reader waits for.
struct Expected {
    ids: std::collections::HashSet<String>,
    dead_letters: usize,
    dead_letter_topic: String,
}

/// What the reader saw: the first result of each expected request, the dead letters,
/// repeated results and results that do not decode.
struct Answers {
    received: HashMap<String, Received>,
    dead_letters: usize,
    duplicates: usize,
    undecodable: usize,
}

/// Reads results and dead letters until every expected one came, or `timeout` after
/// the last request was sent.
async fn read_answers(
    consumer: StreamConsumer,
    start_offsets: StartOffsets,
    expected: Expected,
    progress: Progress,
    timeout: Duration,
) -> Answers {
    let mut a = Answers {
        received: HashMap::new(),
        dead_letters: 0,
        duplicates: 0,
        undecodable: 0,
    };
    let deadline = || {
        progress.clock
            + Duration::from_millis(progress.last_sent_ms.load(Ordering::Relaxed))
            + timeout
    };
    while (a.received.len() < expected.ids.len() || a.dead_letters < expected.dead_letters)
        && Instant::now() < deadline()
    {
        let msg = match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "results consumer");
                continue;
            }
            Err(_) => continue,
        };
        let before_start = start_offsets
            .get(&(msg.topic().to_owned(), msg.partition()))
            .is_some_and(|s| msg.offset() < *s);
        if before_start {
            continue;
        }
        if msg.topic() == expected.dead_letter_topic {
            a.dead_letters += 1;
            progress.answered.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let result = match serde_json::from_slice::<RerankResult>(msg.payload().unwrap_or(&[])) {
            Ok(result) => result,
            Err(e) => {
                a.undecodable += 1;
                tracing::warn!(partition = msg.partition(), offset = msg.offset(), error = %e, "a result that does not decode");
                continue;
            }
        };
        if !expected.ids.contains(&result.request_id) {
            continue;
        }
        if a.received.contains_key(&result.request_id) {
            a.duplicates += 1;
            continue;
        }
        progress.answered.fetch_add(1, Ordering::Relaxed);
        a.received.insert(
            result.request_id,
            Received {
                at: Instant::now(),
                steps: result.items.iter().map(|i| i.reasoning_steps).sum(),
                version: result.model_version,
                server_ms: result.latency_ms,
            },
        );
    }
    a
}

/// What sending left: when each measured (post-warm-up) request went out, when the
/// clock started, and the requests the broker did not take.
struct Sent {
    sent_at: HashMap<String, Instant>,
    started: Instant,
    produce_errors: usize,
}

/// Produces `outgoing` at the plan's rate, within its in-flight window, and waits for
/// the broker's acknowledgements.
async fn send_requests(
    producer: &FutureProducer,
    topic: &str,
    outgoing: Vec<Outgoing>,
    plan: &LoadPlan<'_>,
    progress: &Progress,
) -> Sent {
    let n = outgoing.len();
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(n);
    let mut deliveries = Vec::with_capacity(n);
    let mut started = Instant::now();
    let mut window_given_up = false;
    for (i, mut o) in outgoing.into_iter().enumerate() {
        if let Some(r) = plan.rate {
            let due = started + Duration::from_secs_f64(i as f64 / r);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        if let Some(window) = plan.max_in_flight.filter(|_| !window_given_up) {
            window_given_up = !wait_for_room(i, window, plan.timeout, progress).await;
        }
        let now = Instant::now();
        if now.duration_since(started) >= plan.warmup || i >= n / 10 {
            sent_at.insert(o.key.clone(), now);
        }
        let payload = o.payload_at(crate::clock::unix_millis());
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&o.key).payload(&payload)) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    let since =
                        u64::try_from(progress.clock.elapsed().as_millis()).unwrap_or(u64::MAX);
                    progress.last_sent_ms.store(since, Ordering::Relaxed);
                    break;
                }
                Err((e, _)) => {
                    tracing::debug!(error = %e, "producer queue full");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        if i == 0 && plan.wait_until_answered {
            let waiting = Instant::now();
            while progress.answered.load(Ordering::Relaxed) == 0 && waiting.elapsed() < plan.timeout
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            started = Instant::now();
        }
    }
    let _ = producer.flush(Duration::from_secs(30));
    let mut produce_errors = 0;
    for d in deliveries {
        match d.await {
            Ok(Ok(_)) => {}
            other => {
                produce_errors += 1;
                if produce_errors <= 3 {
                    let error = crate::stream::kafka::delivery_failure(&other);
                    tracing::warn!(%error, "request not delivered to the broker");
                }
            }
        }
    }
    Sent {
        sent_at,
        started,
        produce_errors,
    }
}

/// Waits until request `i` fits the in-flight `window`; false when nothing was
/// answered for `timeout`: the stage has stopped answering, and waiting again for
/// every request left would stall the run, so the rest go out unwindowed (the missing
/// results are reported).
async fn wait_for_room(i: usize, window: usize, timeout: Duration, progress: &Progress) -> bool {
    let waiting = Instant::now();
    while i >= progress.answered.load(Ordering::Relaxed) + window.max(1) {
        if waiting.elapsed() >= timeout {
            tracing::warn!(
                sent = i,
                answered = progress.answered.load(Ordering::Relaxed),
                "no answer within the timeout: the in-flight window is given up"
            );
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// The run's figures: latency from each measured request's send to its first result,
/// time inside `serve`, throughput from the clock's start to the last result, the
/// versions that answered (in order of first arrival), what is missing.
fn report(requests: usize, expected: &[String], sent: &Sent, read: Answers) -> LoadReport {
    let received = &read.received;
    let mut latencies: Vec<f64> = Vec::with_capacity(received.len());
    let mut server_ms: Vec<f64> = Vec::with_capacity(received.len());
    let mut versions: Vec<(String, usize)> = Vec::new();
    let mut steps = 0f64;
    let mut last = sent.started;
    let mut by_arrival: Vec<(&Instant, &String)> =
        received.values().map(|r| (&r.at, &r.version)).collect();
    by_arrival.sort_by_key(|(t, _)| **t);
    for (_, v) in &by_arrival {
        match versions.iter_mut().find(|x| &x.0 == *v) {
            Some(x) => x.1 += 1,
            None => versions.push(((*v).clone(), 1)),
        }
    }
    for (id, r) in received {
        if let Some(at) = sent.sent_at.get(id) {
            latencies.push(r.at.duration_since(*at).as_secs_f64() * 1000.0);
            server_ms.push(r.server_ms);
        }
        steps += f64::from(r.steps);
        last = last.max(r.at);
    }
    latencies.sort_by(f64::total_cmp);
    server_ms.sort_by(f64::total_cmp);
    let elapsed = last.duration_since(sent.started).as_secs_f64().max(1e-9);
    let unique = received.len();
    LoadReport {
        requests,
        results: unique,
        dlq: read.dead_letters,
        latency_samples: latencies.len(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        server_p50_ms: percentile(&server_ms, 0.5),
        server_p99_ms: percentile(&server_ms, 0.99),
        throughput_rps: unique as f64 / elapsed,
        reasoning_steps_per_list: steps / unique.max(1) as f64,
        model_versions: versions,
        missing: expected
            .iter()
            .filter(|k| !received.contains_key(*k))
            .count(),
        duplicates: read.duplicates,
        produce_errors: sent.produce_errors,
        undecodable_results: read.undecodable,
    }
}
