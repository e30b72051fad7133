//! The logged list as the models read it, shared by training, the offline jobs and the
//! continuous trainer: one list of the log encoded for the models ([`Example`]), a
//! batch of their pools as tensors ([`pool_tensors`]), and the stable splits every job
//! agrees on (validation lists by request id, cold items by item id).

use candle_core::Device;

use crate::features::{EncodedPools, FeatureEncoder};
use crate::list_log::{LogError, LoggedList};
use crate::model::PoolTensors;

/// One logged list, encoded.
#[derive(Debug, Clone)]
pub struct Example {
    /// The pool in initial (upstream) order, a batch of one.
    pub pool: EncodedPools,
    /// Served items as indices into the pool, top first.
    pub served: Vec<usize>,
    pub clicks: Vec<bool>,
    pub utility: f32,
    pub exploration: bool,
    /// Ids, for the oracle score on simulated data.
    pub user_id: String,
    pub item_ids: Vec<String>,
}

impl Example {
    /// Encodes one logged list; the error says which served item is not in the pool.
    pub fn from_logged(row: &LoggedList, encoder: &FeatureEncoder) -> Result<Self, String> {
        let served = row.served_indices().map_err(|id| {
            format!(
                "request {}: served item {id:?} not in its pool",
                row.request_id
            )
        })?;
        Ok(Example {
            pool: encoder.encode(&[(&row.user, &row.candidates)]),
            served,
            clicks: row.clicks.clone(),
            utility: row.utility as f32,
            exploration: row.exploration,
            user_id: row.user.id.0.clone(),
            item_ids: row.candidates.iter().map(|c| c.item_id.0.clone()).collect(),
        })
    }

    /// Label of every pool candidate: clicked when it was served and clicked.
    pub fn pool_labels(&self) -> Vec<f64> {
        let mut labels = vec![0.0; self.pool.max_items];
        for (&j, &c) in self.served.iter().zip(&self.clicks) {
            labels[j] = f64::from(u8::from(c));
        }
        labels
    }

    /// The displayed list (served order), a batch of one.
    pub fn displayed(&self) -> EncodedPools {
        self.pool.select(0, &self.served)
    }
}

/// Encodes logged rows read from `source` (a file or a glob, named in the error).
pub fn encode_rows(
    rows: &[LoggedList],
    encoder: &FeatureEncoder,
    source: &str,
) -> Result<Vec<Example>, LogError> {
    rows.iter()
        .map(|row| Example::from_logged(row, encoder))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| LogError::BadFile {
            path: source.into(),
            message,
        })
}

/// Pools of `examples` (initial order) as tensors.
pub fn pool_tensors(
    examples: &[&Example],
    enc: &FeatureEncoder,
    device: &Device,
) -> candle_core::Result<PoolTensors> {
    let parts: Vec<_> = examples.iter().map(|e| &e.pool).collect();
    PoolTensors::new(&enc.stack(&parts), enc, device)
}

/// Validation membership by a hash of the request id: stable whatever the file order.
pub fn is_validation(request_id: &str, share: f64) -> bool {
    let h = crate::features::hash_bucket("split", request_id, 1_000_000);
    f64::from(h - 1) < share * 1_000_000.0
}

/// Whether an item is held out of training to measure cold start: by a hash of its id,
/// stable whatever the logs hold.
pub fn is_cold_item(item_id: &str, share: f64) -> bool {
    share > 0.0
        && f64::from(crate::features::hash_bucket("cold", item_id, 1_000_000) - 1)
            < share * 1_000_000.0
}
