//! The Parquet log schema: one row per served list. Documented column by column in
//! `schemas/log.md`; a test keeps that file and [`log_schema`] in step.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};

use crate::schema::{Candidate, UserFeatures};

/// Bumped on any incompatible change of the columns below; stored in the file metadata.
pub const LOG_SCHEMA_VERSION: &str = "2";
/// Metadata key holding [`LOG_SCHEMA_VERSION`].
pub const LOG_SCHEMA_VERSION_KEY: &str = "eglr.log_schema_version";

/// One served list with its feedback: what the evaluator and the trainer learn from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedList {
    pub request_id: String,
    pub timestamp_ms: i64,
    pub user: UserFeatures,
    /// The candidate pool in the initial (upstream) order.
    pub candidates: Vec<Candidate>,
    /// Item ids in the order they were shown, top first.
    pub served_items: Vec<String>,
    /// Whether the item at each served position was clicked.
    pub clicks: Vec<bool>,
    /// Observed list utility `r` (spec §3): the number of clicks unless the source has a
    /// better measure.
    pub utility: f64,
    /// Which model served the list (`upstream` for the initial order).
    pub model_version: String,
    /// The list was shown in a random order (exploration traffic, KuaiRand's `is_rand`).
    pub exploration: bool,
    /// The randomised policy that drew the list, where known: `uniform`, or
    /// `plackett_luce@T` at temperature `T` (schema version 2; `None` in older files).
    pub logging_policy: Option<String>,
    /// With a known policy, per served position, the probability it gave the item shown
    /// there given the items above (their product: the list's probability); else empty.
    pub propensities: Vec<f64>,
}

impl LoggedList {
    /// Index into `candidates` of each served item, or the first served id that is not
    /// in the pool.
    pub fn served_indices(&self) -> Result<Vec<usize>, String> {
        let index: HashMap<&str, usize> = self
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| (c.item_id.as_str(), i))
            .collect();
        self.served_items
            .iter()
            .map(|id| index.get(id.as_str()).copied().ok_or_else(|| id.clone()))
            .collect()
    }
}

fn map_type(value: DataType) -> DataType {
    DataType::Map(map_entries_field(value), false)
}

/// The entries field of a map column: non-null string keys, non-null values.
pub(super) fn map_entries_field(value: DataType) -> FieldRef {
    Arc::new(Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", value, false),
        ])),
        false,
    ))
}

/// Fields of one candidate struct.
pub(super) fn candidate_fields() -> Fields {
    Fields::from(vec![
        Field::new("item_id", DataType::Utf8, false),
        Field::new("sparse", map_type(DataType::Utf8), false),
        Field::new("dense", map_type(DataType::Float64), false),
        Field::new("upstream_score", DataType::Float64, true),
    ])
}

pub(super) fn list_item(data_type: DataType) -> FieldRef {
    Arc::new(Field::new("item", data_type, false))
}

/// The Arrow schema every log file has.
pub fn log_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let fields = vec![
                Field::new("request_id", DataType::Utf8, false),
                Field::new("timestamp_ms", DataType::Int64, false),
                Field::new("user_id", DataType::Utf8, false),
                Field::new("user_sparse", map_type(DataType::Utf8), false),
                Field::new("user_dense", map_type(DataType::Float64), false),
                Field::new(
                    "candidates",
                    DataType::List(list_item(DataType::Struct(candidate_fields()))),
                    false,
                ),
                Field::new(
                    "served_items",
                    DataType::List(list_item(DataType::Utf8)),
                    false,
                ),
                Field::new(
                    "clicks",
                    DataType::List(list_item(DataType::Boolean)),
                    false,
                ),
                Field::new("utility", DataType::Float64, false),
                Field::new("model_version", DataType::Utf8, false),
                Field::new("exploration", DataType::Boolean, false),
                Field::new("logging_policy", DataType::Utf8, true),
                Field::new(
                    "propensities",
                    DataType::List(list_item(DataType::Float64)),
                    false,
                ),
            ];
            let metadata = HashMap::from([(
                LOG_SCHEMA_VERSION_KEY.to_owned(),
                LOG_SCHEMA_VERSION.to_owned(),
            )]);
            Arc::new(Schema::new_with_metadata(fields, metadata))
        })
        .clone()
}
