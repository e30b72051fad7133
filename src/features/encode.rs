//! (user, pool) pairs -> flat index and value arrays, ready to become tensors.
//!
//! Every sparse field has its own block of rows in one embedding table per entity
//! (`offset_f .. offset_f + buckets_f + 1`), which is the same as one table per field but
//! costs one lookup instead of one per field.

use crate::schema::{Candidate, UserFeatures};

use super::{DenseNormaliser, EntityFeatures, FeatureSpec, FieldStats};

/// A batch of pools, padded to the longest pool.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPools {
    pub batch: usize,
    /// Candidates per row after padding.
    pub max_items: usize,
    /// `[batch, user sparse fields]` embedding rows.
    pub user_sparse: Vec<u32>,
    /// `[batch, user dense fields]` normalised values.
    pub user_dense: Vec<f32>,
    /// `[batch, max_items, item sparse fields]` embedding rows (padding: the fields'
    /// missing rows).
    pub item_sparse: Vec<u32>,
    /// `[batch, max_items, item dense fields]`.
    pub item_dense: Vec<f32>,
    /// `[batch, max_items]`: 1 for a real candidate, 0 for padding.
    pub mask: Vec<f32>,
    /// Real candidates per row.
    pub lens: Vec<usize>,
}

impl EncodedPools {
    /// Row `row`'s candidates in `order` (indices into its pool), as a batch of one.
    pub fn select(&self, row: usize, order: &[usize]) -> EncodedPools {
        let n = self.max_items;
        let is = self.item_sparse.len() / (self.batch * n).max(1);
        let id = self.item_dense.len() / (self.batch * n).max(1);
        let us = self.user_sparse.len() / self.batch.max(1);
        let ud = self.user_dense.len() / self.batch.max(1);
        let mut out = EncodedPools {
            batch: 1,
            max_items: order.len(),
            user_sparse: self.user_sparse[row * us..(row + 1) * us].to_vec(),
            user_dense: self.user_dense[row * ud..(row + 1) * ud].to_vec(),
            item_sparse: Vec::with_capacity(order.len() * is),
            item_dense: Vec::with_capacity(order.len() * id),
            mask: Vec::with_capacity(order.len()),
            lens: vec![order.len()],
        };
        for &j in order {
            let at = row * n + j;
            out.item_sparse
                .extend_from_slice(&self.item_sparse[at * is..(at + 1) * is]);
            out.item_dense
                .extend_from_slice(&self.item_dense[at * id..(at + 1) * id]);
            out.mask.push(self.mask[at]);
        }
        out
    }
}

/// Encodes features by the spec and the fitted normaliser.
#[derive(Debug, Clone)]
pub struct FeatureEncoder {
    spec: FeatureSpec,
    normaliser: DenseNormaliser,
    user_offsets: Vec<u32>,
    item_offsets: Vec<u32>,
}

fn offsets(spec: &EntityFeatures) -> Vec<u32> {
    let mut next = 0u32;
    let mut out = Vec::with_capacity(spec.sparse.len() + 1);
    for (name, &buckets) in &spec.sparse {
        out.push(next);
        next += spec.rows(name, buckets);
    }
    out.push(next);
    out
}

impl FeatureEncoder {
    pub fn new(spec: FeatureSpec, normaliser: DenseNormaliser) -> Self {
        Self {
            user_offsets: offsets(&spec.user),
            item_offsets: offsets(&spec.item),
            spec,
            normaliser,
        }
    }

    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    pub fn normaliser(&self) -> &DenseNormaliser {
        &self.normaliser
    }

    /// Rows of the user embedding table.
    pub fn user_rows(&self) -> usize {
        self.user_offsets.last().copied().unwrap_or(0) as usize
    }

    /// Rows of the item embedding table.
    pub fn item_rows(&self) -> usize {
        self.item_offsets.last().copied().unwrap_or(0) as usize
    }

    pub fn user_fields(&self) -> (usize, usize) {
        (self.spec.user.sparse.len(), self.spec.user.dense.len())
    }

    pub fn item_fields(&self) -> (usize, usize) {
        (self.spec.item.sparse.len(), self.spec.item.dense.len())
    }

    /// Stacks batches (e.g. single examples) into one, padding to the longest pool.
    pub fn stack(&self, parts: &[&EncodedPools]) -> EncodedPools {
        let batch = parts.iter().map(|p| p.batch).sum();
        let max_items = parts.iter().map(|p| p.max_items).max().unwrap_or(0);
        let (is, id) = self.item_fields();
        let pad: Vec<u32> = self.item_offsets[..is].to_vec();
        let mut out = EncodedPools {
            batch,
            max_items,
            user_sparse: Vec::new(),
            user_dense: Vec::new(),
            item_sparse: Vec::with_capacity(batch * max_items * is),
            item_dense: Vec::with_capacity(batch * max_items * id),
            mask: Vec::with_capacity(batch * max_items),
            lens: Vec::with_capacity(batch),
        };
        for p in parts {
            out.user_sparse.extend_from_slice(&p.user_sparse);
            out.user_dense.extend_from_slice(&p.user_dense);
            out.lens.extend_from_slice(&p.lens);
            for row in 0..p.batch {
                let (a, b) = (row * p.max_items, (row + 1) * p.max_items);
                out.item_sparse
                    .extend_from_slice(&p.item_sparse[a * is..b * is]);
                out.item_dense
                    .extend_from_slice(&p.item_dense[a * id..b * id]);
                out.mask.extend_from_slice(&p.mask[a..b]);
                for _ in p.max_items..max_items {
                    out.item_sparse.extend_from_slice(&pad);
                    out.item_dense.extend(std::iter::repeat_n(0.0, id));
                    out.mask.push(0.0);
                }
            }
        }
        out
    }

    /// Encodes a batch; pools may differ in size.
    pub fn encode(&self, pools: &[(&UserFeatures, &[Candidate])]) -> EncodedPools {
        let batch = pools.len();
        let max_items = pools.iter().map(|p| p.1.len()).max().unwrap_or(0);
        let (us, ud) = self.user_fields();
        let (is, id) = self.item_fields();
        let mut out = EncodedPools {
            batch,
            max_items,
            user_sparse: Vec::with_capacity(batch * us),
            user_dense: Vec::with_capacity(batch * ud),
            item_sparse: Vec::with_capacity(batch * max_items * is),
            item_dense: Vec::with_capacity(batch * max_items * id),
            mask: Vec::with_capacity(batch * max_items),
            lens: Vec::with_capacity(batch),
        };
        for (user, candidates) in pools {
            sparse_rows(
                &self.spec.user,
                &self.user_offsets,
                |f| user_sparse(user, f),
                &mut out.user_sparse,
            );
            dense_values(
                &self.spec.user,
                &self.normaliser.user,
                |f| user.dense.get(f).copied(),
                &mut out.user_dense,
            );
            for c in candidates.iter() {
                sparse_rows(
                    &self.spec.item,
                    &self.item_offsets,
                    |f| item_sparse(c, f),
                    &mut out.item_sparse,
                );
                dense_values(
                    &self.spec.item,
                    &self.normaliser.item,
                    |f| item_dense(c, f),
                    &mut out.item_dense,
                );
                out.mask.push(1.0);
            }
            for _ in candidates.len()..max_items {
                sparse_rows(
                    &self.spec.item,
                    &self.item_offsets,
                    |_| None,
                    &mut out.item_sparse,
                );
                out.item_dense.extend(std::iter::repeat_n(0.0, id));
                out.mask.push(0.0);
            }
            out.lens.push(candidates.len());
        }
        out
    }
}

/// A candidate's dense value, where the reserved field [`UPSTREAM_SCORE`] reads the
/// upstream ranker's score.
pub fn item_dense(c: &Candidate, field: &str) -> Option<f64> {
    if field == UPSTREAM_SCORE {
        c.upstream_score
    } else {
        c.dense.get(field).copied()
    }
}

/// A user's sparse value, where a field named [`USER_ID`] that the event does not carry
/// reads the user's id.
fn user_sparse<'a>(user: &'a UserFeatures, field: &str) -> Option<&'a str> {
    user.sparse
        .get(field)
        .map(|t| t.as_str())
        .or_else(|| (field == USER_ID).then(|| user.id.as_str()))
}

/// A candidate's sparse value, where a field named [`ITEM_ID`] that the event does not
/// carry reads the candidate's `item_id`.
fn item_sparse<'a>(c: &'a Candidate, field: &str) -> Option<&'a str> {
    c.sparse
        .get(field)
        .map(|t| t.as_str())
        .or_else(|| (field == ITEM_ID).then(|| c.item_id.as_str()))
}

/// Declaring a sparse user field of this name embeds the user's id (hashed) without
/// repeating it in the event's `sparse` map; likewise [`ITEM_ID`] for candidates. Before
/// this, the simulator's pipelines declared both and every user and item fell into the
/// "missing" row: the models never saw an id.
pub const USER_ID: &str = "user_id";
pub const ITEM_ID: &str = "item_id";

/// Declaring a dense item field of this name makes the upstream score a model input:
/// the upstream ranker's knowledge is the strongest single signal a re-ranker has.
pub const UPSTREAM_SCORE: &str = "upstream_score";

fn sparse_rows<'a>(
    spec: &EntityFeatures,
    offsets: &[u32],
    value: impl Fn(&str) -> Option<&'a str>,
    out: &mut Vec<u32>,
) {
    for ((field, &buckets), &offset) in spec.sparse.iter().zip(offsets) {
        let local = value(field).map_or(0, |v| spec.sparse_row(field, buckets, v));
        out.push(offset + local);
    }
}

fn dense_values(
    spec: &EntityFeatures,
    stats: &std::collections::BTreeMap<String, FieldStats>,
    value: impl Fn(&str) -> Option<f64>,
    out: &mut Vec<f32>,
) {
    for (field, &transform) in &spec.dense {
        let v = stats
            .get(field)
            .map_or(0.0, |s| s.normalise(transform, value(field)));
        out.push(v);
    }
}
