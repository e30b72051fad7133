//! Parquet list logs: the schema, a crash-safe rolling writer and a streaming reader.

mod columns;
mod convert;
mod reader;
mod writer;

use std::path::{Path, PathBuf};

pub use columns::{log_schema, LoggedList, LOG_SCHEMA_VERSION, LOG_SCHEMA_VERSION_KEY};
pub use convert::{from_record_batch, to_record_batch};
pub use reader::{recent_request_ids, row_count, LogBatches, LogReader};
pub use writer::{LogWriter, ParquetRows, RollPolicy};

/// `options` creating files readable by their owner and group only: logged lists hold
/// users' features (personal data), so they are not world-readable.
pub fn private_file(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640)
    }
    #[cfg(not(unix))]
    {
        options
    }
}

/// Errors reading or writing log files.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: parquet error: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("{path} is not a valid list log: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("cannot encode rows as Arrow (a bug in eglr): {0}")]
    Encode(arrow::error::ArrowError),
    #[error("bad glob pattern {pattern:?}: {message}")]
    Glob { pattern: String, message: String },
    #[error("no log files match {0:?}")]
    NoFiles(String),
    #[error("log file prefix {0:?} must be a plain, non-empty name not starting with '.'")]
    BadPrefix(String),
    #[error("internal error: no open log file")]
    NotOpen,
    #[error("another live writer holds {0} (two instances with the same name? give each its own --instance)")]
    Locked(PathBuf),
}

impl crate::fault::HasFault for LogError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            LogError::Io { source, .. } => Fault::of_io(source),
            // A file that does not parse as a list log stays broken on a retry.
            LogError::Parquet { .. }
            | LogError::BadFile { .. }
            | LogError::Glob { .. }
            | LogError::NoFiles(_)
            | LogError::BadPrefix(_)
            | LogError::Locked(_) => Fault::Input,
            LogError::Encode(_) | LogError::NotOpen => Fault::Bug,
        }
    }
}

impl LogError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn parquet(path: &Path, source: parquet::errors::ParquetError) -> Self {
        LogError::Parquet {
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
