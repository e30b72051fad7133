//! Training data: logged lists read as a stream and kept only in compact, encoded form.

use crate::features::{DenseNormaliser, EncodedPools, FeatureEncoder, FeatureSpec, NormaliserFit};
use crate::list_log::{LogError, LogReader, LoggedList};
pub use crate::model::DataPart;

use super::TrainError;

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

/// Train / validation examples and the fitted feature encoder.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub encoder: FeatureEncoder,
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
}

/// Validation membership by a hash of the request id: stable whatever the file order.
pub(crate) fn is_validation(request_id: &str, share: f64) -> bool {
    let h = crate::features::hash_bucket("split", request_id, 1_000_000);
    f64::from(h - 1) < share * 1_000_000.0
}

/// Which logged lists a [`Dataset`] keeps for training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Split {
    /// Share of all lists held out for validation.
    pub validation_share: f64,
    /// Share of the training lists reserved for the judge.
    pub judge_share: f64,
    pub part: DataPart,
}

impl Split {
    /// All training lists, `validation_share` held out.
    pub fn all(validation_share: f64) -> Self {
        Self {
            validation_share,
            judge_share: 0.0,
            part: DataPart::All,
        }
    }
}

fn read(
    reader: &LogReader,
    mut each: impl FnMut(&LoggedList) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    for batch in reader.batches() {
        for row in batch? {
            each(&row)?;
        }
    }
    Ok(())
}

impl Dataset {
    /// Reads logs and encodes them, keeping the training lists of `split.part`. Without
    /// a `normaliser`, a first pass fits one on every training list, whatever the part:
    /// feature scaling learns nothing from clicks, and a judge and the models it judges
    /// then encode pools alike. Only encoded examples are kept in memory.
    pub fn load(
        pattern: &str,
        spec: &FeatureSpec,
        split: Split,
        normaliser: Option<DenseNormaliser>,
    ) -> Result<Self, TrainError> {
        let validation_share = split.validation_share;
        let reader = LogReader::open(pattern, 4096)?;
        let normaliser = match normaliser {
            Some(n) => n,
            None => {
                let mut fit = NormaliserFit::default();
                read(&reader, |row| {
                    if !is_validation(&row.request_id, validation_share) {
                        fit.add_user(&spec.user, &row.user.dense);
                        for c in &row.candidates {
                            fit.add_item(&spec.item, c);
                        }
                    }
                    Ok(())
                })?;
                fit.finish(&spec.user, &spec.item)
            }
        };
        Self::encode(
            &reader,
            FeatureEncoder::new(spec.clone(), normaliser),
            split,
        )
    }

    fn encode(
        reader: &LogReader,
        encoder: FeatureEncoder,
        split: Split,
    ) -> Result<Self, TrainError> {
        let mut train = Vec::new();
        let mut validation = Vec::new();
        read(reader, |row| {
            let validating = is_validation(&row.request_id, split.validation_share);
            if !validating && !split.part.contains(&row.request_id, split.judge_share) {
                return Ok(());
            }
            let example = Example::from_logged(row, &encoder).map_err(|message| {
                TrainError::Log(LogError::BadFile {
                    path: reader.files().first().cloned().unwrap_or_default(),
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
