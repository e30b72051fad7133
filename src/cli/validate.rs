//! `eglr validate`: check JSON-lines event files against the wire contract.

use crate::cli::CommandResult;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use eglr::fault::Context;
use serde::Serialize;

use eglr::config::PipelineConfig;
use eglr::contract::Contract;
use eglr::schema::EventError;

use super::report::{table, write_json};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Kind {
    Request,
    Result,
    Feedback,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which event the lines hold.
    #[arg(long, value_enum)]
    kind: Kind,

    /// JSON-lines file, one event per line (`-` for stdin).
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// How many bad lines to print.
    #[arg(long, default_value_t = 20)]
    show: usize,

    /// Write the report as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct BadLine {
    line: usize,
    kind: &'static str,
    error: String,
}

#[derive(Debug, Serialize)]
struct Report {
    lines: usize,
    valid: usize,
    invalid: usize,
    by_kind: BTreeMap<&'static str, usize>,
    errors: Vec<BadLine>,
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    let contract = Contract::new(&pipeline.features, &pipeline.limits);
    let input: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file =
            File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
        Box::new(BufReader::new(file))
    };
    let mut report = Report {
        lines: 0,
        valid: 0,
        invalid: 0,
        by_kind: BTreeMap::new(),
        errors: Vec::new(),
    };
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading {}", args.file.display()))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        report.lines += 1;
        let outcome: Result<(), EventError> = match args.kind {
            Kind::Request => contract.parse_request(&line).map(drop),
            Kind::Result => contract.parse_result(&line).map(drop),
            Kind::Feedback => contract.parse_feedback(&line).map(drop),
        };
        match outcome {
            Ok(()) => report.valid += 1,
            Err(e) => {
                report.invalid += 1;
                *report.by_kind.entry(e.kind()).or_default() += 1;
                report.errors.push(BadLine {
                    line: i + 1,
                    kind: e.kind(),
                    error: e.to_string(),
                });
            }
        }
    }
    println!(
        "{}: {} events, {} valid, {} invalid",
        args.file.display(),
        report.lines,
        report.valid,
        report.invalid
    );
    if report.invalid > 0 {
        let rows: Vec<Vec<String>> = report
            .errors
            .iter()
            .take(args.show)
            .map(|b| vec![b.line.to_string(), b.kind.to_owned(), b.error.clone()])
            .collect();
        print!("{}", table(&["line", "kind", "error"], &rows));
    }
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(if report.invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
