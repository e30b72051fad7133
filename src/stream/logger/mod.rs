//! `eglr log`: the feedback logger's consumer group. Reads requests, results and
//! feedback, joins them on their event time ([`crate::join::ListJoiner`]) and writes one
//! Parquet row per served list. Each tick it tells the join which partitions it reads
//! and bounds the join's pending state by pausing intake (`Logger::regulate`).
//!
//! Delivery: offsets are stored only once everything built from their messages is
//! durable — the list rows in a *published* Parquet file (temp + fsync + rename, see
//! [`crate::list_log::LogWriter`]) and the unjoined events in the fsync'd side file — so a crash loses
//! nothing. Messages are re-read after a crash from the last committed offset, so lists
//! published but not yet committed are written again: **duplicates are removed on
//! read** ([`crate::list_log::LogReader`] keeps the first row per request_id). Lists whose
//! window is still open at shutdown are not written; their messages are re-read by the
//! next owner of the partitions.
//!
//! The commit lag is the publish interval (`logs.roll_max_seconds`, or a file reaching
//! `logs.roll_max_bytes`): a file is published at that pace, and its offsets right after.
//!
//! The parts, one job each: [`state`] (what the logger holds between messages: the
//! join, the files, the offsets awaiting a publish), [`side_file`], [`topics`] (which
//! topic is which stream, and their partition counts), [`metrics`] (the endpoint).

mod metrics;
mod side_file;
mod state;
mod topics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use serde::Serialize;
use tokio::sync::watch;

use super::kafka::{consumer_config, ConsumerGauges, GaugeContext};
use super::stage::{self, Stage};
use super::StreamError;
use crate::config::PipelineConfig;
use crate::contract::Contract;
use crate::join::{JoinStats, Source};
use metrics::LogMetrics;
pub use side_file::UNJOINED_DIR;
use state::Logger;
use topics::co_partitioned;

/// How a logger instance runs.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub pipeline: PipelineConfig,
    pub brokers: String,
    /// The logger's own consumer group (never the serving group).
    pub group_id: String,
    /// How long after its result a list waits for feedback.
    pub window: Duration,
    /// Names this instance's files (`lists-INSTANCE-SEQ.parquet`,
    /// `unjoined-INSTANCE.jsonl`): instances of one group need distinct names.
    pub instance: String,
    /// Address of `/metrics`, `/livez` and `/readyz` (`None`: no endpoint).
    pub metrics_addr: Option<SocketAddr>,
}

/// Counts at exit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogSummary {
    pub messages: u64,
    pub malformed: u64,
    /// Offsets the consumer jumped over within a partition (see
    /// [`super::offsets::OffsetTracker::start`]).
    pub skipped_offsets: u64,
    /// Valid events with fields their schema does not list (ignored).
    pub unknown_field_events: u64,
    pub files_published: u64,
    /// Events written to the side file (the join could not place them in a list).
    pub set_aside: u64,
    pub join: JoinStats,
}

/// Runs the logger until `shutdown` turns true, then publishes what is closed and
/// commits it.
pub async fn log(
    settings: LogSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<LogSummary, StreamError> {
    let endpoint = settings.metrics_addr;
    stage::run(LogStage::start(settings).await?, endpoint, shutdown).await
}

/// The logger, started: its files open, its consumer subscribed to the three streams.
struct LogStage {
    settings: LogSettings,
    logger: Logger,
    consumer: StreamConsumer<GaugeContext>,
    metrics: Arc<LogMetrics>,
}

impl LogStage {
    async fn start(settings: LogSettings) -> Result<Self, StreamError> {
        co_partitioned(&settings.pipeline.kafka, &settings.brokers).await?;
        let logger = Logger::open(&settings)?;
        let (consumer, gauges) = join_consumer(&settings)?;
        let metrics = Arc::new(LogMetrics::new(gauges, logger.publish_every));
        Ok(Self {
            settings,
            logger,
            consumer,
            metrics,
        })
    }
}

impl Stage for LogStage {
    type Summary = LogSummary;
    type Metrics = LogMetrics;
    const NAME: &'static str = "log";

    fn metrics(&self) -> Arc<LogMetrics> {
        Arc::clone(&self.metrics)
    }

    fn stall(&self) -> Duration {
        Duration::from_secs(60)
    }

    /// Takes messages in and, every tick, regulates the join, publishes what closed
    /// and stores its offsets; at shutdown publishes what is closed and commits.
    async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<LogSummary, StreamError> {
        let Self {
            settings,
            mut logger,
            consumer,
            metrics,
        } = self;
        let p = &settings.pipeline;
        let topics = &p.kafka.topics;
        let contract = Contract::new(&p.features, &p.limits);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                msg = consumer.recv() => match msg {
                    Ok(m) => {
                        let source = Source { topic: m.topic().to_owned(), partition: m.partition(), offset: m.offset() };
                        logger.take(&contract, topics, source, m.payload().unwrap_or_default())?;
                    }
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                },
                _ = tick.tick() => {
                    logger.regulate(&consumer, topics);
                    logger.close(crate::clock::unix_millis(), false)?;
                    logger.tracker.store_commits(&consumer);
                    metrics.update(&logger);
                }
            }
        }
        logger.close(crate::clock::unix_millis(), true)?;
        logger.tracker.store_commits(&consumer);
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit");
        }
        logger.summary.join = logger.joiner.stats().clone();
        tracing::info!(
            pending = logger.joiner.pending(),
            "logger stopped; lists still in their window will be re-read"
        );
        Ok(logger.summary)
    }
}

/// The logger's consumer of the three streams, and its statistics' gauges. The range
/// assignor gives one member the same partition numbers of every topic (the join
/// needs a request's three streams in one instance); a cooperative or round-robin
/// assignor would not, so a pipeline property cannot override it.
fn join_consumer(
    settings: &LogSettings,
) -> Result<(StreamConsumer<GaugeContext>, Arc<ConsumerGauges>), StreamError> {
    let p = &settings.pipeline;
    let topics = &p.kafka.topics;
    let context = GaugeContext::default();
    let gauges = Arc::clone(&context.gauges);
    let mut config = consumer_config(&p.kafka, &settings.brokers, &settings.group_id);
    config.set("partition.assignment.strategy", "range");
    let consumer: StreamConsumer<GaugeContext> = config
        .create_with_context(context)
        .map_err(StreamError::kafka("create the logger's consumer"))?;
    consumer
        .subscribe(&[
            topics.requests.as_str(),
            topics.results.as_str(),
            topics.feedback.as_str(),
        ])
        .map_err(StreamError::kafka("subscribe"))?;
    Ok((consumer, gauges))
}
