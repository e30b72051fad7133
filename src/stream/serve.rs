//! `eglr serve`: source (consumer group) -> bounded queue -> model thread -> sink
//! (idempotent producer), at least once.
//!
//! An offset is stored only when every message up to it has finished: its result (or
//! dead letter) was acknowledged by the broker. Bad input goes to the dead-letter topic
//! with its raw bytes and headers, and its offset is committed like any other. When the
//! queue is full the assignment is paused (the consumer keeps polling) and resumed once
//! the queue has drained to half.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Device;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::inference::{run_inference, Done, Job, Outcome};
use super::kafka::{consumer_config, producer_config};
use super::offsets::OffsetTracker;
use super::prometheus::ServeMetrics;
use super::{http, StreamError};
use crate::config::PipelineConfig;
use crate::contract::Contract;
use crate::model::LiveModel;

/// How to run the stage.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub pipeline: PipelineConfig,
    pub brokers: String,
    pub metrics_addr: Option<SocketAddr>,
    /// How often the model store is checked for a new version.
    pub model_poll: Duration,
    /// Bound on graceful shutdown.
    pub shutdown_timeout: Duration,
}

/// Counts at exit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServeSummary {
    pub requests: u64,
    pub results: u64,
    pub dead_letters: u64,
}

struct Shared {
    tracker: Mutex<OffsetTracker>,
    metrics: Arc<ServeMetrics>,
}

impl Shared {
    fn finish(&self, topic: &str, partition: i32, offset: i64) {
        if let Ok(mut t) = self.tracker.lock() {
            t.finish(topic, partition, offset);
        }
        self.metrics.progress();
    }

    /// Stores every offset that became committable.
    fn store<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C) {
        let commits = self
            .tracker
            .lock()
            .map(|mut t| t.take_commits())
            .unwrap_or_default();
        for (topic, partition, next) in commits {
            if let Err(e) = consumer.store_offset(&topic, partition, next - 1) {
                // A partition revoked meanwhile: its new owner re-reads from the last commit.
                tracing::debug!(%topic, partition, error = %e, "offset not stored");
            }
        }
    }
}

/// Consumer callbacks: lag from statistics; on revoke, wait for the partitions'
/// in-flight work (bounded) and commit it before the partitions move.
struct ServeContext {
    shared: Arc<Shared>,
    revoke_wait: Duration,
}

impl ClientContext for ServeContext {
    fn stats(&self, stats: Statistics) {
        let lag: i64 = stats
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0)
            .map(|p| p.consumer_lag.max(0))
            .sum();
        self.shared
            .metrics
            .consumer_lag
            .store(lag, Ordering::Relaxed);
    }
}

impl ConsumerContext for ServeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let deadline = Instant::now() + self.revoke_wait;
        loop {
            let left: usize = self
                .shared
                .tracker
                .lock()
                .map(|t| parts.iter().map(|(topic, p)| t.in_flight(topic, *p)).sum())
                .unwrap_or(0);
            if left == 0 || Instant::now() >= deadline {
                if left > 0 {
                    tracing::warn!(
                        left,
                        "revoke: abandoning in-flight requests (they will be re-delivered)"
                    );
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.shared.store(consumer);
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "commit on revoke");
        }
        if let Ok(mut t) = self.shared.tracker.lock() {
            for (topic, p) in &parts {
                t.forget(topic, *p);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        let n = consumer.assignment().map_or(0, |a| a.count());
        self.shared
            .metrics
            .assigned_partitions
            .store(n, Ordering::Relaxed);
        tracing::info!(partitions = n, "assignment changed");
    }
}

/// A record to produce, kept so that a failed delivery can be produced again.
struct Outbound {
    topic: String,
    key: String,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

/// Deliveries of one record before the stage gives up on it (its request is then
/// re-read only after a restart or rebalance, since its offset never finishes).
const DELIVERY_ATTEMPTS: u32 = 5;

/// Enqueues a record, waiting while the producer's local queue is full.
async fn enqueue(
    producer: &FutureProducer,
    record: &Outbound,
) -> Result<rdkafka::producer::DeliveryFuture, StreamError> {
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
    mut delivery: rdkafka::producer::DeliveryFuture,
) -> bool {
    for attempt in 1..=DELIVERY_ATTEMPTS {
        match delivery.await {
            Ok(Ok(_)) => return true,
            other => {
                tracing::warn!(?other, attempt, topic = %record.topic, "delivery failed")
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
    tracing::error!(topic = %record.topic, key = %record.key, "giving up on a delivery; its request will be re-read after a restart");
    false
}

fn dead_letter_headers(
    topic: &str,
    partition: i32,
    offset: i64,
    kind: &str,
    message: &str,
) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: "source.topic",
            value: Some(topic),
        })
        .insert(Header {
            key: "source.partition",
            value: Some(&partition.to_string()),
        })
        .insert(Header {
            key: "source.offset",
            value: Some(&offset.to_string()),
        })
        .insert(Header {
            key: "error.kind",
            value: Some(kind),
        })
        .insert(Header {
            key: "error.message",
            value: Some(message),
        })
}

/// Produces to the dead-letter topic; the offset finishes when the broker acknowledges.
#[allow(clippy::too_many_arguments)]
async fn send_dead_letter(
    producer: &FutureProducer,
    shared: &Arc<Shared>,
    pending: &mut JoinSet<()>,
    dlq: &str,
    raw: &[u8],
    source: (&str, i32, i64),
    kind: &'static str,
    message: &str,
) {
    let (topic, partition, offset) = source;
    let record = Outbound {
        topic: dlq.to_owned(),
        key: format!("{topic}-{partition}-{offset}"),
        payload: raw.to_vec(),
        headers: Some(dead_letter_headers(topic, partition, offset, kind, message)),
    };
    match enqueue(producer, &record).await {
        Ok(first) => {
            let (shared, producer, topic) =
                (Arc::clone(shared), producer.clone(), topic.to_owned());
            pending.spawn(async move {
                if acknowledged(&producer, &record, first).await {
                    shared.metrics.dead_letter(kind);
                    shared.finish(&topic, partition, offset);
                }
            });
        }
        Err(e) => {
            tracing::error!(error = %e, "dead letter not sent; the request will be re-read after a restart")
        }
    }
}

/// Runs the stage until `shutdown` turns true, then drains and exits.
pub async fn serve(
    settings: ServeSettings,
    live: Arc<LiveModel>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<ServeSummary, StreamError> {
    let p = &settings.pipeline;
    let topics = &p.kafka.topics;
    let metrics = Arc::new(ServeMetrics::default());
    metrics.set_model_version(&live.current().meta.version);
    let shared = Arc::new(Shared {
        tracker: Mutex::new(OffsetTracker::new()),
        metrics: Arc::clone(&metrics),
    });
    let context = ServeContext {
        shared: Arc::clone(&shared),
        revoke_wait: Duration::from_secs(10),
    };
    let consumer: Arc<StreamConsumer<ServeContext>> = Arc::new(
        consumer_config(&p.kafka, &settings.brokers, &p.kafka.group_id)
            .create_with_context(context)
            .map_err(StreamError::kafka("create the consumer"))?,
    );
    consumer
        .subscribe(&[topics.requests.as_str()])
        .map_err(StreamError::kafka("subscribe"))?;
    let producer: FutureProducer = producer_config(&p.kafka, &settings.brokers)
        .create()
        .map_err(StreamError::kafka("create the producer"))?;

    if let Some(addr) = settings.metrics_addr {
        http::spawn(
            addr,
            Arc::clone(&metrics),
            settings.model_poll.max(Duration::from_secs(30)),
        )
        .await?;
    }
    // Hot swap between batches.
    let watcher = {
        let (live, metrics, mut stop) = (Arc::clone(&live), Arc::clone(&metrics), shutdown.clone());
        let every = settings.model_poll;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(every) => {
                        let l = Arc::clone(&live);
                        if let Ok(Some(v)) = tokio::task::spawn_blocking(move || l.refresh()).await {
                            metrics.set_model_version(&v);
                        }
                    }
                }
            }
        })
    };

    let capacity = p.batching.queue_capacity;
    let (job_tx, job_rx) = sync_channel::<Job>(capacity);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Done>>();
    let inference = {
        let (live, metrics, batching) =
            (Arc::clone(&live), Arc::clone(&metrics), p.batching.clone());
        std::thread::Builder::new()
            .name("eglr-inference".into())
            .spawn(move || {
                // The model runs on a worker of its own compute pool, so candle's parallel
                // kernels run inline instead of handing every small op to another thread.
                let threads = candle_core::utils::get_num_threads();
                match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                    Ok(pool) => pool.install(|| {
                        run_inference(job_rx, done_tx, live, batching, metrics, Device::Cpu)
                    }),
                    Err(e) => tracing::error!(error = %e, "cannot start the compute pool"),
                }
            })
            .map_err(|e| StreamError::External {
                what: "start the inference thread".into(),
                message: e.to_string(),
            })?
    };

    // Sink: results and model failures back to Kafka; offsets finish on acknowledgement.
    let sink = {
        let (producer, shared, results, dlq) = (
            producer.clone(),
            Arc::clone(&shared),
            topics.results.clone(),
            topics.dead_letter.clone(),
        );
        tokio::spawn(async move {
            let mut pending = JoinSet::new();
            while let Some(batch) = done_rx.recv().await {
                for Done { job, outcome } in batch {
                    match outcome {
                        Outcome::Ranked(result) => {
                            let payload = match serde_json::to_vec(&result) {
                                Ok(p) => p,
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot encode a result");
                                    continue;
                                }
                            };
                            let record = Outbound {
                                topic: results.clone(),
                                key: result.request_id.clone(),
                                payload,
                                headers: None,
                            };
                            match enqueue(&producer, &record).await {
                                Ok(first) => {
                                    let (shared, producer) =
                                        (Arc::clone(&shared), producer.clone());
                                    pending.spawn(async move {
                                        if acknowledged(&producer, &record, first).await {
                                            shared.metrics.results.fetch_add(1, Ordering::Relaxed);
                                            shared.finish(&job.topic, job.partition, job.offset);
                                        }
                                    });
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "result not sent; the request will be re-read after a restart")
                                }
                            }
                        }
                        Outcome::Failed { kind, message } => {
                            send_dead_letter(
                                &producer,
                                &shared,
                                &mut pending,
                                &dlq,
                                &job.raw,
                                (&job.topic, job.partition, job.offset),
                                kind,
                                &message,
                            )
                            .await;
                        }
                    }
                }
                while pending.try_join_next().is_some() {}
            }
            while pending.join_next().await.is_some() {}
        })
    };

    // Source.
    let contract_features = p.features.clone();
    let contract_limits = p.limits.clone();
    let contract = Contract::new(&contract_features, &contract_limits);
    let mut overflow: VecDeque<Job> = VecDeque::new();
    let mut paused = false;
    let mut dlq_pending = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            msg = consumer.recv() => {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error");
                        continue;
                    }
                };
                metrics.requests.fetch_add(1, Ordering::Relaxed);
                metrics.progress();
                let (topic, partition, offset) = (msg.topic().to_owned(), msg.partition(), msg.offset());
                if let Ok(mut t) = shared.tracker.lock() {
                    t.start(&topic, partition, offset);
                }
                let raw = msg.payload().unwrap_or_default().to_vec();
                match contract.parse_request(&raw) {
                    Ok(request) => {
                        let job = Job { request, raw, topic, partition, offset, received: Instant::now() };
                        if overflow.is_empty() {
                            match job_tx.try_send(job) {
                                Ok(()) => {}
                                Err(TrySendError::Full(job)) => overflow.push_back(job),
                                Err(TrySendError::Disconnected(_)) => return Err(StreamError::Internal("the inference thread stopped")),
                            }
                        } else {
                            overflow.push_back(job);
                        }
                        if !overflow.is_empty() && !paused {
                            paused = set_paused(&consumer, true, &metrics);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%topic, partition, offset, error = %e, "dead letter");
                        send_dead_letter(&producer, &shared, &mut dlq_pending, &topics.dead_letter, &raw, (&topic, partition, offset), e.kind(), &e.to_string()).await;
                    }
                }
            }
            _ = tick.tick() => {
                drain(&mut overflow, &job_tx)?;
                if paused && overflow.is_empty() && queue_below_half(&shared, capacity) {
                    paused = set_paused(&consumer, false, &metrics);
                }
                shared.store(consumer.as_ref());
                while dlq_pending.try_join_next().is_some() {}
            }
        }
    }

    // Graceful shutdown: stop intake, finish in-flight work, flush, commit.
    tracing::info!("shutting down: finishing in-flight requests");
    let drained = tokio::time::timeout(settings.shutdown_timeout, async {
        let overflow_jobs: Vec<Job> = overflow.drain(..).collect();
        let tx = job_tx;
        let _ = tokio::task::spawn_blocking(move || {
            for job in overflow_jobs {
                if tx.send(job).is_err() {
                    break;
                }
            }
            drop(tx);
        })
        .await;
        let _ = sink.await;
        while dlq_pending.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("shutdown timed out; unfinished requests will be re-read by the group");
    }
    let _ = rdkafka::producer::Producer::flush(&producer, Duration::from_secs(5));
    shared.store(consumer.as_ref());
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final commit");
    }
    watcher.abort();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = inference.join();
        drop(consumer);
    })
    .await;
    Ok(ServeSummary {
        requests: metrics.requests.load(Ordering::Relaxed),
        results: metrics.results.load(Ordering::Relaxed),
        dead_letters: metrics.dead_letters(),
    })
}

fn queue_below_half(shared: &Shared, capacity: usize) -> bool {
    // In-flight jobs bound the queue's length from above.
    shared
        .tracker
        .lock()
        .map_or(true, |t| t.total_in_flight() <= capacity / 2)
}

fn drain(overflow: &mut VecDeque<Job>, tx: &SyncSender<Job>) -> Result<(), StreamError> {
    while let Some(job) = overflow.pop_front() {
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                overflow.push_front(job);
                break;
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(StreamError::Internal("the inference thread stopped"))
            }
        }
    }
    Ok(())
}

/// Pauses or resumes the whole assignment; returns the new state.
fn set_paused(
    consumer: &StreamConsumer<ServeContext>,
    pause: bool,
    metrics: &ServeMetrics,
) -> bool {
    let assignment = consumer
        .assignment()
        .unwrap_or_else(|_| TopicPartitionList::new());
    let r = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, pause, "pause/resume failed");
        return !pause;
    }
    metrics.paused.store(usize::from(pause), Ordering::Relaxed);
    tracing::debug!(pause, "backpressure");
    pause
}
