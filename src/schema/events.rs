//! The Kafka events (the wire contract). Their JSON Schemas live in `schemas/*.json`;
//! a test keeps the two in step. The types take no stand on unknown fields: the decoder
//! ignores and reports them, or refuses them ([`super::UnknownFields`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Token;

/// The version of the event schemas this build writes (`schema_version`). Events
/// without the field are read as version 1; a newer version is read by the same rules
/// (its new fields are unknown fields).
pub const SCHEMA_VERSION: u32 = 1;

/// Sparse field name -> categorical value.
pub type SparseFeatures = BTreeMap<String, Token>;
/// Dense field name -> value.
pub type DenseFeatures = BTreeMap<String, f64>;

/// The user a list is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserFeatures {
    pub id: Token,
    #[serde(default)]
    pub sparse: SparseFeatures,
    #[serde(default)]
    pub dense: DenseFeatures,
}

/// One candidate of the pool, as upstream hands it over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub item_id: Token,
    #[serde(default)]
    pub sparse: SparseFeatures,
    #[serde(default)]
    pub dense: DenseFeatures,
    /// Upstream ranker's score; the candidates' order in the request is the initial order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_score: Option<f64>,
}

/// Topic `requests`: re-rank this pool for this user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankRequest {
    pub request_id: String,
    pub user: UserFeatures,
    pub candidates: Vec<Candidate>,
    /// Length of the list to return (`L <= n`).
    pub list_len: usize,
    /// Milliseconds since the Unix epoch, when upstream sent the request.
    pub timestamp_ms: i64,
    /// The schema version the producer wrote ([`SCHEMA_VERSION`]); optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
}

/// One position of a re-ranked list and how the generator arrived at it (spec §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedItem {
    pub item_id: Token,
    /// Probability the generator gave the chosen item when it chose it.
    pub score: f64,
    /// Reasoning tokens inserted before this item was chosen.
    pub reasoning_steps: u32,
    /// Selection entropy before the first reasoning token (spec eq. 13-14).
    pub entropy_before: f64,
    /// Selection entropy when the item was chosen (after reasoning).
    pub entropy_after: f64,
}

/// Topic `results`: the re-ranked list for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankResult {
    pub request_id: String,
    pub model_version: String,
    /// The list, top position first.
    pub items: Vec<RankedItem>,
    /// Time from taking the request off the queue to the result being ready.
    pub latency_ms: f64,
    pub timestamp_ms: i64,
    /// Which list was served: the model's, or the upstream order kept by
    /// generator-evaluator selection (`generator.selection`). Absent in results of
    /// producers before this field: `model`.
    #[serde(default)]
    pub source: ServedSource,
    /// How an exploration list was drawn (`source: exploration` only): what an
    /// off-policy estimator needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exploration: Option<ExplorationDraw>,
    /// The schema version the producer wrote ([`SCHEMA_VERSION`]); optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
}

/// A randomised logging policy that serves exploration traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoggingPolicy {
    /// A uniformly random list of the pool: every ordered list of `list_len` distinct
    /// candidates alike. Supports any target policy's list.
    #[default]
    Uniform,
    /// The model's own list re-ordered by a Plackett-Luce draw over its ranks (the item
    /// at model rank `r` has weight `exp(-r / temperature)`): cheaper, as the items stay
    /// the model's, but it supports only re-orderings of them.
    PlackettLuce,
}

impl LoggingPolicy {
    pub fn name(self) -> &'static str {
        match self {
            LoggingPolicy::Uniform => "uniform",
            LoggingPolicy::PlackettLuce => "plackett_luce",
        }
    }
}

/// How an exploration list was drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplorationDraw {
    pub policy: LoggingPolicy,
    /// The Plackett-Luce temperature; absent for `uniform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Per position, the probability the policy gave the item shown there given the
    /// items above it; their product is the probability of the whole list.
    pub propensities: Vec<f64>,
}

/// Where a served list came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServedSource {
    /// The re-ranker's list.
    #[default]
    Model,
    /// The upstream order (the first `list_len` candidates as given): the evaluator did
    /// not prefer the model's list by the selection margin.
    Upstream,
    /// A list drawn by a randomised logging policy (`[exploration]`), with its
    /// propensities in `exploration`.
    Exploration,
}

/// Topic `feedback`: what the user did with one shown item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub request_id: String,
    pub item_id: Token,
    /// 0-based position in the served list.
    pub position: u32,
    pub clicked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwell_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utility: Option<f64>,
    pub timestamp_ms: i64,
    /// The schema version the producer wrote ([`SCHEMA_VERSION`]); optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
}
