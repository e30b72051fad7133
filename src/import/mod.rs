//! Importers of public data sets into the Parquet list log (`schemas/list_log.md`).

mod csv_table;
pub mod kuairand;

use std::path::{Path, PathBuf};

pub use csv_table::CsvTable;

/// Errors importing a data set: each names the file and, where there is one, the line and
/// column.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {message}")]
    Csv {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{path}: no column {column:?} (the header has: {header})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        header: String,
    },
    #[error("{path}: line {line}, column {column:?}: {value:?} is not {expected}")]
    BadValue {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
        expected: &'static str,
    },
    #[error("{dir}: no file matches {pattern}")]
    NoFiles { dir: PathBuf, pattern: String },
    #[error("{dir}: {pattern} matches {count} files, expected one: {files}")]
    AmbiguousFiles {
        dir: PathBuf,
        pattern: String,
        count: usize,
        files: String,
    },
    #[error(
        "the pipeline declares {entity} feature {field:?} but none of {files} has such a column"
    )]
    UndeclaredColumn {
        entity: &'static str,
        field: String,
        files: String,
    },
    #[error("{0} already holds imported logs; remove it or choose another --out")]
    OutputExists(PathBuf),
    #[error("bad option: {0}")]
    BadOption(String),
    #[error("the import produced no lists: {0}")]
    Empty(String),
    #[error(transparent)]
    Log(#[from] crate::list_log::LogError),
    #[error("cannot encode the import summary (a bug in eglr): {0}")]
    Encode(String),
}

impl crate::fault::HasFault for ImportError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            ImportError::Io { source, .. } => Fault::of_io(source),
            ImportError::Log(e) => e.fault(),
            ImportError::Encode(_) => Fault::Bug,
            _ => Fault::Input,
        }
    }
}

impl ImportError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ImportError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The files in `dir` whose names start with `prefix` and end with `suffix`, sorted.
pub(crate) fn files_like(
    dir: &Path,
    prefix: &str,
    suffix: &str,
) -> Result<Vec<PathBuf>, ImportError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| ImportError::io(dir, e))? {
        let entry = entry.map_err(|e| ImportError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(prefix) && name.ends_with(suffix) {
            out.push(entry.path());
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(ImportError::NoFiles {
            dir: dir.to_owned(),
            pattern: format!("{prefix}*{suffix}"),
        });
    }
    Ok(out)
}

/// The one file in `dir` named `prefix*suffix`.
pub(crate) fn one_file_like(
    dir: &Path,
    prefix: &str,
    suffix: &str,
) -> Result<PathBuf, ImportError> {
    let mut files = files_like(dir, prefix, suffix)?;
    if files.len() > 1 {
        return Err(ImportError::AmbiguousFiles {
            dir: dir.to_owned(),
            pattern: format!("{prefix}*{suffix}"),
            count: files.len(),
            files: files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(files.remove(0))
}

#[cfg(test)]
mod tests;
