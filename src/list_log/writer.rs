//! Rolling Parquet writer that only ever publishes complete files.
//!
//! A file is written under a hidden temporary name (`.NAME.parquet.tmp`), and published
//! by: writing the footer, `fsync` of the file, `rename` to `NAME.parquet`, `fsync` of the
//! directory. Readers only look at `*.parquet`, so a crash at any point leaves either no
//! file or a complete one — never a half file that a reader picks up. Leftover temporary
//! files of the same prefix are removed when a writer starts.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::columns::{log_schema, LoggedList};
use super::convert::to_record_batch;

/// Rows that have a fixed Arrow schema: what a [`LogWriter`] can write.
pub trait ParquetRows: Sized {
    fn schema() -> SchemaRef;
    fn to_batch(rows: &[Self]) -> Result<RecordBatch, ArrowError>;
}

impl ParquetRows for LoggedList {
    fn schema() -> SchemaRef {
        log_schema()
    }

    fn to_batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        to_record_batch(rows)
    }
}
use super::LogError;

/// When to close a file and start the next one.
#[derive(Debug, Clone)]
pub struct RollPolicy {
    /// Close once the file (written + buffered) reaches this many bytes.
    pub max_bytes: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}

/// Writes rows (by default [`LoggedList`], the list log) into `DIR/PREFIX-SEQ.parquet`
/// files.
#[derive(Debug)]
pub struct LogWriter<R: ParquetRows = LoggedList> {
    dir: PathBuf,
    prefix: String,
    policy: RollPolicy,
    next_seq: u64,
    open: Option<OpenFile>,
    /// An exclusive lock on `DIR/.PREFIX.lock`, held while the writer lives (the OS
    /// releases it when the process dies, so a restart after a crash takes it again).
    _lock: File,
    rows: std::marker::PhantomData<fn(&[R])>,
}

struct OpenFile {
    writer: ArrowWriter<File>,
    temp: PathBuf,
    target: PathBuf,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("temp", &self.temp)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl<R: ParquetRows> LogWriter<R> {
    /// Prepares `dir` (created if missing). Files continue the sequence of any published
    /// files of the same `prefix`. Two live writers cannot share a prefix: the second
    /// is refused ([`LogError::Locked`]) before it touches anything.
    pub fn create(dir: &Path, prefix: &str, policy: RollPolicy) -> Result<Self, LogError> {
        if prefix.is_empty() || prefix.contains(['/', '\\']) || prefix.starts_with('.') {
            return Err(LogError::BadPrefix(prefix.to_owned()));
        }
        std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let lock_path = dir.join(format!(".{prefix}.lock"));
        let lock = File::create(&lock_path).map_err(|e| LogError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogError::Locked(lock_path));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LogError::io(&lock_path, e)),
        }
        let mut next_seq = 0;
        for entry in std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
            let entry = entry.map_err(|e| LogError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!(".{prefix}-")) && name.ends_with(".parquet.tmp") {
                tracing::warn!(file = %entry.path().display(), "removing unpublished log file left by a crash");
                std::fs::remove_file(entry.path()).map_err(|e| LogError::io(&entry.path(), e))?;
            } else if let Some(seq) = parse_seq(&name, prefix) {
                next_seq = next_seq.max(seq + 1);
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            prefix: prefix.to_owned(),
            policy,
            next_seq,
            open: None,
            _lock: lock,
            rows: std::marker::PhantomData,
        })
    }

    /// Appends rows; returns the files published by this call (size roll).
    pub fn write(&mut self, rows: &[R]) -> Result<Vec<PathBuf>, LogError> {
        let mut published = Vec::new();
        for chunk in rows.chunks(self.policy.row_group_rows) {
            let batch = R::to_batch(chunk).map_err(LogError::Encode)?;
            let file = self.open_file()?;
            file.writer
                .write(&batch)
                .map_err(|e| LogError::parquet(&file.temp, e))?;
            let size = file.writer.bytes_written() + file.writer.in_progress_size();
            if size as u64 >= self.policy.max_bytes {
                published.extend(self.publish()?);
            }
        }
        Ok(published)
    }

    /// Publishes the open file now, if any (the caller needs its rows durable).
    pub fn flush(&mut self) -> Result<Option<PathBuf>, LogError> {
        self.publish()
    }

    /// Publishes the open file, if any. Call before dropping the writer: rows of a file
    /// that is never published are not visible to readers.
    pub fn finish(mut self) -> Result<Option<PathBuf>, LogError> {
        self.publish()
    }

    fn open_file(&mut self) -> Result<&mut OpenFile, LogError> {
        if self.open.is_none() {
            let name = format!("{}-{:06}.parquet", self.prefix, self.next_seq);
            let temp = self.dir.join(format!(".{name}.tmp"));
            let target = self.dir.join(name);
            let handle = super::private_file(File::options().write(true).create_new(true))
                .open(&temp)
                .map_err(|e| LogError::io(&temp, e))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(Some(self.policy.row_group_rows))
                .build();
            let writer = ArrowWriter::try_new(handle, R::schema(), Some(props))
                .map_err(|e| LogError::parquet(&temp, e))?;
            self.next_seq += 1;
            self.open = Some(OpenFile {
                writer,
                temp,
                target,
            });
        }
        self.open.as_mut().ok_or(LogError::NotOpen)
    }

    fn publish(&mut self) -> Result<Option<PathBuf>, LogError> {
        let Some(file) = self.open.take() else {
            return Ok(None);
        };
        let handle = file
            .writer
            .into_inner()
            .map_err(|e| LogError::parquet(&file.temp, e))?;
        handle.sync_all().map_err(|e| LogError::io(&file.temp, e))?;
        drop(handle);
        // A hard link publishes without ever replacing a file already there (a rename
        // would): a published file is never overwritten, whoever wrote it.
        std::fs::hard_link(&file.temp, &file.target).map_err(|e| LogError::io(&file.target, e))?;
        std::fs::remove_file(&file.temp).map_err(|e| LogError::io(&file.temp, e))?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| LogError::io(&self.dir, e))?;
        tracing::debug!(file = %file.target.display(), "published log file");
        Ok(Some(file.target))
    }
}

fn parse_seq(name: &str, prefix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_prefix('-')?
        .strip_suffix(".parquet")?
        .parse()
        .ok()
}
