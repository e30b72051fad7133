//! User and video feature files: the pipeline's declared fields, looked up by column
//! name, read into memory for the ids the log needs.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::features::{EntityFeatures, UPSTREAM_SCORE};
use crate::import::{CsvTable, ImportError};
use crate::schema::{DenseFeatures, SparseFeatures};

/// The features of one user or one video.
#[derive(Debug, Clone, Default)]
pub struct Entity {
    pub sparse: SparseFeatures,
    pub dense: DenseFeatures,
}

/// Where each declared field is read: (field, table index, column index), once per
/// table that has the column (the 1K/27K releases split large files into parts with the
/// same columns).
#[derive(Debug)]
struct FieldColumns {
    sparse: Vec<(String, usize, usize)>,
    dense: Vec<(String, usize, usize)>,
}

fn locate(
    entity: &'static str,
    spec: &EntityFeatures,
    tables: &[CsvTable],
) -> Result<FieldColumns, ImportError> {
    let find = |field: &str| -> Result<Vec<(String, usize, usize)>, ImportError> {
        let found: Vec<_> = tables
            .iter()
            .enumerate()
            .filter_map(|(t, table)| table.find_column(field).map(|c| (field.to_owned(), t, c)))
            .collect();
        if found.is_empty() {
            return Err(ImportError::UndeclaredColumn {
                entity,
                field: field.to_owned(),
                files: tables
                    .iter()
                    .map(|t| t.path().display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(found)
    };
    let all = |fields: Vec<&String>| -> Result<Vec<_>, ImportError> {
        Ok(fields
            .into_iter()
            .map(|f| find(f))
            .collect::<Result<Vec<_>, _>>()?
            .concat())
    };
    Ok(FieldColumns {
        sparse: all(spec.sparse.keys().collect())?,
        // The upstream score is the candidate's own field, not a column (KuaiRand has no
        // upstream ranker scores).
        dense: all(spec
            .dense
            .keys()
            .filter(|f| f.as_str() != UPSTREAM_SCORE)
            .collect())?,
    })
}

/// Reads the declared fields of every entity whose `key` column passes `keep`, merging
/// rows of several tables (video basic + statistic). Empty cells are nulls: the field is
/// left out (the encoder treats it as missing) and counted in `nulls` by
/// `file:column`.
pub fn read_entities(
    entity: &'static str,
    spec: &EntityFeatures,
    paths: &[&Path],
    key: &str,
    keep: impl Fn(&str) -> bool,
    nulls: &mut BTreeMap<String, u64>,
) -> Result<HashMap<String, Entity>, ImportError> {
    let mut tables = paths
        .iter()
        .map(|p| CsvTable::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let fields = locate(entity, spec, &tables)?;
    let mut out: HashMap<String, Entity> = HashMap::new();
    for (t, table) in tables.iter_mut().enumerate() {
        let key_column = table.column(key)?;
        let file = table
            .path()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        while table.next_record()? {
            let id = table.required(key_column)?;
            if !keep(id) {
                continue;
            }
            let id = id.to_owned();
            let mut row = Entity::default();
            for (field, _, column) in fields.sparse.iter().filter(|f| f.1 == t) {
                match table.text(*column) {
                    Some(v) => {
                        row.sparse.insert(field.clone(), v.into());
                    }
                    None => *nulls.entry(format!("{file}:{field}")).or_default() += 1,
                }
            }
            for (field, _, column) in fields.dense.iter().filter(|f| f.1 == t) {
                match table.number(*column)? {
                    Some(v) => {
                        row.dense.insert(field.clone(), v);
                    }
                    None => *nulls.entry(format!("{file}:{field}")).or_default() += 1,
                }
            }
            let merged = out.entry(id).or_default();
            merged.sparse.append(&mut row.sparse);
            merged.dense.append(&mut row.dense);
        }
    }
    Ok(out)
}
