//! Features (spec §2): the pipeline's feature spec, hashing of sparse values, the fitted
//! dense normaliser, and encoding of (user, pool) pairs into flat arrays for the models.

mod encode;
mod normaliser;
mod semantic_ids;
mod spec;

pub use encode::{item_dense, EncodedPools, FeatureEncoder, ITEM_ID, UPSTREAM_SCORE};
pub use normaliser::{DenseNormaliser, FieldStats, NormaliserFit};
pub use semantic_ids::{sparse_direction, SemanticIdSpec, SemanticIds};
pub use spec::{DenseTransform, EntityFeatures, FeatureSpec};

/// Bucket of a sparse value within its field: `1..=buckets`; 0 is reserved for a
/// missing value. FNV-1a over the field name and the value, so equal values in different
/// fields do not share a row by construction, and the hash is stable across platforms
/// and releases (the model's embeddings depend on it).
pub fn hash_bucket(field: &str, value: &str, buckets: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in field.bytes().chain([0xff]).chain(value.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    1 + (h % u64::from(buckets.max(1))) as u32
}

#[cfg(test)]
mod tests;
