//! The sections of a pipeline file. Defaults are functions (one per key) so a file only
//! states what differs from them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A failed cross-field check: (key, what is wrong).
pub(super) type Problem = (&'static str, String);

fn check(ok: bool, key: &'static str, message: impl FnOnce() -> String) -> Result<(), Problem> {
    if ok {
        Ok(())
    } else {
        Err((key, message()))
    }
}

/// Sizes every request must respect (spec §1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Default length `L` of the re-ranked list.
    #[serde(default = "Limits::default_list_len")]
    pub list_len: usize,
    /// Largest `list_len` a request may ask for.
    #[serde(default = "Limits::default_max_list_len")]
    pub max_list_len: usize,
    /// Largest candidate pool a request may carry; bigger pools go to the dead-letter topic.
    #[serde(default = "Limits::default_max_candidates")]
    pub max_candidates: usize,
}

impl Limits {
    fn default_list_len() -> usize {
        10
    }
    fn default_max_list_len() -> usize {
        50
    }
    fn default_max_candidates() -> usize {
        200
    }

    pub(super) fn validate(&self) -> Result<(), Problem> {
        check(self.list_len >= 1, "limits.list_len", || {
            "must be at least 1".into()
        })?;
        check(
            self.list_len <= self.max_list_len,
            "limits.list_len",
            || {
                format!(
                    "{} exceeds limits.max_list_len = {}",
                    self.list_len, self.max_list_len
                )
            },
        )?;
        check(
            self.max_list_len <= self.max_candidates,
            "limits.max_list_len",
            || {
                format!(
                    "{} exceeds limits.max_candidates = {}",
                    self.max_list_len, self.max_candidates
                )
            },
        )
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            list_len: Self::default_list_len(),
            max_list_len: Self::default_max_list_len(),
            max_candidates: Self::default_max_candidates(),
        }
    }
}

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

/// Where the brokers are and how the stages join them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers; empty means the embedded in-process broker.
    pub brokers: String,
    /// Consumer group of the `serve` stage.
    pub group_id: String,
    pub topics: Topics,
    /// Extra librdkafka properties passed through unchanged (e.g. security settings).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            group_id: "eglr-serve".into(),
            topics: Topics::default(),
            properties: BTreeMap::new(),
        }
    }
}

/// Micro-batching between the consumer and the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// A batch closes when it holds this many requests...
    pub max_batch: usize,
    /// ...or when its oldest request has waited this long, whichever comes first.
    pub max_wait_ms: u64,
    /// Bound of the queue between consumer and model (backpressure beyond it).
    pub queue_capacity: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_wait_ms: 5,
            queue_capacity: 4096,
        }
    }
}

impl BatchingConfig {
    pub(super) fn validate(&self) -> Result<(), Problem> {
        check(self.max_batch >= 1, "batching.max_batch", || {
            "must be at least 1".into()
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
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data/logs"),
            roll_max_bytes: 128 * 1024 * 1024,
            roll_max_seconds: 3600,
            row_group_rows: 8192,
        }
    }
}

impl LogsConfig {
    pub(super) fn validate(&self) -> Result<(), Problem> {
        check(self.roll_max_bytes >= 1024, "logs.roll_max_bytes", || {
            "must be at least 1024".into()
        })?;
        check(self.row_group_rows >= 1, "logs.row_group_rows", || {
            "must be at least 1".into()
        })
    }
}

/// The ground-truth simulator's world (see `data/README.md` for the click model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    pub users: usize,
    pub items: usize,
    /// Item categories (the redundancy penalty acts on repeated categories).
    pub categories: usize,
    /// Item kinds (the complementarity effect acts on pairs of kinds).
    pub kinds: usize,
    /// User segments; users of a segment share a taste for categories.
    pub segments: usize,
    /// Dimension of the user/item latent vectors.
    pub latent_dim: usize,
    /// Candidates per request `n` (the largest pool when `pool_size_min` is set).
    /// `n = L` is the offline case that only re-orders the logged list.
    pub pool_size: usize,
    /// Smallest pool: each request's pool size is drawn uniformly from
    /// `pool_size_min..=pool_size` (spec §1: production pools are larger than the list).
    /// Unset: every pool has `pool_size` candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size_min: Option<usize>,
    /// Items the upstream ranker scores before it keeps the best `pool_size`.
    pub retrieval_size: usize,
    /// Share of logged lists shown in a random order (exploration traffic).
    pub exploration_share: f64,
    /// Standard deviation of the upstream ranker's noise on the true logit.
    pub upstream_noise: f64,
    /// `eta` of the examination probability `(t + 1)^-eta`.
    pub position_bias: f64,
    /// Logit penalty per earlier item of the same category in the list.
    pub redundancy_penalty: f64,
    /// Logit bonus when an item follows an item of a complementary kind.
    pub complementarity: f64,
    /// Global intercept of the click logit.
    pub base_logit: f64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            users: 2000,
            items: 5000,
            categories: 20,
            kinds: 4,
            segments: 8,
            latent_dim: 8,
            pool_size: 10,
            pool_size_min: None,
            retrieval_size: 100,
            exploration_share: 0.2,
            upstream_noise: 1.0,
            position_bias: 0.7,
            redundancy_penalty: 0.8,
            complementarity: 1.0,
            base_logit: -1.5,
        }
    }
}

impl SimulatorConfig {
    pub(super) fn validate(&self, limits: &Limits) -> Result<(), Problem> {
        for (key, value) in [
            ("simulator.users", self.users),
            ("simulator.items", self.items),
            ("simulator.categories", self.categories),
            ("simulator.kinds", self.kinds),
            ("simulator.segments", self.segments),
            ("simulator.latent_dim", self.latent_dim),
        ] {
            check(value >= 1, key, || "must be at least 1".into())?;
        }
        check(
            self.pool_size >= limits.list_len && self.pool_size <= limits.max_candidates,
            "simulator.pool_size",
            || {
                format!(
                    "{} must lie between limits.list_len = {} and limits.max_candidates = {}",
                    self.pool_size, limits.list_len, limits.max_candidates
                )
            },
        )?;
        if let Some(min) = self.pool_size_min {
            check(
                min >= limits.list_len && min <= self.pool_size,
                "simulator.pool_size_min",
                || {
                    format!(
                        "{min} must lie between limits.list_len = {} and simulator.pool_size = {}",
                        limits.list_len, self.pool_size
                    )
                },
            )?;
        }
        check(
            self.retrieval_size >= self.pool_size && self.retrieval_size <= self.items,
            "simulator.retrieval_size",
            || {
                format!(
                    "{} must lie between simulator.pool_size = {} and simulator.items = {}",
                    self.retrieval_size, self.pool_size, self.items
                )
            },
        )?;
        check(
            (0.0..=1.0).contains(&self.exploration_share),
            "simulator.exploration_share",
            || format!("{} is not a share in [0, 1]", self.exploration_share),
        )?;
        for (key, value) in [
            ("simulator.upstream_noise", self.upstream_noise),
            ("simulator.position_bias", self.position_bias),
            ("simulator.redundancy_penalty", self.redundancy_penalty),
            ("simulator.complementarity", self.complementarity),
        ] {
            check(value.is_finite() && value >= 0.0, key, || {
                format!("{value} must be finite and >= 0")
            })?;
        }
        check(self.base_logit.is_finite(), "simulator.base_logit", || {
            "must be finite".into()
        })
    }
}
