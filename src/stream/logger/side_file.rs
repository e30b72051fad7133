//! The side file: events the join could not place in a list, kept as JSON lines.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::join::Unjoined;
use crate::list_log::LogError;

/// The subdirectory of the log directory that holds the side files. Its `_` prefix
/// keeps it out of the data set the log directory is: pyarrow's and Spark's discovery
/// skip paths that start with `_` or `.`, and `DIR/*.parquet` does not match it.
pub const UNJOINED_DIR: &str = "_unjoined";

/// Appends unjoined events as JSON lines; `sync` makes them durable. Once the file
/// reaches `max_bytes` it is made durable and renamed `NAME.MILLIS.jsonl`, and a new
/// one starts: the side file never grows without bound, and nothing in it is lost.
pub(super) struct SideFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
}

impl SideFile {
    pub(super) fn open(path: PathBuf, max_bytes: u64) -> Result<Self, LogError> {
        let file = crate::list_log::private_file(OpenOptions::new().create(true).append(true))
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let written = file.metadata().map_err(|e| io(&path, e))?.len();
        Ok(Self {
            path,
            file,
            written,
            max_bytes,
        })
    }

    pub(super) fn append(&mut self, events: &[Unjoined]) -> Result<(), LogError> {
        let mut buf = Vec::new();
        for e in events {
            serde_json::to_writer(&mut buf, e).map_err(|e| io(&self.path, e.into()))?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf).map_err(|e| io(&self.path, e))?;
        self.written += buf.len() as u64;
        if self.written >= self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        self.sync()?;
        let rotated = self
            .path
            .with_extension(format!("{}.jsonl", crate::clock::unix_millis()));
        std::fs::rename(&self.path, &rotated).map_err(|e| io(&rotated, e))?;
        *self = Self::open(self.path.clone(), self.max_bytes)?;
        Ok(())
    }

    pub(super) fn sync(&self) -> Result<(), LogError> {
        self.file.sync_data().map_err(|e| io(&self.path, e))
    }
}

pub(super) fn io(path: &Path, source: std::io::Error) -> LogError {
    LogError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::join::UnjoinedReason;

    #[test]
    fn the_side_file_rotates_at_its_size_and_keeps_every_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut side = SideFile::open(dir.path().join("unjoined-0.jsonl"), 300).expect("open");
        let event = |k: usize| Unjoined {
            request_id: format!("r{k}"),
            reason: UnjoinedReason::LateFeedback,
            event: serde_json::json!({"k": k}),
        };
        for k in 0..20 {
            side.append(&[event(k)]).expect("append");
            // Distinct rotation names (they carry the time in milliseconds).
            std::thread::sleep(Duration::from_millis(2));
        }
        side.sync().expect("sync");
        let mut lines = 0;
        let mut files = 0;
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            assert!(
                text.len() < 300 + 100,
                "{} is {} bytes",
                path.display(),
                text.len()
            );
            lines += text.lines().count();
            files += 1;
        }
        assert_eq!(lines, 20, "every event kept");
        assert!(files > 3, "rotated into {files} files");
    }
}
