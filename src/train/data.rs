//! Training data: logged lists read as a stream and kept only in compact, encoded form.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::encoded::{is_cold_item, is_validation, Example};
use crate::features::{DenseNormaliser, FeatureEncoder, FeatureSpec, NormaliserFit};
use crate::list_log::{LogError, LogReader, LoggedList};
pub use crate::model::DataPart;

use super::TrainError;

/// Train / validation examples and the fitted feature encoder.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub encoder: FeatureEncoder,
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
}

/// Which logged lists a [`Dataset`] keeps for training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Split {
    /// Share of all lists held out for validation.
    pub validation_share: f64,
    /// Share of the training lists reserved for the judge.
    pub judge_share: f64,
    pub part: DataPart,
    /// Share of items never seen in training ([`is_cold_item`]): a list that displayed
    /// one is dropped, and they leave the pools of the others, so neither the models
    /// nor the fitted features (normaliser, semantic ids) learn anything of them.
    pub cold_item_share: f64,
}

impl Split {
    /// All training lists, `validation_share` held out.
    pub fn all(validation_share: f64) -> Self {
        Self {
            validation_share,
            judge_share: 0.0,
            part: DataPart::All,
            cold_item_share: 0.0,
        }
    }

    /// The list as training sees it: without its cold items, or `None` when it
    /// displayed one (its clicks were on a list training cannot show).
    fn warm<'a>(&self, row: &'a LoggedList) -> Option<std::borrow::Cow<'a, LoggedList>> {
        let share = self.cold_item_share;
        if share <= 0.0 {
            return Some(std::borrow::Cow::Borrowed(row));
        }
        if row
            .served_items
            .iter()
            .any(|id| is_cold_item(id.as_str(), share))
        {
            return None;
        }
        let mut warm = row.clone();
        warm.candidates
            .retain(|c| !is_cold_item(c.item_id.as_str(), share));
        Some(std::borrow::Cow::Owned(warm))
    }
}

/// Most distinct items semantic ids are fitted on (the first seen, by item id order of
/// the logs): k-means cost grows with them, and codebooks of a few dozen codes per level
/// settle long before.
const MAX_TOKENIZER_ITEMS: usize = 200_000;

/// Calls `each` on every list of `reader` that `split` keeps, with the file it is in.
fn read(
    reader: &LogReader,
    split: &Split,
    mut each: impl FnMut(&LoggedList, &Path) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    let mut batches = reader.batches();
    while let Some(batch) = batches.next() {
        let rows = batch?;
        let file = batches
            .current_file()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for row in rows {
            if let Some(row) = split.warm(&row) {
                each(&row, &file)?;
            }
        }
    }
    Ok(())
}

impl Dataset {
    /// Reads logs and encodes them, keeping the training lists of `split.part`. Without
    /// a `fitted` encoder (a bundle's), a first pass fits the normaliser and the semantic
    /// ids on every training list, whatever the part: feature scaling and item codes
    /// learn nothing from clicks, and a judge and the models it judges then encode pools
    /// alike. Only encoded examples are kept in memory.
    pub fn load(
        pattern: &str,
        spec: &FeatureSpec,
        split: Split,
        fitted: Option<FeatureEncoder>,
    ) -> Result<Self, TrainError> {
        let validation_share = split.validation_share;
        let reader = LogReader::open(pattern, 4096)?;
        // The semantic ids are fitted on every file's items: a failure names the set.
        let bad = |message: String| {
            TrainError::Log(LogError::BadFile {
                path: PathBuf::from(pattern),
                message,
            })
        };
        let encoder = match fitted {
            Some(encoder) => encoder,
            None => {
                let mut fit = NormaliserFit::default();
                let mut items = BTreeMap::new();
                let tokenized = spec.semantic_ids.is_some();
                read(&reader, &split, |row, _| {
                    if !is_validation(&row.request_id, validation_share) {
                        fit.add_user(&spec.user, &row.user.dense);
                        for c in &row.candidates {
                            fit.add_item(&spec.item, c);
                            if tokenized && items.len() < MAX_TOKENIZER_ITEMS {
                                items
                                    .entry(c.item_id.0.clone())
                                    .or_insert_with(|| c.clone());
                            }
                        }
                    }
                    Ok(())
                })?;
                let encoder = FeatureEncoder::new(spec.clone(), fit.finish(&spec.user, &spec.item))
                    .fit_semantic_ids(&items)
                    .map_err(|m| bad(format!("semantic ids: {m}")))?;
                if let Some(ids) = encoder.semantic_ids() {
                    tracing::info!(
                        items = ids.items,
                        content_uniqueness = ids.content_uniqueness,
                        uniqueness = ids.uniqueness,
                        levels = ids.levels(),
                        codes = ids.codes_per_level(),
                        "semantic ids fitted"
                    );
                }
                encoder
            }
        };
        Self::encode(&reader, encoder, split)
    }

    fn encode(
        reader: &LogReader,
        encoder: FeatureEncoder,
        split: Split,
    ) -> Result<Self, TrainError> {
        let mut train = Vec::new();
        let mut validation = Vec::new();
        read(reader, &split, |row, file| {
            let validating = is_validation(&row.request_id, split.validation_share);
            if !validating && !split.part.contains(&row.request_id, split.judge_share) {
                return Ok(());
            }
            let example = Example::from_logged(row, &encoder).map_err(|message| {
                TrainError::Log(LogError::BadFile {
                    path: file.to_owned(),
                    message,
                })
            })?;
            if validating {
                validation.push(example);
            } else {
                train.push(example);
            }
            Ok(())
        })?;
        if train.is_empty() && validation.is_empty() {
            return Err(TrainError::Empty(reader.files().len()));
        }
        Ok(Self {
            encoder,
            train,
            validation,
        })
    }

    /// Every logged list of `pattern`, encoded with an existing encoder (a bundle's).
    pub fn load_all(pattern: &str, encoder: FeatureEncoder) -> Result<Vec<Example>, TrainError> {
        let reader = LogReader::open(pattern, 4096)?;
        Ok(Self::encode(&reader, encoder, Split::all(0.0))?.train)
    }

    pub fn normaliser(&self) -> &DenseNormaliser {
        self.encoder.normaliser()
    }
}
