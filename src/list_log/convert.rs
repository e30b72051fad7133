//! [`LoggedList`] rows <-> Arrow record batches of [`log_schema`].

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, ListArray, MapArray,
    StringArray, StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::columns::{candidate_fields, list_item, log_schema, map_entries_field, LoggedList};
use crate::schema::{Candidate, Token, UserFeatures};

/// Accumulates many `BTreeMap<String, V>` into one map column.
struct MapColumn<V> {
    keys: Vec<String>,
    values: Vec<V>,
    lengths: Vec<usize>,
}

impl<V: Clone> MapColumn<V> {
    fn new() -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
            lengths: Vec::new(),
        }
    }

    fn push<'a, K: AsRef<str> + 'a>(&mut self, map: impl ExactSizeIterator<Item = (K, &'a V)>)
    where
        V: 'a,
    {
        self.lengths.push(map.len());
        for (k, v) in map {
            self.keys.push(k.as_ref().to_owned());
            self.values.push(v.clone());
        }
    }

    fn finish(self, value_type: DataType, values: ArrayRef) -> Result<MapArray, ArrowError> {
        let entries_field = map_entries_field(value_type);
        let DataType::Struct(fields) = entries_field.data_type() else {
            return Err(ArrowError::SchemaError(
                "map entries must be a struct".into(),
            ));
        };
        let keys: ArrayRef = Arc::new(StringArray::from_iter_values(&self.keys));
        let entries = StructArray::try_new(fields.clone(), vec![keys, values], None)?;
        MapArray::try_new(
            entries_field,
            OffsetBuffer::from_lengths(self.lengths),
            entries,
            None,
            false,
        )
    }
}

impl MapColumn<Token> {
    fn finish_strings(self) -> Result<MapArray, ArrowError> {
        let values: ArrayRef = Arc::new(StringArray::from_iter_values(
            self.values.iter().map(Token::as_str),
        ));
        self.finish(DataType::Utf8, values)
    }
}

impl MapColumn<f64> {
    fn finish_floats(self) -> Result<MapArray, ArrowError> {
        let values: ArrayRef = Arc::new(Float64Array::from(self.values.clone()));
        self.finish(DataType::Float64, values)
    }
}

fn list_column(
    item_type: DataType,
    lengths: Vec<usize>,
    values: ArrayRef,
) -> Result<ListArray, ArrowError> {
    ListArray::try_new(
        list_item(item_type),
        OffsetBuffer::from_lengths(lengths),
        values,
        None,
    )
}

/// Encodes rows as one record batch of the log schema.
pub fn to_record_batch(rows: &[LoggedList]) -> Result<RecordBatch, ArrowError> {
    let mut user_sparse = MapColumn::new();
    let mut user_dense = MapColumn::new();
    let mut cand_ids = Vec::new();
    let mut cand_sparse = MapColumn::new();
    let mut cand_dense = MapColumn::new();
    let mut cand_scores = Vec::new();
    let mut served = Vec::new();
    let mut clicks = Vec::new();
    for row in rows {
        user_sparse.push(row.user.sparse.iter());
        user_dense.push(row.user.dense.iter());
        for c in &row.candidates {
            cand_ids.push(c.item_id.as_str());
            cand_sparse.push(c.sparse.iter());
            cand_dense.push(c.dense.iter());
            cand_scores.push(c.upstream_score);
        }
        served.extend(row.served_items.iter().map(String::as_str));
        clicks.extend(row.clicks.iter().copied());
    }
    let candidates = StructArray::try_new(
        candidate_fields(),
        vec![
            Arc::new(StringArray::from_iter_values(cand_ids)),
            Arc::new(cand_sparse.finish_strings()?),
            Arc::new(cand_dense.finish_floats()?),
            Arc::new(Float64Array::from(cand_scores)),
        ],
        None,
    )?;
    let lengths = |f: fn(&LoggedList) -> usize| rows.iter().map(f).collect::<Vec<_>>();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.request_id),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.timestamp_ms),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.user.id.as_str()),
        )),
        Arc::new(user_sparse.finish_strings()?),
        Arc::new(user_dense.finish_floats()?),
        Arc::new(list_column(
            DataType::Struct(candidate_fields()),
            lengths(|r| r.candidates.len()),
            Arc::new(candidates),
        )?),
        Arc::new(list_column(
            DataType::Utf8,
            lengths(|r| r.served_items.len()),
            Arc::new(StringArray::from_iter_values(served)),
        )?),
        Arc::new(list_column(
            DataType::Boolean,
            lengths(|r| r.clicks.len()),
            Arc::new(BooleanArray::from(clicks)),
        )?),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.utility),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.model_version),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.exploration)),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.logging_policy.as_deref()),
        )),
        Arc::new(list_column(
            DataType::Float64,
            lengths(|r| r.propensities.len()),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().flat_map(|r| r.propensities.iter().copied()),
            )),
        )?),
    ];
    RecordBatch::try_new(log_schema(), columns)
}

/// Decodes a record batch read from a log file. The error says which column or row is
/// wrong; the caller adds the file name.
pub fn from_record_batch(batch: &RecordBatch) -> Result<Vec<LoggedList>, String> {
    let cols = Columns::new(batch)?;
    (0..batch.num_rows()).map(|i| cols.row(i)).collect()
}

/// Typed views of the columns of one batch.
struct Columns<'a> {
    request_id: &'a StringArray,
    timestamp_ms: &'a Int64Array,
    user_id: &'a StringArray,
    user_sparse: &'a MapArray,
    user_dense: &'a MapArray,
    candidates: &'a ListArray,
    cand_ids: &'a StringArray,
    cand_sparse: &'a MapArray,
    cand_dense: &'a MapArray,
    cand_scores: &'a Float64Array,
    served: &'a ListArray,
    served_ids: &'a StringArray,
    clicks: &'a ListArray,
    click_values: &'a BooleanArray,
    utility: &'a Float64Array,
    model_version: &'a StringArray,
    exploration: &'a BooleanArray,
    /// Schema version 2's columns; absent from version 1 files.
    logging_policy: Option<&'a StringArray>,
    propensities: Option<(&'a ListArray, &'a Float64Array)>,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, String> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("missing column `{name}`"))?;
    if col.null_count() > 0 {
        return Err(format!("column `{name}` has nulls"));
    }
    Ok(col)
}

fn wrong(name: &str, expected: &str, got: &DataType) -> String {
    format!("column `{name}` is {got}, expected {expected}")
}

fn strings<'a>(name: &str, a: &'a dyn Array) -> Result<&'a StringArray, String> {
    a.as_string_opt::<i32>()
        .ok_or_else(|| wrong(name, "Utf8", a.data_type()))
}

fn list<'a>(name: &str, a: &'a dyn Array) -> Result<&'a ListArray, String> {
    a.as_list_opt::<i32>()
        .ok_or_else(|| wrong(name, "List", a.data_type()))
}

fn map<'a>(name: &str, a: &'a dyn Array) -> Result<&'a MapArray, String> {
    a.as_map_opt()
        .ok_or_else(|| wrong(name, "Map", a.data_type()))
}

fn floats<'a>(name: &str, a: &'a dyn Array) -> Result<&'a Float64Array, String> {
    a.as_primitive_opt::<Float64Type>()
        .ok_or_else(|| wrong(name, "Float64", a.data_type()))
}

fn booleans<'a>(name: &str, a: &'a dyn Array) -> Result<&'a BooleanArray, String> {
    a.as_boolean_opt()
        .ok_or_else(|| wrong(name, "Boolean", a.data_type()))
}

fn struct_field<'a>(s: &'a StructArray, name: &str) -> Result<&'a ArrayRef, String> {
    s.column_by_name(name)
        .ok_or_else(|| format!("candidates lack field `{name}`"))
}

impl<'a> Columns<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Self, String> {
        let candidates = list("candidates", column(batch, "candidates")?)?;
        let cand = candidates
            .values()
            .as_struct_opt()
            .ok_or_else(|| wrong("candidates", "List<Struct>", candidates.data_type()))?;
        let served = list("served_items", column(batch, "served_items")?)?;
        let clicks = list("clicks", column(batch, "clicks")?)?;
        let timestamp = column(batch, "timestamp_ms")?;
        Ok(Self {
            request_id: strings("request_id", column(batch, "request_id")?)?,
            timestamp_ms: timestamp
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| wrong("timestamp_ms", "Int64", timestamp.data_type()))?,
            user_id: strings("user_id", column(batch, "user_id")?)?,
            user_sparse: map("user_sparse", column(batch, "user_sparse")?)?,
            user_dense: map("user_dense", column(batch, "user_dense")?)?,
            candidates,
            cand_ids: strings("candidates.item_id", struct_field(cand, "item_id")?)?,
            cand_sparse: map("candidates.sparse", struct_field(cand, "sparse")?)?,
            cand_dense: map("candidates.dense", struct_field(cand, "dense")?)?,
            cand_scores: floats(
                "candidates.upstream_score",
                struct_field(cand, "upstream_score")?,
            )?,
            served,
            served_ids: strings("served_items", served.values())?,
            clicks,
            click_values: booleans("clicks", clicks.values())?,
            utility: floats("utility", column(batch, "utility")?)?,
            model_version: strings("model_version", column(batch, "model_version")?)?,
            exploration: booleans("exploration", column(batch, "exploration")?)?,
            logging_policy: batch
                .column_by_name("logging_policy")
                .map(|c| strings("logging_policy", c))
                .transpose()?,
            propensities: batch
                .column_by_name("propensities")
                .map(|_| {
                    let lists = list("propensities", column(batch, "propensities")?)?;
                    Ok::<_, String>((lists, floats("propensities", lists.values())?))
                })
                .transpose()?,
        })
    }

    fn row(&self, i: usize) -> Result<LoggedList, String> {
        let user = UserFeatures {
            id: Token(self.user_id.value(i).to_owned()),
            sparse: sparse_map("user_sparse", self.user_sparse, i)?,
            dense: dense_map("user_dense", self.user_dense, i)?,
        };
        let candidates = range(self.candidates, i)
            .map(|j| {
                Ok(Candidate {
                    item_id: Token(self.cand_ids.value(j).to_owned()),
                    sparse: sparse_map("candidates.sparse", self.cand_sparse, j)?,
                    dense: dense_map("candidates.dense", self.cand_dense, j)?,
                    upstream_score: self
                        .cand_scores
                        .is_valid(j)
                        .then(|| self.cand_scores.value(j)),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let served_items: Vec<String> = range(self.served, i)
            .map(|j| self.served_ids.value(j).to_owned())
            .collect();
        let clicks: Vec<bool> = range(self.clicks, i)
            .map(|j| self.click_values.value(j))
            .collect();
        let row = LoggedList {
            request_id: self.request_id.value(i).to_owned(),
            timestamp_ms: self.timestamp_ms.value(i),
            user,
            candidates,
            served_items,
            clicks,
            utility: self.utility.value(i),
            model_version: self.model_version.value(i).to_owned(),
            exploration: self.exploration.value(i),
            logging_policy: self
                .logging_policy
                .filter(|p| p.is_valid(i))
                .map(|p| p.value(i).to_owned()),
            propensities: self
                .propensities
                .map(|(lists, values)| range(lists, i).map(|j| values.value(j)).collect())
                .unwrap_or_default(),
        };
        check_row(&row).map_err(|e| format!("row {i} (request {}): {e}", row.request_id))?;
        Ok(row)
    }
}

/// Invariants a log row must satisfy for training to trust it.
fn check_row(row: &LoggedList) -> Result<(), String> {
    if row.clicks.len() != row.served_items.len() {
        return Err(format!(
            "{} clicks for {} served items",
            row.clicks.len(),
            row.served_items.len()
        ));
    }
    let indices = row
        .served_indices()
        .map_err(|id| format!("served item {id:?} is not in the candidate pool"))?;
    let mut seen = vec![false; row.candidates.len()];
    for j in indices {
        if std::mem::replace(&mut seen[j], true) {
            return Err(format!(
                "item {:?} served twice",
                row.candidates[j].item_id.0
            ));
        }
    }
    if !row.utility.is_finite() {
        return Err(format!("utility {} is not finite", row.utility));
    }
    if !row.propensities.is_empty() && row.propensities.len() != row.served_items.len() {
        return Err(format!(
            "{} propensities for {} served items",
            row.propensities.len(),
            row.served_items.len()
        ));
    }
    if let Some(p) = row.propensities.iter().find(|p| !(**p > 0.0 && **p <= 1.0)) {
        return Err(format!("propensity {p} is not a probability in (0, 1]"));
    }
    Ok(())
}

fn range(list: &ListArray, i: usize) -> std::ops::Range<usize> {
    let offsets = list.value_offsets();
    // Offsets are validated non-negative and monotone by arrow when the array is built.
    offsets[i] as usize..offsets[i + 1] as usize
}

fn map_range(m: &MapArray, i: usize) -> std::ops::Range<usize> {
    let offsets = m.value_offsets();
    offsets[i] as usize..offsets[i + 1] as usize
}

fn sparse_map(name: &str, m: &MapArray, i: usize) -> Result<BTreeMap<String, Token>, String> {
    let keys = strings(name, m.keys())?;
    let values = strings(name, m.values())?;
    Ok(map_range(m, i)
        .map(|j| (keys.value(j).to_owned(), Token(values.value(j).to_owned())))
        .collect())
}

fn dense_map(name: &str, m: &MapArray, i: usize) -> Result<BTreeMap<String, f64>, String> {
    let keys = strings(name, m.keys())?;
    let values = floats(name, m.values())?;
    Ok(map_range(m, i)
        .map(|j| (keys.value(j).to_owned(), values.value(j)))
        .collect())
}
