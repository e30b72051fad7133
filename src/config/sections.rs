//! The sections of a pipeline file. Defaults are functions (one per key) so a file only
//! states what differs from them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secrets::KafkaProperties;
use crate::check::{check, Problem};
use crate::list_log::RollPolicy;

/// Kafka topics of the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub requests: String,
    pub results: String,
    pub feedback: String,
    pub dead_letter: String,
    pub control: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            requests: "eglr.requests".into(),
            results: "eglr.results".into(),
            feedback: "eglr.feedback".into(),
            dead_letter: "eglr.dead-letter".into(),
            control: "eglr.control".into(),
        }
    }
}

/// The `kafka.brokers` value that starts the embedded in-process broker (rdkafka's
/// MockCluster) instead of joining a cluster: for `demo` and local runs, an explicit
/// choice so that a production pipeline that lost its broker list fails instead.
pub const EMBEDDED_BROKERS: &str = "embedded";

/// Where the brokers are and how the stages join them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, or [`EMBEDDED_BROKERS`]. Empty (the default) is an error for
    /// every stage that needs Kafka.
    pub brokers: String,
    /// Consumer group of the `serve` stage.
    pub group_id: String,
    pub topics: Topics,
    /// Extra librdkafka properties passed through unchanged (e.g. security settings).
    /// Secret values (passwords, keys) are never shown: `eglr config` prints `***`.
    pub properties: KafkaProperties,
    /// librdkafka properties read from files when the pipeline loads, for secrets
    /// mounted from a Kubernetes Secret: `"sasl.password" = "/run/secrets/kafka/password"`.
    pub property_files: BTreeMap<String, PathBuf>,
    /// Replication factor of topics `--create-topics` creates. Unset: the cluster's
    /// `default.replication.factor` decides (with `acks=all`, a factor of 1 would mean
    /// one broker holds every acknowledged result).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            group_id: "eglr-serve".into(),
            topics: Topics::default(),
            properties: KafkaProperties::default(),
            property_files: BTreeMap::new(),
            replication_factor: None,
        }
    }
}

/// Where a stage's Kafka is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Start the embedded broker in this process.
    Embedded,
    /// A cluster's bootstrap servers.
    Servers(String),
}

impl KafkaConfig {
    /// Where the brokers are. An empty list is the operator's to fix: starting a broker
    /// nobody else can reach would look like a healthy stage that never sees a request.
    pub fn bootstrap(&self) -> Result<Bootstrap, super::ConfigError> {
        match self.brokers.trim() {
            "" => Err(super::ConfigError::Missing {
                key: "kafka.brokers".into(),
                message: format!(
                    "name the cluster's bootstrap servers (--brokers host:9092 or \
                     EGLR_KAFKA__BROKERS), or `{EMBEDDED_BROKERS}` for the in-process broker \
                     of local runs"
                ),
            }),
            EMBEDDED_BROKERS => Ok(Bootstrap::Embedded),
            servers => Ok(Bootstrap::Servers(servers.to_owned())),
        }
    }

    pub(super) fn validate(&self) -> Result<(), Problem> {
        check(
            self.replication_factor.is_none_or(|r| r >= 1),
            "kafka.replication_factor",
            || "must be at least 1 (or unset: the cluster's default)".into(),
        )
    }
}

/// Micro-batching between the consumer and the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// A batch closes when it holds this many requests...
    pub max_batch: usize,
    /// ...or when its oldest request has waited this long, whichever comes first. 0
    /// (the default): a free worker takes what is queued and runs it at once; batches
    /// still grow under load, from what queues while the workers are busy. Measured on
    /// the embedded broker at 1,000 requests/s, 1 ms of waiting raised the time in
    /// `serve` at p50 from 0.3 to 1.5 ms, and throughput as fast as possible was the
    /// same (docs/performance.md).
    pub max_wait_ms: u64,
    /// Bound of the queue between consumer and model (backpressure beyond it).
    pub queue_capacity: usize,
    /// A request older than this when its batch runs (from its own `timestamp_ms`) is
    /// answered at once with the upstream order: upstream has a deadline, and a late
    /// list is worth less than a prompt one. Unset: no deadline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_age_ms: Option<u64>,
    /// Inference workers: each assembles a batch from the one queue in turn and runs
    /// the model on a thread of its own, so batches run side by side on every core.
    /// Unset: one per core the process may use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Every this many-th batch, the serving evaluator also scores the served lists
    /// and the upstream order for the `eglr_quality_*` metrics. It is a second model
    /// pass over two lists per request (30-50 % of a batch's throughput, as selection
    /// costs in docs/performance.md), so it is sampled: at 20, about 2 %. 0: never.
    pub quality_every: u64,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_wait_ms: 0,
            queue_capacity: 4096,
            max_request_age_ms: None,
            workers: None,
            quality_every: 20,
        }
    }
}

impl BatchingConfig {
    /// The inference workers to start: `workers`, or one per available core.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    pub(super) fn validate(&self) -> Result<(), Problem> {
        check(self.max_batch >= 1, "batching.max_batch", || {
            "must be at least 1".into()
        })?;
        check(self.workers != Some(0), "batching.workers", || {
            "must be at least 1 (leave it unset for one per core)".into()
        })?;
        check(
            self.queue_capacity >= self.max_batch,
            "batching.queue_capacity",
            || {
                format!(
                    "{} is smaller than batching.max_batch = {}",
                    self.queue_capacity, self.max_batch
                )
            },
        )
    }
}

/// Where models live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Directory of versioned model bundles.
    pub store: PathBuf,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            store: PathBuf::from("data/models"),
        }
    }
}

/// The Parquet list logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Directory the log files are published into.
    pub dir: PathBuf,
    /// A file is closed and published once it reaches this many bytes...
    pub roll_max_bytes: u64,
    /// ...or once it has been open this long.
    pub roll_max_seconds: u64,
    /// Rows per Parquet row group (and per batch when reading).
    pub row_group_rows: usize,
    /// The logger's join: a partition that delivered nothing for this long is caught
    /// up, and its event-time clock moves with the wall clock (less this time) so that
    /// lists waiting on a quiet stream still close.
    pub idle_ms: u64,
    /// The logger's join: at this many pending requests, intake pauses on every stream
    /// but the one they wait for (`eglr_log_intake_paused`) until they fall below 90 %.
    pub max_pending: usize,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data/logs"),
            roll_max_bytes: 128 * 1024 * 1024,
            roll_max_seconds: 3600,
            row_group_rows: 8192,
            idle_ms: 10_000,
            max_pending: 100_000,
        }
    }
}

impl LogsConfig {
    /// How list-log writers roll files: by size; the stages publish on their own
    /// schedule (the logger's offsets follow its publishes), and simulated or imported
    /// files must not depend on wall-clock time.
    pub fn roll_policy(&self) -> RollPolicy {
        RollPolicy {
            max_bytes: self.roll_max_bytes,
            row_group_rows: self.row_group_rows,
        }
    }

    pub(super) fn validate(&self) -> Result<(), Problem> {
        check(self.roll_max_bytes >= 1024, "logs.roll_max_bytes", || {
            "must be at least 1024".into()
        })?;
        check(self.row_group_rows >= 1, "logs.row_group_rows", || {
            "must be at least 1".into()
        })?;
        check(self.idle_ms >= 1, "logs.idle_ms", || {
            "must be at least 1 (milliseconds)".into()
        })?;
        check(self.max_pending >= 1, "logs.max_pending", || {
            "must be at least 1".into()
        })
    }
}
