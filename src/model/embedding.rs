//! Feature embeddings (spec §2): one table per entity with a block of rows per sparse
//! field (see `features::encode`), plus a linear layer over the normalised dense fields.
//! An entity's vector is the concatenation of its field embeddings.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{embedding, linear, Embedding, Linear, VarBuilder};

use crate::features::{EncodedPools, FeatureEncoder};

/// [`EncodedPools`] as tensors.
#[derive(Debug, Clone)]
pub struct PoolTensors {
    pub user_sparse: Tensor,
    pub user_dense: Tensor,
    pub item_sparse: Tensor,
    pub item_dense: Tensor,
    /// `[b, n]`, 1 for a real candidate.
    pub mask: Tensor,
    pub lens: Vec<usize>,
}

impl PoolTensors {
    pub fn new(e: &EncodedPools, enc: &FeatureEncoder, device: &Device) -> Result<Self> {
        let (b, n) = (e.batch, e.max_items);
        let (us, ud) = enc.user_fields();
        let (is, id) = enc.item_fields();
        Ok(Self {
            user_sparse: Tensor::from_slice(&e.user_sparse, (b, us), device)?,
            user_dense: Tensor::from_slice(&e.user_dense, (b, ud), device)?,
            item_sparse: Tensor::from_slice(&e.item_sparse, (b, n, is), device)?,
            item_dense: Tensor::from_slice(&e.item_dense, (b, n, id), device)?,
            mask: Tensor::from_slice(&e.mask, (b, n), device)?,
            lens: e.lens.clone(),
        })
    }

    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    /// The pools of `rows` (repeats allowed), in that order.
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self> {
        let device = self.mask.device();
        let index = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            device,
        )?;
        let pick = |t: &Tensor| t.index_select(&index, 0);
        Ok(Self {
            user_sparse: pick(&self.user_sparse)?,
            user_dense: pick(&self.user_dense)?,
            item_sparse: pick(&self.item_sparse)?,
            item_dense: pick(&self.item_dense)?,
            mask: pick(&self.mask)?,
            lens: rows.iter().map(|&r| self.lens[r]).collect(),
        })
    }
}

/// Embeddings of one entity.
#[derive(Debug, Clone)]
struct EntityEmbedding {
    table: Option<Embedding>,
    dense: Option<Linear>,
    /// Sparse columns, the summed ones included.
    sparse_columns: usize,
    /// The last this many columns are one field: GR2's semantic id, the sum of its code
    /// tokens' embeddings (`features::SemanticIds`).
    summed: usize,
    dim: usize,
}

/// Sparse fields of `columns` columns whose last `summed` are added into one.
fn fields(columns: usize, summed: usize) -> usize {
    columns - summed.saturating_sub(1).min(columns)
}

impl EntityEmbedding {
    fn new(
        rows: usize,
        (columns, summed): (usize, usize),
        dense: usize,
        e: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            table: (columns > 0)
                .then(|| embedding(rows, e, vb.pp("table")))
                .transpose()?,
            dense: (dense > 0)
                .then(|| linear(dense, e, vb.pp("dense")))
                .transpose()?,
            sparse_columns: columns,
            summed,
            dim: e * (fields(columns, summed) + usize::from(dense > 0)),
        })
    }

    /// `sparse [.., f]` ids and `dense [.., g]` values -> `[.., dim]`.
    fn forward(&self, sparse: &Tensor, dense: &Tensor) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(2);
        if let Some(table) = &self.table {
            let mut emb = table.forward(sparse)?;
            let axis = sparse.rank() - 1;
            if self.summed > 1 {
                let looked_up = self.sparse_columns - self.summed;
                let code = emb
                    .narrow(axis, looked_up, self.summed)?
                    .sum_keepdim(axis)?;
                emb = Tensor::cat(&[&emb.narrow(axis, 0, looked_up)?, &code], axis)?;
            }
            let mut shape = sparse.dims().to_vec();
            shape[axis] = fields(self.sparse_columns, self.summed) * table.hidden_size();
            parts.push(emb.reshape(shape)?);
        }
        if let Some(linear) = &self.dense {
            parts.push(linear.forward(dense)?);
        }
        Tensor::cat(&parts, parts[0].rank() - 1)
    }
}

/// User and item embeddings.
#[derive(Debug, Clone)]
pub struct FeatureEmbedding {
    user: EntityEmbedding,
    item: EntityEmbedding,
}

impl FeatureEmbedding {
    pub fn new(enc: &FeatureEncoder, e: usize, vb: VarBuilder) -> Result<Self> {
        let (us, ud) = enc.user_fields();
        let (is, id) = enc.item_fields();
        if is + id == 0 {
            return Err(candle_core::Error::Msg(
                "items need at least one feature".into(),
            ));
        }
        Ok(Self {
            user: EntityEmbedding::new(enc.user_rows(), (us, 0), ud, e, vb.pp("user"))?,
            item: EntityEmbedding::new(
                enc.item_rows(),
                (is, enc.code_levels()),
                id,
                e,
                vb.pp("item"),
            )?,
        })
    }

    pub fn user_dim(&self) -> usize {
        self.user.dim
    }

    pub fn item_dim(&self) -> usize {
        self.item.dim
    }

    /// Sparse item fields: the first this many blocks of an item's vector, each one
    /// field's embedding of [`Self::field_dim`] (a semantic id's code counts as one).
    pub fn item_sparse_fields(&self) -> usize {
        fields(self.item.sparse_columns, self.item.summed)
    }

    /// Width of one field's embedding.
    pub fn field_dim(&self) -> usize {
        self.item.table.as_ref().map_or(0, Embedding::hidden_size)
    }

    /// `(user [b, du] or None without user features, items [b, n, di])`.
    pub fn forward(&self, pools: &PoolTensors) -> Result<(Option<Tensor>, Tensor)> {
        let user = (self.user.dim > 0)
            .then(|| self.user.forward(&pools.user_sparse, &pools.user_dense))
            .transpose()?;
        let items = self.item.forward(&pools.item_sparse, &pools.item_dense)?;
        Ok((user, items))
    }
}

/// `[items ; user]` on the feature axis, the user repeated over the pool (spec §3.1, §4).
pub fn join_user(items: &Tensor, user: Option<&Tensor>) -> Result<Tensor> {
    match user {
        None => Ok(items.clone()),
        Some(user) => {
            let (b, n, _) = items.dims3()?;
            let u = user.unsqueeze(1)?.broadcast_as((b, n, user.dim(1)?))?;
            Tensor::cat(&[items, &u.contiguous()?], 2)
        }
    }
}
