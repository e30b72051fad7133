//! Shared output helpers: plain-text tables for people, JSON files for machines.

use crate::cli::CommandResult;
use std::path::Path;

use eglr::fault::Context;
use serde::Serialize;

/// Writes `value` as pretty JSON to `path` (`-` for stdout).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> CommandResult<()> {
    let text = serde_json::to_string_pretty(value)?;
    if path == Path::new("-") {
        println!("{text}");
        return Ok(());
    }
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// A table with a header row, columns padded to their widest cell; numbers (cells that
/// parse as a number) are right-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| {
                if c.trim_end_matches('%').parse::<f64>().is_ok() {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(header.to_vec()) + "\n";
    out += &(widths
        .iter()
        .map(|&w| "-".repeat(w))
        .collect::<Vec<_>>()
        .join("  ")
        + "\n");
    for row in rows {
        out += &(line(row.iter().map(String::as_str).collect()) + "\n");
    }
    out
}
