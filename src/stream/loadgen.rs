//! A load generator for any broker: produces requests (at a rate or as fast as
//! possible), consumes results and dead letters, and measures end-to-end latency from
//! produce to consume.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Serialize;

use super::kafka::{client_config, producer_config};
use super::StreamError;
use crate::config::KafkaConfig;
use crate::schema::RerankResult;

/// One message to produce to the requests topic.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub key: String,
    pub payload: Vec<u8>,
}

/// What a load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub requests: usize,
    pub results: usize,
    pub dlq: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub throughput_rps: f64,
    pub reasoning_steps_per_list: f64,
    /// Results per model version, in order of first appearance.
    pub model_versions: Vec<(String, usize)>,
    /// Valid requests without a result at the end (0 means nothing lost).
    pub missing: usize,
    /// Results delivered more than once (allowed under at-least-once).
    pub duplicates: usize,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Produces `outgoing`, then waits (up to `timeout`) for a result for every key in
/// `expect_results` and `expect_dlq` dead letters.
pub async fn run(
    kafka: &KafkaConfig,
    brokers: &str,
    outgoing: Vec<Outgoing>,
    expect_results: &[String],
    expect_dlq: usize,
    rate: Option<f64>,
    timeout: Duration,
) -> Result<LoadReport, StreamError> {
    let topics = &kafka.topics;
    let mut cfg = client_config(kafka, brokers);
    // A fresh group per run: reusing one would wait for the previous member's session
    // to expire before the assignment, and "latest" would then skip early results.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    cfg.set(
        "group.id",
        format!("eglr-loadgen-{}-{nonce}", std::process::id()),
    )
    .set("auto.offset.reset", "latest")
    .set("enable.auto.commit", "false");
    let consumer: StreamConsumer = cfg
        .create()
        .map_err(StreamError::kafka("create the results consumer"))?;
    consumer
        .subscribe(&[topics.results.as_str(), topics.dead_letter.as_str()])
        .map_err(StreamError::kafka("subscribe to results"))?;
    // Wait for the assignment so no result is produced before we listen.
    let joined = Instant::now();
    while consumer.assignment().map_or(0, |a| a.count()) == 0
        && joined.elapsed() < Duration::from_secs(20)
    {
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
    let producer: FutureProducer = producer_config(kafka, brokers)
        .create()
        .map_err(StreamError::kafka("create the producer"))?;

    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(outgoing.len());
    let started = Instant::now();
    let n = outgoing.len();
    let mut acks = Vec::with_capacity(n);
    for (i, o) in outgoing.into_iter().enumerate() {
        if let Some(r) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / r);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        sent_at.insert(o.key.clone(), Instant::now());
        loop {
            match producer.send_result(
                FutureRecord::to(&topics.requests)
                    .key(&o.key)
                    .payload(&o.payload),
            ) {
                Ok(f) => {
                    acks.push(f);
                    break;
                }
                Err((e, _)) => {
                    tracing::debug!(error = %e, "producer queue full");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(10));

    let mut latencies = Vec::with_capacity(expect_results.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut versions: Vec<(String, usize)> = Vec::new();
    let (mut dlq, mut steps) = (0usize, 0f64);
    let deadline = Instant::now() + timeout;
    let mut last = Instant::now();
    while (seen.len() < expect_results.len() || dlq < expect_dlq) && Instant::now() < deadline {
        let msg = match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "results consumer");
                continue;
            }
            Err(_) => continue,
        };
        last = Instant::now();
        if msg.topic() == topics.dead_letter {
            dlq += 1;
            continue;
        }
        let Some(result) = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<RerankResult>(p).ok())
        else {
            continue;
        };
        let count = seen.entry(result.request_id.clone()).or_default();
        *count += 1;
        if *count == 1 {
            if let Some(t) = sent_at.get(&result.request_id) {
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            steps += f64::from(result.items.iter().map(|i| i.reasoning_steps).sum::<u32>());
            match versions.iter_mut().find(|v| v.0 == result.model_version) {
                Some(v) => v.1 += 1,
                None => versions.push((result.model_version.clone(), 1)),
            }
        }
    }
    for a in acks {
        let _ = a.await;
    }
    latencies.sort_by(f64::total_cmp);
    let elapsed = last.duration_since(started).as_secs_f64().max(1e-9);
    let unique = seen.len();
    Ok(LoadReport {
        requests: n,
        results: unique,
        dlq,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        throughput_rps: unique as f64 / elapsed,
        reasoning_steps_per_list: steps / unique.max(1) as f64,
        model_versions: versions,
        missing: expect_results
            .iter()
            .filter(|k| !seen.contains_key(*k))
            .count(),
        duplicates: seen.values().map(|&c| c - 1).sum(),
    })
}
