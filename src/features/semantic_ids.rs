//! GR2's semantic item ids (arXiv 2602.07774, "semantic IDs"): a tokenizer turns an
//! item's content features into a short code of discrete tokens by residual
//! quantisation, and the item's id embedding is the sum of its code tokens' embeddings.
//! Ids then need no vocabulary of their own, and a new item shares the rows of the known
//! items it resembles instead of falling into a hash bucket nobody trained.
//!
//! Simplified from the paper: GR2 quantises a pretrained content encoder's embedding
//! (an RQ-VAE); here the content vector is the item's own features (the z-scored dense
//! fields and a fixed random direction per sparse value), quantised by residual k-means
//! (the RQ-VAE's codebooks without its learnt encoder). As in GR2 (and TIGER), a last
//! token tells apart the fitted items whose content codes collide (items with equal
//! features): the k-th of them, in id order, gets token k; every other item, a new one
//! included, gets token 0. Both uniquenesses are reported: of the content code alone,
//! and of the full id.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// `[features.semantic_ids]`: how items are tokenized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticIdSpec {
    /// Tokens per code (residual levels).
    #[serde(default = "default_levels")]
    pub levels: usize,
    /// Codebook size of each level.
    #[serde(default = "default_codes")]
    pub codes: usize,
    /// Item fields the code is made of; default: every item field except the replaced
    /// id field and `upstream_score` (which belongs to the request, not the item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<String>>,
    /// The sparse item field whose hashed embedding the code replaces, when the spec
    /// declares it (`item_id`, or a catalogue's own id field such as `video_id`).
    #[serde(default = "default_replaces")]
    pub replaces: String,
    /// Rows of the last, disambiguating token (0: no such token); the items of a code
    /// beyond this many share its last row.
    #[serde(default = "default_disambiguation")]
    pub disambiguation: usize,
}

fn default_disambiguation() -> usize {
    32
}

/// Four levels of 512 codes tell apart 99.8 % of the simulated world's 5,000 items by
/// their content (fitted on the training lists; `docs/models.md`).
fn default_levels() -> usize {
    4
}

fn default_codes() -> usize {
    512
}

fn default_replaces() -> String {
    super::encode::ITEM_ID.to_owned()
}

impl Default for SemanticIdSpec {
    fn default() -> Self {
        Self {
            levels: default_levels(),
            codes: default_codes(),
            content: None,
            replaces: default_replaces(),
            disambiguation: default_disambiguation(),
        }
    }
}

/// Most levels and codes a tokenizer may have: far above what helps, low enough that a
/// hostile bundle cannot make loading allocate without limit.
pub const MAX_LEVELS: usize = 8;
pub const MAX_CODES: usize = 4096;

impl SemanticIdSpec {
    /// `(key, message)` of the first setting that cannot work.
    pub fn validate(&self, item: &super::EntityFeatures) -> Result<(), (String, String)> {
        let key = |k: &str| format!("features.semantic_ids.{k}");
        if !(1..=MAX_LEVELS).contains(&self.levels) {
            return Err((
                key("levels"),
                format!("{} is not in 1..={MAX_LEVELS}", self.levels),
            ));
        }
        if !(2..=MAX_CODES).contains(&self.codes) {
            return Err((
                key("codes"),
                format!("{} is not in 2..={MAX_CODES}", self.codes),
            ));
        }
        if self.disambiguation > MAX_CODES {
            return Err((
                key("disambiguation"),
                format!("{} is more than {MAX_CODES}", self.disambiguation),
            ));
        }
        let content = self.content_fields(item);
        if content.is_empty() {
            return Err((
                key("content"),
                "no item field to make the code of: declare content fields".into(),
            ));
        }
        for field in &content {
            if field == super::UPSTREAM_SCORE || *field == self.replaces {
                return Err((
                    key("content"),
                    format!(
                        "{field:?} is not content: a code made of it would not describe the item"
                    ),
                ));
            }
            if !item.has_sparse(field) && !item.has_dense(field) {
                return Err((
                    key("content"),
                    format!(
                        "{field:?} is not a declared item field (declared: {})",
                        item.field_names().join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The content fields, sorted, the default resolved.
    pub fn content_fields(&self, item: &super::EntityFeatures) -> Vec<String> {
        let mut fields: Vec<String> = match &self.content {
            Some(fields) => fields.clone(),
            None => item
                .sparse
                .keys()
                .chain(item.dense.keys())
                .filter(|f| **f != self.replaces && f.as_str() != super::UPSTREAM_SCORE)
                .cloned()
                .collect(),
        };
        fields.sort();
        fields.dedup();
        fields
    }
}

/// Width of a sparse value's direction in the content vector.
pub const SPARSE_DIRECTION_DIM: usize = 16;

/// A fixed pseudo-random direction of unit length for a sparse value (the hashing trick
/// for features): distinct values are nearly orthogonal, equal values identical, on any
/// platform and release, with no vocabulary.
pub fn sparse_direction(field: &str, value: &str) -> [f32; SPARSE_DIRECTION_DIM] {
    let mut state = u64::from(super::hash_bucket(field, value, u32::MAX));
    let scale = 1.0 / (SPARSE_DIRECTION_DIM as f32).sqrt();
    let mut out = [0.0; SPARSE_DIRECTION_DIM];
    for v in &mut out {
        // splitmix64: one well-mixed word per coordinate, of which the sign is kept.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        *v = if z & 1 == 1 { scale } else { -scale };
    }
    out
}

/// A fitted tokenizer: one codebook per level, stored in the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticIds {
    /// Width of the content vector.
    pub dim: usize,
    /// `[levels][codes * dim]`: level `l` quantises what levels `< l` left over.
    pub codebooks: Vec<Vec<f32>>,
    /// The disambiguating token of each fitted item that has one (k > 0: the k-th item,
    /// in id order, of a content code shared with others).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub disambiguation: BTreeMap<String, u32>,
    /// Distinct items it was fitted on.
    pub items: usize,
    /// Share of those items whose content code no other item has.
    pub content_uniqueness: f64,
    /// Share of those items whose full id (content code and disambiguating token) no
    /// other item has.
    pub uniqueness: f64,
}

/// Lloyd iterations per level; the assignment rarely changes after ~15 on item data.
const ITERATIONS: usize = 25;

impl SemanticIds {
    /// Fits the codebooks on the content vectors of distinct items (any order: they are
    /// sorted first, so the result depends only on the set). The seed is fixed, not the
    /// training seed: like the normaliser, the tokenizer learns nothing from clicks, and
    /// a judge and the models it judges must encode items alike.
    pub fn fit(spec: &SemanticIdSpec, items: &BTreeMap<String, Vec<f32>>) -> Result<Self, String> {
        let dim = items.values().next().map_or(0, Vec::len);
        if dim == 0 || items.values().any(|v| v.len() != dim) {
            return Err(
                "no items, or content vectors of different widths, to fit semantic ids on".into(),
            );
        }
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut residual: Vec<Vec<f32>> = items.values().cloned().collect();
        let mut codebooks = Vec::with_capacity(spec.levels);
        for _ in 0..spec.levels {
            let book = kmeans(&residual, spec.codes, dim, &mut rng);
            for r in &mut residual {
                let c = nearest(&book, dim, r);
                for (x, m) in r.iter_mut().zip(&book[c * dim..(c + 1) * dim]) {
                    *x -= m;
                }
            }
            codebooks.push(book);
        }
        let mut ids = Self {
            dim,
            codebooks,
            disambiguation: BTreeMap::new(),
            items: items.len(),
            content_uniqueness: 0.0,
            uniqueness: 0.0,
        };
        let mut seen: BTreeMap<Vec<u32>, u32> = BTreeMap::new();
        let mut full: BTreeMap<(Vec<u32>, u32), usize> = BTreeMap::new();
        let last = spec.disambiguation.saturating_sub(1) as u32;
        for (id, content) in items {
            let code = ids.code(content);
            let k = seen.entry(code.clone()).or_default();
            let token = (*k).min(last);
            if token > 0 {
                ids.disambiguation.insert(id.clone(), token);
            }
            *k += 1;
            *full.entry((code, token)).or_default() += 1;
        }
        let n = items.len().max(1) as f64;
        ids.content_uniqueness = seen.values().filter(|&&c| c == 1).count() as f64 / n;
        ids.uniqueness = full.values().filter(|&&c| c == 1).count() as f64 / n;
        Ok(ids)
    }

    /// The disambiguating token of `item_id` (0 for an item it was not fitted on).
    pub fn token(&self, item_id: &str) -> u32 {
        self.disambiguation.get(item_id).copied().unwrap_or(0)
    }

    pub fn levels(&self) -> usize {
        self.codebooks.len()
    }

    pub fn codes_per_level(&self) -> usize {
        self.codebooks
            .first()
            .map_or(0, |b| b.len() / self.dim.max(1))
    }

    /// The code of a content vector: at each level the nearest codeword to what the
    /// levels before left over (residual quantisation).
    pub fn code(&self, content: &[f32]) -> Vec<u32> {
        let mut residual = content.to_vec();
        self.codebooks
            .iter()
            .map(|book| {
                let c = nearest(book, self.dim, &residual);
                for (x, m) in residual
                    .iter_mut()
                    .zip(&book[c * self.dim..(c + 1) * self.dim])
                {
                    *x -= m;
                }
                c as u32
            })
            .collect()
    }

    /// Whether a bundle's tokenizer is usable with `spec`: the shapes agree and every
    /// value is finite.
    pub fn check(&self, spec: &SemanticIdSpec, content_dim: usize) -> Result<(), String> {
        if self.levels() != spec.levels || self.dim != content_dim {
            return Err(format!(
                "semantic ids: {} levels of width {}, the feature spec needs {} of width {content_dim}",
                self.levels(),
                self.dim,
                spec.levels
            ));
        }
        for (l, book) in self.codebooks.iter().enumerate() {
            if book.len() != spec.codes * self.dim {
                return Err(format!(
                    "semantic ids: level {l} holds {} values, expected {} codes of width {}",
                    book.len(),
                    spec.codes,
                    self.dim
                ));
            }
            if book.iter().any(|v| !v.is_finite()) {
                return Err(format!(
                    "semantic ids: level {l} holds NaN or infinite values"
                ));
            }
        }
        if let Some((id, t)) = self
            .disambiguation
            .iter()
            .find(|(_, &t)| t as usize >= spec.disambiguation)
        {
            return Err(format!(
                "semantic ids: item {id:?} has token {t}, the spec has {} rows",
                spec.disambiguation
            ));
        }
        Ok(())
    }
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Index of the codeword nearest to `x` (the first of equals).
fn nearest(book: &[f32], dim: usize, x: &[f32]) -> usize {
    let mut best = (0, f32::INFINITY);
    for (c, word) in book.chunks_exact(dim).enumerate() {
        let d = distance(word, x);
        if d < best.1 {
            best = (c, d);
        }
    }
    best.0
}

/// k-means with k-means++ seeding (Arthur & Vassilvitskii 2007), `k * dim` values. With
/// fewer distinct points than `k` the spare codewords repeat a point and stay unused.
fn kmeans(points: &[Vec<f32>], k: usize, dim: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut book: Vec<f32> = Vec::with_capacity(k * dim);
    book.extend_from_slice(&points[rng.random_range(0..points.len())]);
    let mut d2: Vec<f32> = points.iter().map(|p| distance(p, &book[..dim])).collect();
    while book.len() < k * dim {
        let total: f64 = d2.iter().map(|&d| f64::from(d)).sum();
        let pick = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            d2.iter()
                .position(|&d| {
                    target -= f64::from(d);
                    target <= 0.0
                })
                .unwrap_or(points.len() - 1)
        } else {
            0
        };
        let start = book.len();
        book.extend_from_slice(&points[pick]);
        for (d, p) in d2.iter_mut().zip(points) {
            *d = d.min(distance(p, &book[start..start + dim]));
        }
    }
    for _ in 0..ITERATIONS {
        let mut sums = vec![0.0f64; k * dim];
        let mut counts = vec![0usize; k];
        for p in points {
            let c = nearest(&book, dim, p);
            counts[c] += 1;
            for (s, x) in sums[c * dim..(c + 1) * dim].iter_mut().zip(p) {
                *s += f64::from(*x);
            }
        }
        let mut moved = false;
        for c in (0..k).filter(|&c| counts[c] > 0) {
            for (m, s) in book[c * dim..(c + 1) * dim]
                .iter_mut()
                .zip(&sums[c * dim..(c + 1) * dim])
            {
                let next = (s / counts[c] as f64) as f32;
                moved |= next != *m;
                *m = next;
            }
        }
        if !moved {
            break;
        }
    }
    book
}
