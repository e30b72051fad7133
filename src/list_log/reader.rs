//! Streaming reader over a glob of log files: one file open at a time, one batch of rows
//! decoded at a time, so a data set larger than memory reads fine.
//!
//! Rows repeating a request_id already read are dropped: the feedback logger is
//! at-least-once, and a logger that crashes after publishing a file but before
//! committing its offsets writes those lists again (duplicates are removed on read).
//! The reader remembers one 64-bit hash per list, 8 bytes each.

use std::collections::HashSet;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use arrow::array::StringArray;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use super::columns::LoggedList;
use super::convert::from_record_batch;
use super::LogError;

/// The published log files matching a pattern.
#[derive(Debug, Clone)]
pub struct LogReader {
    files: Vec<PathBuf>,
    batch_rows: usize,
}

impl LogReader {
    /// `pattern` is a glob (`data/logs/*.parquet`) or a directory (all its `*.parquet`).
    /// Files are read in name order; no match is an error.
    pub fn open(pattern: &str, batch_rows: usize) -> Result<Self, LogError> {
        let glob_pattern = if Path::new(pattern).is_dir() {
            format!("{}/*.parquet", pattern.trim_end_matches('/'))
        } else {
            pattern.to_owned()
        };
        let paths = glob::glob(&glob_pattern).map_err(|e| LogError::Glob {
            pattern: pattern.to_owned(),
            message: e.to_string(),
        })?;
        let mut files = Vec::new();
        for path in paths {
            let path = path.map_err(|e| {
                let at = e.path().to_owned();
                LogError::io(&at, e.into())
            })?;
            if path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(LogError::NoFiles(pattern.to_owned()));
        }
        Ok(Self {
            files,
            batch_rows: batch_rows.max(1),
        })
    }

    /// These files, read in the given order.
    pub fn from_files(files: Vec<PathBuf>, batch_rows: usize) -> Result<Self, LogError> {
        if files.is_empty() {
            return Err(LogError::NoFiles("(an empty file list)".into()));
        }
        Ok(Self {
            files,
            batch_rows: batch_rows.max(1),
        })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Batches of at most `batch_rows` rows, file after file.
    pub fn batches(&self) -> LogBatches<'_> {
        LogBatches {
            reader: self,
            next_file: 0,
            current: None,
            seen: HashSet::new(),
            duplicates: 0,
        }
    }
}

/// Iterator returned by [`LogReader::batches`].
pub struct LogBatches<'a> {
    reader: &'a LogReader,
    next_file: usize,
    current: Option<(PathBuf, ParquetRecordBatchReader)>,
    /// Hashes of the request ids read so far.
    seen: HashSet<u64>,
    duplicates: usize,
}

impl std::fmt::Debug for LogBatches<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBatches")
            .field("next_file", &self.next_file)
            .finish_non_exhaustive()
    }
}

impl LogBatches<'_> {
    /// The file the last batch came from (`None` before the first).
    pub fn current_file(&self) -> Option<&Path> {
        self.current.as_ref().map(|(path, _)| path.as_path())
    }

    /// Rows dropped so far because their request_id was read before.
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    fn first_time(&mut self, rows: Vec<LoggedList>) -> Vec<LoggedList> {
        let before = rows.len();
        let fresh: Vec<LoggedList> = rows
            .into_iter()
            .filter(|r| {
                let mut h = std::hash::DefaultHasher::new();
                r.request_id.hash(&mut h);
                self.seen.insert(h.finish())
            })
            .collect();
        self.duplicates += before - fresh.len();
        fresh
    }

    fn open_next(&mut self) -> Option<Result<(), LogError>> {
        let path = self.reader.files.get(self.next_file)?.clone();
        self.next_file += 1;
        let opened = File::open(&path)
            .map_err(|e| LogError::io(&path, e))
            .and_then(|f| {
                ParquetRecordBatchReaderBuilder::try_new(f)
                    .and_then(|b| b.with_batch_size(self.reader.batch_rows).build())
                    .map_err(|e| LogError::parquet(&path, e))
            });
        Some(opened.map(|r| self.current = Some((path, r))))
    }
}

impl Iterator for LogBatches<'_> {
    type Item = Result<Vec<LoggedList>, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((path, reader)) = &mut self.current {
                match reader.next() {
                    Some(Ok(batch)) => {
                        let rows = match from_record_batch(&batch) {
                            Ok(rows) => rows,
                            Err(message) => {
                                return Some(Err(LogError::BadFile {
                                    path: path.clone(),
                                    message,
                                }))
                            }
                        };
                        let fresh = self.first_time(rows);
                        if !fresh.is_empty() {
                            return Some(Ok(fresh));
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        let err = LogError::BadFile {
                            path: path.clone(),
                            message: e.to_string(),
                        };
                        self.current = None;
                        return Some(Err(err));
                    }
                    None => self.current = None,
                }
            }
            if let Err(e) = self.open_next()? {
                return Some(Err(e));
            }
        }
    }
}

/// The rows of a published log file, from its Parquet footer (nothing decoded).
pub fn row_count(path: &Path) -> Result<usize, LogError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = File::open(path).map_err(|e| LogError::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| LogError::parquet(path, e))?;
    Ok(reader.metadata().file_metadata().num_rows().max(0) as usize)
}

/// The request ids of the newest published lists in `dir`, oldest first, from the
/// newest files holding at least `limit` of them: what a restarted logger has already written, so that a re-read duplicate of
/// one of them is recognised instead of going to the side file. Reads only the
/// `request_id` column. A directory without log files yields none.
pub fn recent_request_ids(dir: &Path, limit: usize) -> Result<Vec<String>, LogError> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        let path = entry.path();
        // Published files only: in-progress ones are `.name.parquet.tmp`.
        if path.extension().is_some_and(|e| e == "parquet") && path.is_file() {
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(|e| LogError::io(&path, e))?;
            files.push((modified, path));
        }
    }
    files.sort();
    let (mut newest_first, mut count) = (Vec::new(), 0);
    for (_, path) in files.into_iter().rev() {
        if count >= limit {
            break;
        }
        let mut ids = Vec::new();
        let file = File::open(&path).map_err(|e| LogError::io(&path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| LogError::parquet(&path, e))?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["request_id"]);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| LogError::parquet(&path, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| LogError::BadFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let column = batch
                .column_by_name("request_id")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| LogError::BadFile {
                    path: path.clone(),
                    message: "no request_id column of strings".into(),
                })?;
            ids.extend(column.iter().flatten().map(str::to_owned));
        }
        count += ids.len();
        newest_first.push(ids);
    }
    Ok(newest_first.into_iter().rev().flatten().collect())
}
