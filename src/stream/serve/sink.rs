//! The sink: results and dead letters back to Kafka through the idempotent producer.
//! A request's offset finishes only when the broker acknowledged what it became.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::{BorrowedHeaders, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinSet;

use super::super::headers::{dead_letter_headers, result_headers};
use super::super::inference::{Done, Job};
use super::super::StreamError;
use super::group::Shared;
use crate::schema::RerankResult;

/// Deliveries of one record before the stage gives up on it (its request is then
/// re-read only after a restart or rebalance, since its offset never finishes).
const DELIVERY_ATTEMPTS: u32 = 5;

/// Longest `error.message` header: a decoder message can quote the offending value,
/// which may be as large as the payload.
const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// Where a message came from.
pub(super) struct SourceOffset<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// A record to produce, kept so that a failed delivery can be produced again.
struct Outbound {
    topic: String,
    key: String,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

/// Produces the stage's output; cheap to clone (the producer is shared).
#[derive(Clone)]
pub(super) struct Sink {
    pub producer: FutureProducer,
    pub shared: Arc<Shared>,
    pub results: String,
    pub dead_letter: String,
    /// The largest payload a dead letter may carry: the producer's `message.max.bytes`
    /// less room for the key and headers. A longer one is cut, and says so.
    pub max_dead_letter_payload: usize,
}

impl Sink {
    /// Forwards every finished batch from the inference thread until it closes, then
    /// waits for the outstanding deliveries.
    pub async fn run(self, mut done: Receiver<Vec<Done>>) {
        let mut pending = JoinSet::new();
        while let Some(batch) = done.recv().await {
            for Done { job, result } in batch {
                self.result(&mut pending, &job, &result).await;
            }
            while pending.try_join_next().is_some() {}
        }
        while pending.join_next().await.is_some() {}
    }

    /// Produces `result`; the job's offset finishes on acknowledgement.
    async fn result(&self, pending: &mut JoinSet<()>, job: &Job, result: &RerankResult) {
        let payload = match serde_json::to_vec(result) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a result");
                self.shared.give_up(&self.results);
                return;
            }
        };
        let record = Outbound {
            topic: self.results.clone(),
            key: result.request_id.clone(),
            payload,
            headers: Some(result_headers(
                &result.request_id,
                &result.model_version,
                &job.trace,
            )),
        };
        let source = (job.topic.clone(), job.partition, job.offset);
        let (ready, requested_ms) = (Instant::now(), job.request.timestamp_ms);
        self.deliver(pending, record, source, move |shared| {
            let m = &shared.metrics;
            m.results.inc();
            m.produce.observe(ready.elapsed().as_secs_f64());
            // The request's clock is upstream's: a skew that puts it in the future
            // counts as no time rather than a negative one.
            let age_ms = (crate::clock::unix_millis() - requested_ms).max(0);
            m.end_to_end.observe(age_ms as f64 / 1000.0);
        })
        .await;
    }

    /// Produces `raw` to the dead-letter topic with its original headers and headers
    /// that say where it came from and what is wrong (`error` = kind, message); its
    /// offset finishes on acknowledgement.
    pub async fn dead_letter(
        &self,
        pending: &mut JoinSet<()>,
        raw: &[u8],
        original: Option<&BorrowedHeaders>,
        from: SourceOffset<'_>,
        (kind, message): (&'static str, String),
    ) {
        // A payload the producer could never send would leave its offset unfinished
        // forever: it is cut to fit, and the headers say so and give the full size.
        let cut = raw.len().min(self.max_dead_letter_payload);
        let payload = raw[..cut].to_vec();
        let (partition, offset, size) = (
            from.partition.to_string(),
            from.offset.to_string(),
            raw.len().to_string(),
        );
        let mut provenance = vec![
            ("source.topic", from.topic),
            ("source.partition", partition.as_str()),
            ("source.offset", offset.as_str()),
            ("error.kind", kind),
            (
                "error.message",
                truncated(&message, MAX_ERROR_MESSAGE_BYTES),
            ),
        ];
        if cut < raw.len() {
            provenance.push(("payload.truncated_from", size.as_str()));
        }
        let headers = dead_letter_headers(original, &provenance);
        let record = Outbound {
            topic: self.dead_letter.clone(),
            key: format!("{}-{}-{}", from.topic, from.partition, from.offset),
            payload,
            headers: Some(headers),
        };
        let source = (from.topic.to_owned(), from.partition, from.offset);
        self.deliver(pending, record, source, move |shared| {
            shared.metrics.dead_letter(kind)
        })
        .await;
    }

    /// Enqueues `record` and, in `pending`, waits for its acknowledgement, then counts it
    /// with `delivered` and finishes `source`'s offset.
    async fn deliver(
        &self,
        pending: &mut JoinSet<()>,
        record: Outbound,
        source: (String, i32, i64),
        delivered: impl FnOnce(&Shared) + Send + 'static,
    ) {
        match enqueue(&self.producer, &record).await {
            Ok(first) => {
                let (shared, producer) = (Arc::clone(&self.shared), self.producer.clone());
                pending.spawn(async move {
                    if acknowledged(&producer, &record, first).await {
                        delivered(&shared);
                        let (topic, partition, offset) = source;
                        shared.ledger.finish(&topic, partition, offset);
                    } else {
                        shared.give_up(&record.topic);
                    }
                });
            }
            Err(e) => {
                tracing::error!(error = %e, topic = %record.topic, "not sent");
                self.shared.give_up(&record.topic);
            }
        }
    }
}

/// Enqueues a record, waiting while the producer's local queue is full.
async fn enqueue(
    producer: &FutureProducer,
    record: &Outbound,
) -> Result<DeliveryFuture, StreamError> {
    loop {
        let mut r = FutureRecord::to(&record.topic)
            .key(&record.key)
            .payload(&record.payload);
        if let Some(h) = record.headers.clone() {
            r = r.headers(h);
        }
        match producer.send_result(r) {
            Ok(f) => return Ok(f),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                _,
            )) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((e, _)) => {
                return Err(StreamError::External {
                    what: format!("produce to {}", record.topic),
                    message: e.to_string(),
                })
            }
        }
    }
}

/// Waits for the broker to acknowledge `record` (first sent as `delivery`) and produces
/// it again, with back-off, when a delivery fails: the idempotent producer retries
/// within `message.timeout.ms`, this covers errors it gives up on. Without it a failed
/// delivery would hold its partition's offsets until the next restart.
async fn acknowledged(
    producer: &FutureProducer,
    record: &Outbound,
    mut delivery: DeliveryFuture,
) -> bool {
    for attempt in 1..=DELIVERY_ATTEMPTS {
        match delivery.await {
            Ok(Ok(_)) => return true,
            other => {
                let error = super::super::kafka::delivery_failure(&other);
                tracing::warn!(%error, attempt, topic = %record.topic, "delivery failed")
            }
        }
        if attempt == DELIVERY_ATTEMPTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        delivery = match enqueue(producer, record).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot produce again");
                return false;
            }
        };
    }
    tracing::error!(topic = %record.topic, key = %record.key, "giving up on a delivery");
    false
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
