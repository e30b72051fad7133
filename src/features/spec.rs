//! The feature spec (spec §2): which sparse and dense fields users and items carry.
//!
//! Sparse values are hashed per field into a fixed number of buckets (the hashing trick),
//! so id spaces of any size need no vocabulary. Dense values go through a fixed transform
//! and, at training time, a fitted z-score normaliser stored with the model.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Fixed transform applied to a dense value before the fitted z-score (spec §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenseTransform {
    /// Use the value as it is.
    Identity,
    /// `sign(x) * ln(1 + |x|)`: for counts and durations with heavy tails.
    Log1p,
}

/// Fields of one entity (user or item). Maps are ordered by name, so the layout of the
/// concatenated embedding is stable whatever order the TOML file lists them in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityFeatures {
    /// Sparse field name -> number of hash buckets.
    #[serde(default)]
    pub sparse: BTreeMap<String, u32>,
    /// Dense field name -> transform applied before normalisation.
    #[serde(default)]
    pub dense: BTreeMap<String, DenseTransform>,
    /// Sparse fields with an exact vocabulary instead of hashing: their values are the
    /// integers `0..buckets` (category, kind, segment, ...), each with a row of its own, so
    /// no two values collide; any other value shares one out-of-vocabulary row. Hashing
    /// stays for large id spaces, where a vocabulary would not fit.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub exact: BTreeSet<String>,
}

impl EntityFeatures {
    pub fn has_sparse(&self, name: &str) -> bool {
        self.sparse.contains_key(name)
    }

    pub fn has_dense(&self, name: &str) -> bool {
        self.dense.contains_key(name)
    }

    /// Embedding rows of sparse field `name` with `buckets`: row 0 for a missing value,
    /// then one per bucket, plus the out-of-vocabulary row of an exact field.
    pub fn rows(&self, name: &str, buckets: u32) -> u32 {
        buckets + 1 + u32::from(self.exact.contains(name))
    }

    /// Row (within its field's block) of `value` of sparse field `name`: the integer
    /// itself plus one for an exact field (`buckets + 1` when it is not one of
    /// `0..buckets`), else its hash bucket.
    pub fn sparse_row(&self, name: &str, buckets: u32, value: &str) -> u32 {
        if self.exact.contains(name) {
            match value.parse::<u32>() {
                Ok(v) if v < buckets => v + 1,
                _ => buckets + 1,
            }
        } else {
            super::hash_bucket(name, value, buckets)
        }
    }

    /// Every declared field name, sparse first, for error messages.
    pub fn field_names(&self) -> Vec<&str> {
        self.sparse
            .keys()
            .chain(self.dense.keys())
            .map(String::as_str)
            .collect()
    }
}

/// The feature spec of a pipeline: the user's fields and the items' fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub user: EntityFeatures,
    pub item: EntityFeatures,
    /// GR2's semantic item ids: the item's id embedding is the sum of the embeddings of
    /// a code fitted on its content features ([`super::SemanticIds`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_ids: Option<super::SemanticIdSpec>,
}
