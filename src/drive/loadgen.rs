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
    plan: LoadPlan<'_>,
) -> Result<LoadReport, StreamError> {
    let LoadPlan {
        outgoing,
        expect_results,
        expect_dlq,
        rate,
        max_in_flight,
        warmup,
        timeout,
        wait_until_answered,
    } = plan;
    let topics = &kafka.topics;
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
    let cfg = client_config(kafka, brokers, &defaults);
    let consumer: StreamConsumer = cfg
        .create()
        .map_err(StreamError::kafka("create the results consumer"))?;
    // Listen from the current end of the results and dead-letter topics, fixed before
    // the first request is sent: no group join to wait for, and no "latest" offset
    // looked up late (after a broker error, say) that would skip results.
    let mut start = TopicPartitionList::new();
    let mut start_offsets: HashMap<(String, i32), i64> = HashMap::new();
    for topic in [topics.results.as_str(), topics.dead_letter.as_str()] {
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
    let producer: FutureProducer = producer_config(kafka, brokers)
        .create()
        .map_err(StreamError::kafka("create the producer"))?;

    // Results are read while requests are produced, so latency is not inflated by
    // reading them late; each first result records when it was consumed.
    let expected_ids: std::collections::HashSet<String> = expect_results.iter().cloned().collect();
    let expected = expected_ids.len();
    let dlq_topic = topics.dead_letter.clone();
    let answered = Arc::new(AtomicUsize::new(0));
    let answered_by_reader = Arc::clone(&answered);
    // The reader waits `timeout` past the last request sent, however long sending takes
    // (a paced run of ten minutes, or a broker slower than the rate): milliseconds
    // since `clock` at which the last request went out.
    let clock = Instant::now();
    let last_sent_ms = Arc::new(AtomicU64::new(0));
    let last_sent_by_sender = Arc::clone(&last_sent_ms);
    let reader = tokio::spawn(async move {
        let mut received: HashMap<String, Received> = HashMap::new();
        let (mut dlq, mut duplicates, mut undecodable) = (0usize, 0usize, 0usize);
        let deadline =
            || clock + Duration::from_millis(last_sent_ms.load(Ordering::Relaxed)) + timeout;
        while (received.len() < expected || dlq < expect_dlq) && Instant::now() < deadline() {
            let msg = match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await
            {
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
            if msg.topic() == dlq_topic {
                dlq += 1;
                answered_by_reader.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let result = match serde_json::from_slice::<RerankResult>(msg.payload().unwrap_or(&[]))
            {
                Ok(result) => result,
                Err(e) => {
                    undecodable += 1;
                    tracing::warn!(partition = msg.partition(), offset = msg.offset(), error = %e, "a result that does not decode");
                    continue;
                }
            };
            if !expected_ids.contains(&result.request_id) {
                continue;
            }
            if received.contains_key(&result.request_id) {
                duplicates += 1;
                continue;
            }
            answered_by_reader.fetch_add(1, Ordering::Relaxed);
            received.insert(
                result.request_id,
                Received {
                    at: Instant::now(),
                    steps: result.items.iter().map(|i| i.reasoning_steps).sum(),
                    version: result.model_version,
                    server_ms: result.latency_ms,
                },
            );
        }
        (received, dlq, duplicates, undecodable)
    });

    // Send times of the measured (post-warm-up) requests.
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(outgoing.len());
    let mut deliveries = Vec::with_capacity(outgoing.len());
    let mut started = Instant::now();
    let n = outgoing.len();
    let mut window_given_up = false;
    for (i, mut o) in outgoing.into_iter().enumerate() {
        if let Some(r) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / r);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        if let Some(window) = max_in_flight.filter(|_| !window_given_up) {
            let waiting = Instant::now();
            while i >= answered.load(Ordering::Relaxed) + window.max(1) {
                // No answer for `timeout`: the stage has stopped answering, and waiting
                // again for every request left would stall the run; the rest go out
                // unwindowed (the missing results are reported).
                if waiting.elapsed() >= timeout {
                    tracing::warn!(
                        sent = i,
                        answered = answered.load(Ordering::Relaxed),
                        "no answer within the timeout: the in-flight window is given up"
                    );
                    window_given_up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let now = Instant::now();
        if now.duration_since(started) >= warmup || i >= n / 10 {
            sent_at.insert(o.key.clone(), now);
        }
        let payload = o.payload_at(crate::clock::unix_millis());
        loop {
            match producer.send_result(
                FutureRecord::to(&topics.requests)
                    .key(&o.key)
                    .payload(&payload),
            ) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    let since = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
                    last_sent_by_sender.store(since, Ordering::Relaxed);
                    break;
                }
                Err((e, _)) => {
                    tracing::debug!(error = %e, "producer queue full");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        if i == 0 && wait_until_answered {
            let waiting = Instant::now();
            while answered.load(Ordering::Relaxed) == 0 && waiting.elapsed() < timeout {
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
    let (received, dlq, duplicates, undecodable_results) = reader
        .await
        .map_err(|_| StreamError::Internal("the results reader panicked"))?;

    let mut latencies: Vec<f64> = Vec::with_capacity(received.len());
    let mut server_ms: Vec<f64> = Vec::with_capacity(received.len());
    let mut versions: Vec<(String, usize)> = Vec::new();
    let mut steps = 0f64;
    let mut last = started;
    let mut by_arrival: Vec<(&Instant, &String)> =
        received.values().map(|r| (&r.at, &r.version)).collect();
    by_arrival.sort_by_key(|(t, _)| **t);
    for (_, v) in &by_arrival {
        match versions.iter_mut().find(|x| &x.0 == *v) {
            Some(x) => x.1 += 1,
            None => versions.push(((*v).clone(), 1)),
        }
    }
    for (id, r) in &received {
        if let Some(sent) = sent_at.get(id) {
            latencies.push(r.at.duration_since(*sent).as_secs_f64() * 1000.0);
            server_ms.push(r.server_ms);
        }
        steps += f64::from(r.steps);
        last = last.max(r.at);
    }
    latencies.sort_by(f64::total_cmp);
    server_ms.sort_by(f64::total_cmp);
    let elapsed = last.duration_since(started).as_secs_f64().max(1e-9);
    let unique = received.len();
    Ok(LoadReport {
        requests: n,
        results: unique,
        dlq,
        latency_samples: latencies.len(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        server_p50_ms: percentile(&server_ms, 0.5),
        server_p99_ms: percentile(&server_ms, 0.99),
        throughput_rps: unique as f64 / elapsed,
        reasoning_steps_per_list: steps / unique.max(1) as f64,
        model_versions: versions,
        missing: expect_results
            .iter()
            .filter(|k| !received.contains_key(*k))
            .count(),
        duplicates,
        produce_errors,
        undecodable_results,
    })
}
