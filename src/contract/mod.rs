//! The wire contract checked: decoded events against the pipeline's feature spec and
//! size limits. Cheap size checks run before anything walks the pool, so an oversize
//! request costs little to refuse.

mod limits;

use std::collections::{BTreeSet, HashMap};

use crate::features::{DenseTransform, EntityFeatures, FeatureSpec};
use crate::schema::{
    decode, Decoded, DenseFeatures, EventError, Feedback, RerankRequest, RerankResult,
    SparseFeatures, Token, UnknownFields,
};

pub use limits::Limits;
/// Longest id (request, user or item) accepted, in bytes: ids become Kafka keys and
/// Parquet values, and an unbounded id is a memory hazard.
pub const MAX_ID_BYTES: usize = 256;

/// Largest magnitude of a dense value after its transform (and of an upstream score).
/// The models compute in f32 after a fitted z-score: a value that JSON carries finitely
/// (1e300) would become infinite there and poison the whole batch. Counts, durations
/// and scores of real systems stay many orders of magnitude below.
pub const MAX_DENSE_MAGNITUDE: f64 = 1e15;

/// Distinct unknown-field paths logged at most: the paths come from outside.
const MAX_LOGGED_UNKNOWN_FIELDS: usize = 64;

/// Says once per path which unknown fields arrive, so an operator learns what upstream
/// added without a log line per event.
#[derive(Debug, Default)]
pub struct UnknownFieldLog(BTreeSet<String>);

impl UnknownFieldLog {
    /// Logs the paths of `ignored` not seen before; whether there were any.
    pub fn note(&mut self, event: &'static str, ignored: &[String]) -> bool {
        for path in ignored {
            if self.0.len() < MAX_LOGGED_UNKNOWN_FIELDS && self.0.insert(path.clone()) {
                tracing::warn!(event, field = %path, "unknown field ignored (limits.strict_fields = true would refuse it)");
            }
        }
        !ignored.is_empty()
    }
}

/// What events are checked against: the pipeline's features and size limits.
#[derive(Debug, Clone, Copy)]
pub struct Contract<'a> {
    pub features: &'a FeatureSpec,
    pub limits: &'a Limits,
}

impl<'a> Contract<'a> {
    pub fn new(features: &'a FeatureSpec, limits: &'a Limits) -> Self {
        Self { features, limits }
    }

    /// How unknown fields are treated (`limits.strict_fields`).
    fn unknown_fields(&self) -> UnknownFields {
        if self.limits.strict_fields {
            UnknownFields::Refuse
        } else {
            UnknownFields::Ignore
        }
    }

    /// Decodes and validates a `RerankRequest`.
    pub fn parse_request(&self, bytes: &[u8]) -> Result<Decoded<RerankRequest>, EventError> {
        let decoded = decode(bytes, self.unknown_fields())?;
        self.check_request(&decoded.event)?;
        Ok(decoded)
    }

    /// Decodes and validates a `RerankResult`.
    pub fn parse_result(&self, bytes: &[u8]) -> Result<Decoded<RerankResult>, EventError> {
        let decoded = decode(bytes, self.unknown_fields())?;
        self.check_result(&decoded.event)?;
        Ok(decoded)
    }

    /// Decodes and validates a `Feedback`.
    pub fn parse_feedback(&self, bytes: &[u8]) -> Result<Decoded<Feedback>, EventError> {
        let decoded = decode(bytes, self.unknown_fields())?;
        self.check_feedback(&decoded.event)?;
        Ok(decoded)
    }

    pub fn check_request(&self, r: &RerankRequest) -> Result<(), EventError> {
        check_id("request_id", &r.request_id)?;
        let n = r.candidates.len();
        if n == 0 {
            return Err(EventError::NoCandidates);
        }
        if n > self.limits.max_candidates {
            return Err(EventError::TooManyCandidates {
                count: n,
                max: self.limits.max_candidates,
            });
        }
        if r.list_len == 0 || r.list_len > self.limits.max_list_len {
            return Err(EventError::ListLenOutOfRange {
                list_len: r.list_len,
                max: self.limits.max_list_len,
            });
        }
        if r.list_len > n {
            return Err(EventError::ListLongerThanPool {
                list_len: r.list_len,
                candidates: n,
            });
        }
        check_timestamp(r.timestamp_ms)?;
        check_schema_version(r.schema_version)?;
        check_id("user.id", r.user.id.as_str())?;
        check_features(
            "user",
            &self.features.user,
            "user",
            &r.user.sparse,
            &r.user.dense,
        )?;
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(n);
        for (i, c) in r.candidates.iter().enumerate() {
            let at = format!("candidates[{i}]");
            check_id(&format!("{at}.item_id"), c.item_id.as_str())?;
            if let Some(first) = seen.insert(c.item_id.as_str(), i) {
                return Err(EventError::DuplicateItem {
                    item_id: c.item_id.0.clone(),
                    first,
                    second: i,
                });
            }
            check_features("item", &self.features.item, &at, &c.sparse, &c.dense)?;
            if let Some(score) = c.upstream_score {
                check_dense(&format!("{at}.upstream_score"), score, score)?;
            }
        }
        Ok(())
    }

    pub fn check_result(&self, r: &RerankResult) -> Result<(), EventError> {
        check_id("request_id", &r.request_id)?;
        check_id("model_version", &r.model_version)?;
        if r.items.is_empty() {
            return Err(EventError::EmptyResult);
        }
        if r.items.len() > self.limits.max_list_len {
            return Err(EventError::ListLenOutOfRange {
                list_len: r.items.len(),
                max: self.limits.max_list_len,
            });
        }
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(r.items.len());
        for (i, item) in r.items.iter().enumerate() {
            check_id(&format!("items[{i}].item_id"), item.item_id.as_str())?;
            if let Some(first) = seen.insert(item.item_id.as_str(), i) {
                return Err(EventError::DuplicateResultItem {
                    item_id: item.item_id.0.clone(),
                    first,
                    second: i,
                });
            }
            check_finite(&format!("items[{i}].score"), item.score)?;
            check_finite(&format!("items[{i}].entropy_before"), item.entropy_before)?;
            check_finite(&format!("items[{i}].entropy_after"), item.entropy_after)?;
        }
        check_non_negative("latency_ms", r.latency_ms)?;
        check_schema_version(r.schema_version)?;
        check_timestamp(r.timestamp_ms)
    }

    pub fn check_feedback(&self, f: &Feedback) -> Result<(), EventError> {
        check_id("request_id", &f.request_id)?;
        check_id("item_id", f.item_id.as_str())?;
        if f.position as usize >= self.limits.max_list_len {
            return Err(EventError::OutOfRange {
                path: "position".into(),
                value: f64::from(f.position),
                expected: "must be below limits.max_list_len",
            });
        }
        if let Some(dwell) = f.dwell_ms {
            check_non_negative("dwell_ms", dwell)?;
        }
        if let Some(utility) = f.utility {
            check_finite("utility", utility)?;
        }
        check_schema_version(f.schema_version)?;
        check_timestamp(f.timestamp_ms)
    }
}

/// Versions count from 1. A version newer than eglr's own is read as far as eglr
/// knows it: its new fields are unknown fields.
fn check_schema_version(version: Option<u32>) -> Result<(), EventError> {
    match version {
        Some(0) => Err(EventError::OutOfRange {
            path: "schema_version".into(),
            value: 0.0,
            expected: "must be at least 1",
        }),
        _ => Ok(()),
    }
}

fn check_id(path: &str, id: &str) -> Result<(), EventError> {
    if id.trim().is_empty() {
        return Err(EventError::EmptyId { path: path.into() });
    }
    if id.len() > MAX_ID_BYTES {
        return Err(EventError::IdTooLong {
            path: path.into(),
            len: id.len(),
            max: MAX_ID_BYTES,
        });
    }
    Ok(())
}

fn check_finite(path: &str, value: f64) -> Result<(), EventError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(EventError::NonFinite {
            path: path.into(),
            value,
        })
    }
}

fn check_non_negative(path: &str, value: f64) -> Result<(), EventError> {
    check_finite(path, value)?;
    if value < 0.0 {
        return Err(EventError::OutOfRange {
            path: path.into(),
            value,
            expected: "must be >= 0",
        });
    }
    Ok(())
}

fn check_timestamp(ms: i64) -> Result<(), EventError> {
    if ms < 0 {
        return Err(EventError::OutOfRange {
            path: "timestamp_ms".into(),
            // Exact for any timestamp of this era; only used in the message.
            value: ms as f64,
            expected: "must be milliseconds since the Unix epoch (>= 0)",
        });
    }
    Ok(())
}

/// Every feature must be declared in the pipeline, under the same kind; a declared
/// feature may be absent (it is then imputed by the model's feature layer).
fn check_features(
    entity: &'static str,
    spec: &EntityFeatures,
    at: &str,
    sparse: &SparseFeatures,
    dense: &DenseFeatures,
) -> Result<(), EventError> {
    let unknown = |name: &str, path: String| EventError::UnknownFeature {
        entity,
        path,
        name: name.to_owned(),
        known: spec.field_names().join(", "),
    };
    for (name, value) in sparse {
        let path = format!("{at}.sparse.{name}");
        if !spec.has_sparse(name) {
            return Err(if spec.has_dense(name) {
                EventError::WrongFeatureKind {
                    entity,
                    path,
                    name: name.clone(),
                    declared: "dense",
                    given: "sparse",
                }
            } else {
                unknown(name, path)
            });
        }
        check_sparse_value(&path, value)?;
    }
    for (name, value) in dense {
        let path = format!("{at}.dense.{name}");
        if name == crate::features::UPSTREAM_SCORE {
            return Err(EventError::ReservedFeature {
                path,
                name: name.clone(),
            });
        }
        if !spec.has_dense(name) {
            return Err(if spec.has_sparse(name) {
                EventError::WrongFeatureKind {
                    entity,
                    path,
                    name: name.clone(),
                    declared: "sparse",
                    given: "dense",
                }
            } else {
                unknown(name, path)
            });
        }
        let transform = spec
            .dense
            .get(name)
            .copied()
            .unwrap_or(DenseTransform::Identity);
        check_dense(&path, *value, transform.apply(*value))?;
    }
    Ok(())
}

/// A dense `value` that is finite and whose `transformed` value stays within
/// [`MAX_DENSE_MAGNITUDE`].
fn check_dense(path: &str, value: f64, transformed: f64) -> Result<(), EventError> {
    check_finite(path, value)?;
    if transformed.abs() > MAX_DENSE_MAGNITUDE {
        return Err(EventError::OutOfRange {
            path: path.into(),
            value,
            expected: "its magnitude after the feature's transform must be at most 1e15 (the models compute in f32)",
        });
    }
    Ok(())
}

fn check_sparse_value(path: &str, value: &Token) -> Result<(), EventError> {
    if value.as_str().len() > MAX_ID_BYTES {
        return Err(EventError::IdTooLong {
            path: path.into(),
            len: value.as_str().len(),
            max: MAX_ID_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
