//! `eglr serve`: source (consumer group) -> bounded queue -> inference thread -> sink
//! (idempotent producer), at least once.
//!
//! An offset is stored only when every message up to it has finished: its result (or
//! dead letter) was acknowledged by the broker. Bad input goes to the dead-letter topic
//! with its raw bytes and headers, and its offset is committed like any other. The
//! parts, one job each: [`intake`] (source and backpressure), the inference thread
//! ([`super::inference`]), [`sink`], [`ledger`] (the offsets in flight, stored once
//! finished), and [`group`] (what the parts share, and the rebalance callbacks).

mod group;
mod intake;
mod ledger;
mod sink;

use std::net::SocketAddr;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::inference;
use super::kafka::{consumer_config, producer_config};
use super::prometheus::ServeMetrics;
use super::stage::{self, Stage};
use super::StreamError;
use crate::config::PipelineConfig;
use crate::contract::{Contract, UnknownFieldLog};
use crate::model::LiveModel;
use group::{ServeContext, Shared};
use intake::Intake;
use sink::Sink;

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
    /// Valid requests the model could not rank, answered with the upstream order.
    pub upstream_fallbacks: u64,
    /// Offsets the consumer jumped over within a partition.
    pub skipped_offsets: u64,
    /// Times the intake paused for backpressure.
    pub pauses: u64,
}

/// Runs the stage until `shutdown` turns true, then drains and exits.
pub async fn serve(
    settings: ServeSettings,
    live: Arc<LiveModel>,
    shutdown: watch::Receiver<bool>,
) -> Result<ServeSummary, StreamError> {
    let endpoint = settings.metrics_addr;
    stage::run(ServeStage::start(settings, live)?, endpoint, shutdown).await
}

/// The serve stage, started: a member of the serving group with its producer.
struct ServeStage {
    settings: ServeSettings,
    live: Arc<LiveModel>,
    metrics: Arc<ServeMetrics>,
    shared: Arc<Shared>,
    consumer: StreamConsumer<ServeContext>,
    producer: FutureProducer,
}

impl ServeStage {
    fn start(settings: ServeSettings, live: Arc<LiveModel>) -> Result<Self, StreamError> {
        let p = &settings.pipeline;
        let metrics = Arc::new(ServeMetrics::new(&p.exploration));
        let meta = &live.current().meta;
        metrics.set_model_version(&meta.version, meta.training.created_unix_ms);
        let shared = Arc::new(Shared::new(Arc::clone(&metrics)));
        let consumer = join_group(&settings, &shared)?;
        let producer: FutureProducer = producer_config(&p.kafka, &settings.brokers)
            .create()
            .map_err(StreamError::kafka("create the producer"))?;
        Ok(Self {
            settings,
            live,
            metrics,
            shared,
            consumer,
            producer,
        })
    }
}

impl Stage for ServeStage {
    type Summary = ServeSummary;
    type Metrics = ServeMetrics;
    const NAME: &'static str = "serve";

    fn metrics(&self) -> Arc<ServeMetrics> {
        Arc::clone(&self.metrics)
    }

    fn stall(&self) -> Duration {
        self.settings.model_poll.max(Duration::from_secs(30))
    }

    /// Source -> queue -> inference thread -> sink until shutdown; then what is in
    /// flight is finished and committed (bounded by `shutdown_timeout`).
    async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<ServeSummary, StreamError> {
        let Self {
            settings,
            live,
            metrics,
            shared,
            consumer,
            producer,
        } = self;
        let p = &settings.pipeline;
        let watcher = watch_store(&live, &metrics, settings.model_poll, shutdown.clone());
        let (queue, jobs) = sync_channel(p.batching.queue_capacity);
        // Finished batches waiting for the sink: bounded like the job queue, in batches.
        let batches = p.batching.queue_capacity / p.batching.max_batch.max(1) + 1;
        let (done_tx, done) = tokio::sync::mpsc::channel(batches);
        let inference =
            inference::spawn(jobs, done_tx, &live, &p.batching, &p.exploration, &metrics)?;
        let sink = Sink {
            producer: producer.clone(),
            shared: Arc::clone(&shared),
            results: p.kafka.topics.results.clone(),
            dead_letter: p.kafka.topics.dead_letter.clone(),
            max_dead_letter_payload: max_dead_letter_payload(&p.kafka),
        };
        let sink_task = tokio::spawn(sink.clone().run(done));
        let mut intake = Intake {
            queue,
            capacity: p.batching.queue_capacity,
            shared: Arc::clone(&shared),
            sink,
            paused: false,
            dead_letters: JoinSet::new(),
            unknown_fields: UnknownFieldLog::default(),
        };
        let contract = Contract::new(&p.features, &p.limits);
        // On a failure too, what is in flight is finished and committed before the error
        // is returned: a restart then re-reads as little as possible.
        let intake_outcome = intake.run(&consumer, &contract, &mut shutdown).await;

        tracing::info!("shutting down: finishing in-flight requests");
        let drained = tokio::time::timeout(settings.shutdown_timeout, async {
            intake.close().await;
            let _ = sink_task.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown timed out; unfinished requests will be re-read by the group");
        }
        shared.ledger.commit_what_finished(&producer, &consumer);
        watcher.abort();
        let _ = tokio::task::spawn_blocking(move || {
            inference.join();
            drop(consumer);
        })
        .await;
        intake_outcome?;
        Ok(ServeSummary {
            requests: metrics.requests.get(),
            results: metrics.results.get(),
            dead_letters: metrics.dead_letters(),
            upstream_fallbacks: metrics.upstream_fallbacks.total(),
            skipped_offsets: metrics.skipped_offsets.total(),
            pauses: metrics.pauses.get(),
        })
    }
}

/// Bytes of a dead letter's payload: the producer's `message.max.bytes` (librdkafka's
/// default 1,000,000 unless the pipeline sets it) less 64 KiB for the key and headers:
/// the request's own headers are copied up to `headers::MAX_COPIED_HEADER_BYTES` (32 KiB)
/// and the provenance headers are a few KiB at most.
fn max_dead_letter_payload(kafka: &crate::config::KafkaConfig) -> usize {
    let max_message = kafka
        .properties
        .get("message.max.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1_000_000);
    max_message.saturating_sub(64 * 1024).max(1024)
}

/// The consumer, subscribed to the requests topic as a member of the serving group.
fn join_group(
    settings: &ServeSettings,
    shared: &Arc<Shared>,
) -> Result<StreamConsumer<ServeContext>, StreamError> {
    let kafka = &settings.pipeline.kafka;
    let context = ServeContext {
        shared: Arc::clone(shared),
        revoke_wait: Duration::from_secs(10),
    };
    let consumer: StreamConsumer<ServeContext> =
        consumer_config(kafka, &settings.brokers, &kafka.group_id)
            .create_with_context(context)
            .map_err(StreamError::kafka("create the consumer"))?;
    consumer
        .subscribe(&[kafka.topics.requests.as_str()])
        .map_err(StreamError::kafka("subscribe"))?;
    Ok(consumer)
}

/// Hot swap: checks the model store every `every`; a new valid version serves from the
/// next batch on.
fn watch_store(
    live: &Arc<LiveModel>,
    metrics: &Arc<ServeMetrics>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (live, metrics) = (Arc::clone(live), Arc::clone(metrics));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(every) => {
                    let l = Arc::clone(&live);
                    if let Ok(Some(v)) = tokio::task::spawn_blocking(move || l.refresh()).await {
                        let created = live.current().meta.training.created_unix_ms;
                        metrics.set_model_version(&v, created);
                    }
                }
            }
        }
    })
}
