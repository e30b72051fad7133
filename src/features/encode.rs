//! (user, pool) pairs -> flat index and value arrays, ready to become tensors.
//!
//! Every sparse field has its own block of rows in one embedding table per entity
//! (`offset_f .. offset_f + buckets_f + 1`), which is the same as one table per field but
//! costs one lookup instead of one per field.

use crate::schema::{Candidate, UserFeatures};

use super::{DenseNormaliser, EntityFeatures, FeatureSpec, FieldStats, SemanticIds};

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

/// Encodes features by the spec, the fitted normaliser and, with semantic ids, the
/// fitted tokenizer.
#[derive(Debug, Clone)]
pub struct FeatureEncoder {
    spec: FeatureSpec,
    normaliser: DenseNormaliser,
    /// The item fields that are looked up by value: the spec's, less the id field that
    /// semantic ids replace.
    item_looked_up: EntityFeatures,
    semantic_ids: Option<SemanticIds>,
    /// The tokenizer's content fields, resolved once (not per candidate), and the
    /// width of the content vector they make.
    content_fields: Vec<String>,
    content_dim: usize,
    /// Codes already computed, by item and content: quantising costs `levels * codes *
    /// width` operations per candidate, and the same items come back request after
    /// request.
    codes: CodeCache,
    user_offsets: Vec<u32>,
    /// One offset per looked-up item field, then one per code level (each level a block
    /// of `codes + 1` rows, row 0 for padding), then the total.
    item_offsets: Vec<u32>,
}

/// Most codes the cache keeps; when full it starts over (cheaper than an LRU's
/// bookkeeping, and a full cache is the catalogue's hot set anyway).
const CODE_CACHE_ITEMS: usize = 1 << 20;

/// Item codes by a hash of the item's id and content vector, shared by the clones of
/// an encoder (the inference workers').
#[derive(Debug, Clone, Default)]
struct CodeCache(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, Vec<u32>>>>);

impl CodeCache {
    fn get_or(&self, key: u64, compute: impl FnOnce() -> Vec<u32>) -> Vec<u32> {
        // A poisoned lock only means another thread panicked mid-insert: the map
        // holds whole entries either way.
        let cached = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(code) = cached {
            return code;
        }
        let code = compute();
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CODE_CACHE_ITEMS {
            map.clear();
        }
        map.insert(key, code.clone());
        code
    }
}

/// FNV-1a over an item's id and the bits of its content vector.
fn content_key(item_id: &str, content: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = item_id
        .bytes()
        .chain([0xff])
        .chain(content.iter().flat_map(|v| v.to_bits().to_le_bytes()));
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Block offsets of `spec`'s sparse fields, then of `extra` more blocks, then the total.
fn offsets(spec: &EntityFeatures, extra: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut next = 0u32;
    let mut out = Vec::with_capacity(spec.sparse.len() + 1);
    let blocks = spec
        .sparse
        .iter()
        .map(|(name, &buckets)| spec.rows(name, buckets));
    for rows in blocks.chain(extra) {
        out.push(next);
        next += rows;
    }
    out.push(next);
    out
}

impl FeatureEncoder {
    /// An encoder without a fitted tokenizer: with semantic ids in the spec, every item
    /// gets the padding code until [`Self::with_semantic_ids`] gives it one.
    pub fn new(spec: FeatureSpec, normaliser: DenseNormaliser) -> Self {
        let mut item_looked_up = spec.item.clone();
        let mut code_blocks = Vec::new();
        let content_fields = spec
            .semantic_ids
            .as_ref()
            .map_or_else(Vec::new, |ids| ids.content_fields(&spec.item));
        let content_dim = content_fields
            .iter()
            .map(|f| {
                if spec.item.has_sparse(f) {
                    super::semantic_ids::SPARSE_DIRECTION_DIM
                } else {
                    1
                }
            })
            .sum();
        if let Some(ids) = &spec.semantic_ids {
            item_looked_up.sparse.remove(&ids.replaces);
            item_looked_up.exact.remove(&ids.replaces);
            code_blocks = vec![ids.codes as u32 + 1; ids.levels];
            if ids.disambiguation > 0 {
                code_blocks.push(ids.disambiguation as u32 + 1);
            }
        }
        Self {
            user_offsets: offsets(&spec.user, std::iter::empty()),
            item_offsets: offsets(&item_looked_up, code_blocks.into_iter()),
            item_looked_up,
            semantic_ids: None,
            content_fields,
            content_dim,
            codes: CodeCache::default(),
            spec,
            normaliser,
        }
    }

    /// The encoder with a fitted tokenizer (a bundle's, or [`Self::fit_semantic_ids`]'s);
    /// the error says how it does not fit the spec.
    pub fn with_semantic_ids(mut self, ids: Option<SemanticIds>) -> Result<Self, String> {
        match (&self.spec.semantic_ids, &ids) {
            (None, None) => {}
            (Some(spec), Some(fitted)) => fitted.check(spec, self.content_dim)?,
            (None, Some(_)) => {
                return Err("semantic ids are stored but the feature spec has none".into())
            }
            (Some(_), None) => {
                return Err("the feature spec has semantic ids but no tokenizer is stored".into())
            }
        }
        self.semantic_ids = ids;
        self.codes = CodeCache::default();
        Ok(self)
    }

    /// Fits the tokenizer on the content of `items` (one candidate per item id) with
    /// this encoder's normaliser; a spec without semantic ids has nothing to fit.
    pub fn fit_semantic_ids(
        self,
        items: &std::collections::BTreeMap<String, Candidate>,
    ) -> Result<Self, String> {
        let Some(spec) = self.spec.semantic_ids.clone() else {
            return Ok(self);
        };
        let content = items
            .iter()
            .map(|(id, c)| (id.clone(), self.item_content(c)))
            .collect();
        let fitted = SemanticIds::fit(&spec, &content)?;
        self.with_semantic_ids(Some(fitted))
    }

    pub fn semantic_ids(&self) -> Option<&SemanticIds> {
        self.semantic_ids.as_ref()
    }

    /// Code tokens summed into the id slot (0 without semantic ids): the last this many
    /// item sparse columns, the disambiguating token included.
    pub fn code_levels(&self) -> usize {
        self.spec
            .semantic_ids
            .as_ref()
            .map_or(0, |s| s.levels + usize::from(s.disambiguation > 0))
    }

    /// The item's content vector, the tokenizer's input: each content field in name
    /// order, a sparse value as its fixed direction (zeros when missing), a dense one
    /// normalised like the model's input.
    pub fn item_content(&self, c: &Candidate) -> Vec<f32> {
        let item = &self.spec.item;
        let mut out = Vec::with_capacity(self.content_dim);
        for field in &self.content_fields {
            if item.has_sparse(field) {
                match item_sparse(c, field) {
                    Some(v) => out.extend_from_slice(&super::sparse_direction(field, v)),
                    None => out.extend([0.0; super::semantic_ids::SPARSE_DIRECTION_DIM]),
                }
            } else if let Some(&transform) = item.dense.get(field) {
                let v = self
                    .normaliser
                    .item
                    .get(field)
                    .map_or(0.0, |s| s.normalise(transform, item_dense(c, field)));
                out.push(v);
            }
        }
        out
    }

    /// The item's rows of the code levels' blocks (their padding rows until a tokenizer
    /// is fitted).
    fn code_rows(&self, c: Option<&Candidate>, out: &mut Vec<u32>) {
        let fields = self.item_looked_up.sparse.len();
        let blocks = &self.item_offsets[fields..fields + self.code_levels()];
        match (c, &self.semantic_ids) {
            (Some(c), Some(ids)) => {
                let content = self.item_content(c);
                let code = self
                    .codes
                    .get_or(content_key(c.item_id.as_str(), &content), || {
                        let mut code = ids.code(&content);
                        if blocks.len() > code.len() {
                            code.push(ids.token(c.item_id.as_str()));
                        }
                        code
                    });
                out.extend(blocks.iter().zip(code).map(|(o, t)| o + 1 + t));
            }
            _ => out.extend_from_slice(blocks),
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

    /// `(sparse columns, dense fields)` of an item: the looked-up fields, then one
    /// column per code level.
    pub fn item_fields(&self) -> (usize, usize) {
        (
            self.item_looked_up.sparse.len() + self.code_levels(),
            self.spec.item.dense.len(),
        )
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
                    &self.item_looked_up,
                    &self.item_offsets,
                    |f| item_sparse(c, f),
                    &mut out.item_sparse,
                );
                self.code_rows(Some(c), &mut out.item_sparse);
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
                    &self.item_looked_up,
                    &self.item_offsets,
                    |_| None,
                    &mut out.item_sparse,
                );
                self.code_rows(None, &mut out.item_sparse);
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
