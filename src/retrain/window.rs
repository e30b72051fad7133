//! The round's data: the newest lists of the log (a sliding window by publish time)
//! and its split into the parts a round trains, stops early, judges and gates on.

use std::path::{Path, PathBuf};

use super::{io, Round, RoundError};
use crate::encoded::{encode_rows, is_validation, Example};
use crate::features::FeatureEncoder;
use crate::list_log::{row_count, LogReader, LoggedList};
use crate::model::DataPart;
use crate::train::TrainError;

/// The window, split. The hold-out is the newest `holdout_share` of it and is never
/// trained on; the rest is split by a hash of request_id into the candidate's training
/// part, its early-stopping part and the gate judge's part.
pub(super) struct Window {
    /// Lists read (after de-duplication).
    pub lists: usize,
    pub holdout_rows: Vec<LoggedList>,
    pub holdout: Vec<Example>,
    pub train_lists: usize,
    pub fit: Vec<Example>,
    pub early: Vec<Example>,
    pub judge_fit: Vec<Example>,
}

impl Window {
    pub fn read(round: &Round<'_>, encoder: &FeatureEncoder) -> Result<Self, RoundError> {
        let mut rows = read_window(round.logs, round.trainer.window_lists)?;
        let lists = rows.len();
        let holdout_len = ((lists as f64) * round.trainer.holdout_share).ceil() as usize;
        if lists < 10 || holdout_len == 0 || holdout_len >= lists {
            return Err(RoundError::TooFewLists(lists));
        }
        let holdout_rows = rows.split_off(lists - holdout_len);
        let train_examples = encode_rows(&rows, encoder, round.logs).map_err(TrainError::from)?;
        let holdout = encode_rows(&holdout_rows, encoder, round.logs).map_err(TrainError::from)?;
        // Early stopping inside the training part: the hold-out only judges.
        let validation_share = round.training.validation_share.max(0.05);
        let (mut fit, mut early, mut judge_fit) = (Vec::new(), Vec::new(), Vec::new());
        for (row, e) in rows.iter().zip(train_examples) {
            if is_validation(&row.request_id, validation_share) {
                early.push(e);
            } else if DataPart::Judge.contains(&row.request_id, round.trainer.judge_share) {
                judge_fit.push(e);
            } else {
                fit.push(e);
            }
        }
        if fit.is_empty() || judge_fit.is_empty() {
            return Err(RoundError::TooFewLists(lists));
        }
        Ok(Self {
            lists,
            train_lists: rows.len(),
            holdout_rows,
            holdout,
            fit,
            early,
            judge_fit,
        })
    }
}

/// Published list-log files of `logs` (a directory or glob) with their row counts
/// (from the Parquet footers, nothing decoded), oldest publish first.
fn files_by_publish_time(logs: &str) -> Result<Vec<(PathBuf, usize)>, RoundError> {
    let reader = LogReader::open(logs, 1).map_err(TrainError::from)?;
    let mut files = Vec::new();
    for path in reader.files() {
        let published = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(io(path))?;
        let rows = row_count(path).map_err(TrainError::from)?;
        files.push((published, path.clone(), rows));
    }
    // Publish time, not name: instances of the logger name their files apart.
    files.sort();
    Ok(files.into_iter().map(|(_, p, n)| (p, n)).collect())
}

/// The newest `window` lists of the log (by publish time of their files), oldest
/// first; only the newest files that hold them are read, one batch at a time, and
/// duplicates are removed on read.
pub fn read_window(logs: &str, window: usize) -> Result<Vec<LoggedList>, RoundError> {
    let files = files_by_publish_time(logs)?;
    let mut newest = Vec::new();
    let mut rows_in = 0;
    for (path, rows) in files.into_iter().rev() {
        if rows_in >= window {
            break;
        }
        rows_in += rows;
        newest.push(path);
    }
    newest.reverse();
    let reader = LogReader::from_files(newest, 4096).map_err(TrainError::from)?;
    let mut rows: std::collections::VecDeque<LoggedList> = std::collections::VecDeque::new();
    for batch in reader.batches() {
        for row in batch.map_err(TrainError::from)? {
            if rows.len() == window {
                rows.pop_front();
            }
            rows.push_back(row);
        }
    }
    Ok(rows.into())
}

/// Lists in the log (from the files' footers, nothing decoded); 0 when there is no
/// log yet.
pub fn count_lists(logs: &Path) -> Result<usize, RoundError> {
    match files_by_publish_time(&logs.display().to_string()) {
        Ok(files) => Ok(files.iter().map(|(_, n)| n).sum()),
        Err(RoundError::Train(TrainError::Log(crate::list_log::LogError::NoFiles(_)))) => Ok(0),
        Err(e) => Err(e),
    }
}
