//! `eglr audit`: the offline Evaluator Score audit of one or more models against an
//! independent judge evaluator.

use crate::cli::CommandResult;
use std::path::PathBuf;
use std::process::ExitCode;

use eglr::fault::Context;
use serde::Serialize;

use eglr::config::PipelineConfig;
use eglr::model::Bundle;
use eglr::offline::audit::{audit_model, markdown, AuditOptions, ModelAudit};

use super::report::write_json;
use super::{data_pattern, device};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Logged lists: a directory of Parquet list-log files, a glob, or a `simulate`
    /// output directory (streamed).
    #[arg(long, value_name = "GLOB")]
    logs: String,

    /// Model bundle to audit (repeatable).
    #[arg(long = "model", value_name = "BUNDLE", required = true)]
    models: Vec<PathBuf>,

    /// Independent judge: a bundle whose evaluator was trained on other data (a disjoint
    /// split or another seed). Its generator is not used.
    #[arg(long, value_name = "BUNDLE")]
    judge: Option<PathBuf>,

    /// Flag a model when its serving uplift exceeds the judge's by more than this.
    #[arg(long, default_value_t = 0.05)]
    tolerance: f64,

    /// Bootstrap resamples for the 95 % intervals.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,

    /// Lists decoded together.
    #[arg(long, default_value_t = 256)]
    batch: usize,

    /// Write the markdown report to this file (it is printed either way).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Write the audit as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct AuditJson<'a> {
    judge: Option<String>,
    tolerance: f64,
    models: &'a [ModelAudit],
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    ensure_input!(
        args.tolerance.is_finite() && args.tolerance >= 0.0,
        "--tolerance must be a finite number >= 0"
    );
    let device = device()?;
    let load = |p: &PathBuf| {
        Bundle::load(p, &device).with_context(|| format!("loading bundle {}", p.display()))
    };
    let judge = args.judge.as_ref().map(load).transpose()?;
    let opts = AuditOptions {
        batch: args.batch.max(1),
        list_len: pipeline.limits.list_len,
        bootstrap: args.bootstrap,
        seed: 0,
        tolerance: args.tolerance,
    };
    let logs = data_pattern(&args.logs);
    let mut audits = Vec::new();
    for path in &args.models {
        let model = load(path)?;
        if let Some(why) = judge
            .as_ref()
            .and_then(|j| eglr::model::judge_conflict(&model.meta, &j.meta))
        {
            bail_input!("refusing to audit {}: {why}", path.display());
        }
        tracing::info!(model = %path.display(), "auditing");
        audits.push(audit_model(&model, judge.as_ref(), &logs, &opts, &device)?);
    }
    let judge_name = judge.as_ref().map(|j| j.meta.version.clone());
    let report = markdown(&audits, judge_name.as_deref(), args.tolerance);
    println!("{report}");
    if let Some(path) = &args.out {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let json = AuditJson {
            judge: judge_name,
            tolerance: args.tolerance,
            models: &audits,
        };
        write_json(path, &json)?;
    }
    Ok(ExitCode::SUCCESS)
}
