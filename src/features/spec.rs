//! The feature spec (spec §2): which sparse and dense fields users and items carry.
//!
//! Sparse values are hashed per field into a fixed number of buckets (the hashing trick),
//! so id spaces of any size need no vocabulary. Dense values go through a fixed transform
//! and, at training time, a fitted z-score normaliser stored with the model.

use std::collections::BTreeMap;

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
}

impl EntityFeatures {
    pub fn has_sparse(&self, name: &str) -> bool {
        self.sparse.contains_key(name)
    }

    pub fn has_dense(&self, name: &str) -> bool {
        self.dense.contains_key(name)
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
}
