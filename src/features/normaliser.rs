//! Fitted dense normaliser (spec §2): the field's fixed transform, then a z-score with
//! mean and standard deviation fitted on training data and stored with the model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{item_dense, DenseTransform, EntityFeatures};
use crate::schema::Candidate;

/// Statistics of one dense field after its transform.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FieldStats {
    pub mean: f64,
    pub std: f64,
    /// Values seen when fitting (0: the field was never present; it then maps to 0).
    pub count: u64,
}

/// Per-field z-score statistics for the dense fields of users and items.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DenseNormaliser {
    pub user: BTreeMap<String, FieldStats>,
    pub item: BTreeMap<String, FieldStats>,
}

/// Welford's running mean and variance.
#[derive(Debug, Clone, Copy, Default)]
struct Running {
    count: u64,
    mean: f64,
    m2: f64,
}

impl Running {
    fn add(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    fn stats(&self) -> FieldStats {
        let var = if self.count > 1 {
            self.m2 / (self.count - 1) as f64
        } else {
            0.0
        };
        FieldStats {
            mean: self.mean,
            // A constant field must not divide by zero; it then maps to 0.
            std: var.sqrt().max(1e-6),
            count: self.count,
        }
    }
}

/// Fits a [`DenseNormaliser`] from a stream of raw values.
#[derive(Debug, Clone, Default)]
pub struct NormaliserFit {
    user: BTreeMap<String, Running>,
    item: BTreeMap<String, Running>,
}

impl NormaliserFit {
    pub fn add_user(&mut self, spec: &EntityFeatures, dense: &BTreeMap<String, f64>) {
        add(&mut self.user, spec, |f| dense.get(f).copied());
    }

    pub fn add_item(&mut self, spec: &EntityFeatures, candidate: &Candidate) {
        add(&mut self.item, spec, |f| item_dense(candidate, f));
    }

    pub fn finish(&self, user: &EntityFeatures, item: &EntityFeatures) -> DenseNormaliser {
        let stats = |runs: &BTreeMap<String, Running>, spec: &EntityFeatures| {
            spec.dense
                .keys()
                .map(|name| {
                    (
                        name.clone(),
                        runs.get(name).copied().unwrap_or_default().stats(),
                    )
                })
                .collect()
        };
        DenseNormaliser {
            user: stats(&self.user, user),
            item: stats(&self.item, item),
        }
    }
}

fn add(
    runs: &mut BTreeMap<String, Running>,
    spec: &EntityFeatures,
    value: impl Fn(&str) -> Option<f64>,
) {
    for (name, transform) in &spec.dense {
        if let Some(x) = value(name) {
            if x.is_finite() {
                runs.entry(name.clone())
                    .or_default()
                    .add(transform.apply(x));
            }
        }
    }
}

impl DenseTransform {
    pub fn apply(self, x: f64) -> f64 {
        match self {
            DenseTransform::Identity => x,
            DenseTransform::Log1p => x.signum() * x.abs().ln_1p(),
        }
    }
}

impl FieldStats {
    /// Transformed, z-scored value; a missing value is imputed with the mean (0).
    pub fn normalise(&self, transform: DenseTransform, x: Option<f64>) -> f32 {
        match x {
            Some(x) if x.is_finite() && self.count > 0 => {
                ((transform.apply(x) - self.mean) / self.std) as f32
            }
            _ => 0.0,
        }
    }
}
