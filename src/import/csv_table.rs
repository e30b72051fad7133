//! A CSV file read one record at a time, with columns looked up by header name and
//! values parsed with errors that name the file, the line and the column.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::ImportError;

/// A header-indexed CSV reader.
#[derive(Debug)]
pub struct CsvTable {
    path: PathBuf,
    header: csv::StringRecord,
    reader: csv::Reader<BufReader<File>>,
    record: csv::StringRecord,
}

impl CsvTable {
    pub fn open(path: &Path) -> Result<Self, ImportError> {
        let file = File::open(path).map_err(|e| ImportError::io(path, e))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(BufReader::with_capacity(1 << 20, file));
        let header = reader.headers().map_err(|e| csv_error(path, &e))?.clone();
        Ok(CsvTable {
            path: path.to_owned(),
            header,
            reader,
            record: csv::StringRecord::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Index of a column that must exist.
    pub fn column(&self, name: &str) -> Result<usize, ImportError> {
        self.find_column(name)
            .ok_or_else(|| ImportError::MissingColumn {
                path: self.path.clone(),
                column: name.to_owned(),
                header: self.header.iter().collect::<Vec<_>>().join(","),
            })
    }

    /// Index of a column that may be absent.
    pub fn find_column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// Advances to the next record; `false` at the end of the file.
    pub fn next_record(&mut self) -> Result<bool, ImportError> {
        self.reader
            .read_record(&mut self.record)
            .map_err(|e| csv_error(&self.path, &e))
    }

    /// Line of the current record (1 = the header).
    pub fn line(&self) -> u64 {
        self.record.position().map_or(0, |p| p.line())
    }

    /// The raw text of column `index`, `None` when empty (a null).
    pub fn text(&self, index: usize) -> Option<&str> {
        self.record.get(index).filter(|s| !s.is_empty())
    }

    /// A column that must hold a value.
    pub fn required(&self, index: usize) -> Result<&str, ImportError> {
        self.text(index)
            .ok_or_else(|| self.bad_value(index, "", "a value (it is empty)"))
    }

    pub fn integer(&self, index: usize) -> Result<i64, ImportError> {
        let text = self.required(index)?;
        text.parse()
            .map_err(|_| self.bad_value(index, text, "an integer"))
    }

    /// A number that may be empty. Integers written as `1.0` are accepted.
    pub fn number(&self, index: usize) -> Result<Option<f64>, ImportError> {
        match self.text(index) {
            None => Ok(None),
            Some(text) => match text.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(self.bad_value(index, text, "a finite number")),
            },
        }
    }

    /// A 0/1 flag (also `0.0`/`1.0`).
    pub fn flag(&self, index: usize) -> Result<bool, ImportError> {
        let text = self.required(index)?;
        match text {
            "0" | "0.0" => Ok(false),
            "1" | "1.0" => Ok(true),
            _ => Err(self.bad_value(index, text, "0 or 1")),
        }
    }

    fn bad_value(&self, index: usize, value: &str, expected: &'static str) -> ImportError {
        ImportError::BadValue {
            path: self.path.clone(),
            line: self.line(),
            column: self.header.get(index).unwrap_or("?").to_owned(),
            value: value.to_owned(),
            expected,
        }
    }
}

fn csv_error(path: &Path, e: &csv::Error) -> ImportError {
    ImportError::Csv {
        path: path.to_owned(),
        line: e.position().map_or(0, |p| p.line()),
        message: e.to_string(),
    }
}
