//! `eglr bench`: inference throughput of the generator on the worst-case workload
//! (every item takes K reasoning tokens), with and without the KV cache, and the cost
//! of generator-evaluator selection (the evaluator scoring the generated and the
//! upstream list of every request before one is served).
//!
//! Weights are freshly initialised: throughput does not depend on their values once
//! `theta = 0` forces the full `1 + L (K + 1)` decoder steps.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use candle_core::DType;
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;

use eglr::config::PipelineConfig;
use eglr::features::{DenseNormaliser, FeatureEncoder};
use eglr::model::{
    DecodeOptions, Evaluator, Generator, GeneratorConfig, PoolTensors, Ranker, Selection,
    ServeSelection, Variant,
};
use eglr::sim::SimulatorConfig;
use eglr::sim::{Traffic, World};

use super::report::{table, write_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pool sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [20usize, 50])]
    pools: Vec<usize>,

    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [256usize, 1])]
    batches: Vec<usize>,

    /// Reasoning tokens per item `K` (theta = 0: every item takes all of them).
    #[arg(long, default_value_t = 3)]
    k: usize,

    /// Seconds to run each measurement for (after one warm-up batch).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,

    /// Write the results as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Measurement {
    pool: usize,
    batch: usize,
    kv_cache: bool,
    /// Generator-evaluator selection after the decode (`Ranker::rank`).
    selection: bool,
    decoder_steps: usize,
    lists_per_s: f64,
    ms_per_list: f64,
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> anyhow::Result<ExitCode> {
    let device = super::device()?;
    let list_len = pipeline.limits.list_len;
    let cfg = GeneratorConfig {
        variant: Variant::Eglr,
        theta: 0.0,
        max_reasoning_steps: args.k,
        ..pipeline.generator.clone()
    };
    let encoder = FeatureEncoder::new(pipeline.features.clone(), DenseNormaliser::default());
    let vars = VarMap::new();
    let generator = Generator::new(
        &cfg,
        &encoder,
        list_len,
        VarBuilder::from_varmap(&vars, DType::F32, &device),
    )?;
    // Plain tensors: inference without autograd bookkeeping, as a loaded bundle runs.
    let frozen = eglr::train::snapshot(&vars)?;
    let generator_plain = Generator::new(
        &cfg,
        &encoder,
        list_len,
        VarBuilder::from_tensors(frozen, DType::F32, &device),
    )?;
    drop(generator);
    // The same generator behind `Ranker::rank` with selection against the upstream list.
    let plain = |vars: &VarMap| -> anyhow::Result<VarBuilder<'static>> {
        Ok(VarBuilder::from_tensors(
            eglr::train::snapshot(vars)?,
            DType::F32,
            &device,
        ))
    };
    let ranker_vars = VarMap::new();
    let selecting = GeneratorConfig {
        selection: Some(ServeSelection {
            margin: 0.0,
            reward: eglr::model::Reward::Clicks,
        }),
        ..cfg.clone()
    };
    Ranker::new(
        &selecting,
        &encoder,
        list_len,
        VarBuilder::from_varmap(&ranker_vars, DType::F32, &device),
    )?;
    let ranker = Ranker::new(&selecting, &encoder, list_len, plain(&ranker_vars)?)?;
    let evaluator_vars = VarMap::new();
    Evaluator::new(
        &pipeline.evaluator,
        &encoder,
        list_len,
        VarBuilder::from_varmap(&evaluator_vars, DType::F32, &device),
    )?;
    let evaluator = Evaluator::new(
        &pipeline.evaluator,
        &encoder,
        list_len,
        plain(&evaluator_vars)?,
    )?;
    let mut results = Vec::new();
    for &pool in &args.pools {
        let world = World::generate(
            &SimulatorConfig {
                pool_size: pool,
                retrieval_size: pool.max(100),
                ..pipeline.simulator.clone()
            },
            list_len,
            1,
        );
        let traffic = Traffic::new(&world, 1);
        let max_batch = args.batches.iter().copied().max().unwrap_or(1);
        let requests: Vec<_> = (0..max_batch as u64)
            .map(|k| traffic.request(&traffic.impression(k)))
            .collect();
        for &batch in &args.batches {
            let refs: Vec<_> = requests[..batch]
                .iter()
                .map(|r| (&r.user, r.candidates.as_slice()))
                .collect();
            let pools = PoolTensors::new(&encoder.encode(&refs), &encoder, &device)?;
            let lens = vec![list_len; batch];
            for (use_cache, select) in [(true, false), (true, true), (false, false)] {
                if !use_cache && batch == 1 && pool != args.pools[0] {
                    continue; // the recompute baseline is measured on the first pool size only
                }
                let decode = || -> anyhow::Result<usize> {
                    if select {
                        return Ok(ranker.rank(&pools, &lens, &evaluator)?.steps);
                    }
                    let enc = generator_plain.encode(&pools)?;
                    Ok(generator_plain
                        .decode(
                            &enc,
                            &lens,
                            DecodeOptions {
                                selection: Selection::Greedy,
                                track_log_prob: false,
                                use_cache,
                            },
                        )?
                        .steps)
                };
                let steps = decode()?;
                let started = Instant::now();
                let mut lists = 0usize;
                while started.elapsed().as_secs_f64() < args.seconds {
                    decode()?;
                    lists += batch;
                }
                let secs = started.elapsed().as_secs_f64();
                results.push(Measurement {
                    pool,
                    batch,
                    kv_cache: use_cache,
                    selection: select,
                    decoder_steps: steps,
                    lists_per_s: lists as f64 / secs,
                    ms_per_list: 1000.0 * secs / lists.max(1) as f64,
                });
                tracing::info!(
                    pool,
                    batch,
                    use_cache,
                    select,
                    lists_per_s = lists as f64 / secs,
                    "measured"
                );
            }
        }
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|m| {
            let cached = results
                .iter()
                .find(|c| c.kv_cache && !c.selection && c.pool == m.pool && c.batch == m.batch);
            vec![
                m.pool.to_string(),
                m.batch.to_string(),
                match (m.kv_cache, m.selection) {
                    (true, false) => "KV cache",
                    (true, true) => "KV cache + selection",
                    _ => "recompute",
                }
                .into(),
                m.decoder_steps.to_string(),
                format!("{:.0}", m.lists_per_s),
                format!("{:.3}", m.ms_per_list),
                cached.map_or("-".into(), |c| {
                    format!("{:.2}x", c.lists_per_s / m.lists_per_s)
                }),
            ]
        })
        .collect();
    println!(
        "greedy EGLR decode, d_model {}, {} heads, {} layer(s), L = {list_len}, K = {}, theta = 0",
        cfg.d_model, cfg.heads, cfg.layers, args.k
    );
    print!(
        "{}",
        table(
            &[
                "pool",
                "batch",
                "decoder",
                "steps",
                "lists/s",
                "ms/list",
                "vs KV cache"
            ],
            &rows
        )
    );
    if let Some(path) = &args.json {
        write_json(path, &results)?;
    }
    Ok(ExitCode::SUCCESS)
}
