//! `eglr bench`: inference throughput of the generator on the worst-case workload
//! (every item takes K reasoning tokens): the fused host decode a loaded bundle runs,
//! the candle decode it replaced (measured in the same run, as the baseline), the
//! cost of generator-evaluator selection (the evaluator scoring the generated and the
//! upstream list of every request before one is served), and the decode without the
//! KV cache; each with 1 and N workers decoding side by side, as `serve`'s inference
//! workers do.
//!
//! Weights are freshly initialised: throughput does not depend on their values once
//! `theta = 0` forces the full `1 + L (K + 1)` decoder steps.

use crate::cli::CommandResult;
use eglr::fault::{Failure, Fault};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;

use eglr::config::PipelineConfig;
use eglr::features::{DenseNormaliser, FeatureEncoder};
use eglr::model::{
    DecodeOptions, Evaluator, Generator, GeneratorConfig, Pick, PoolTensors, Ranker,
    UpstreamMargin, Variant,
};
use eglr::sim::SimulatorConfig;
use eglr::sim::{Traffic, World};

use eglr::plot::{line_chart, Series};

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

    /// Reasoning depths to measure, each as its own run at the first pool and batch
    /// size (ms per list against K: the paper's Table 4 trend).
    #[arg(long, value_delimiter = ',', value_name = "K,...")]
    depths: Vec<usize>,

    /// LARES recurrent depths to measure (`lares+eglr` at `--k`: the candidates refined
    /// this many times by one shared block before decoding), each as its own run at the
    /// first pool and batch size; the main grid is plain `eglr` (depth 0).
    #[arg(long, value_delimiter = ',', value_name = "D,...")]
    lares_depths: Vec<usize>,

    /// Worker counts to measure (each worker decodes its own batches on one thread,
    /// as `serve`'s inference workers do); default: 1 and the machine's cores.
    #[arg(long, value_delimiter = ',')]
    workers: Vec<usize>,

    /// Decoders to measure: `host` (the fused host decode of a loaded bundle),
    /// `candle` (the same decode as candle ops), `selection` (host decode plus
    /// generator-evaluator selection), `recompute` (no KV cache).
    #[arg(long, value_delimiter = ',', default_values_t = [Path::Host, Path::Candle, Path::Selection, Path::Recompute])]
    decoders: Vec<Path>,

    /// Seconds to run each measurement for (after one warm-up batch).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,

    /// Write two SVG plots into this directory: lists/s against batch size
    /// (`bench-batch.svg`, per decoder and workers, at the first pool size) and ms per
    /// list against K (`bench-depth.svg`, with `--depths`).
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,

    /// Write the results as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// One way of decoding a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
enum Path {
    /// The fused host decode (`Generator::freeze`), as a loaded bundle serves.
    Host,
    /// The same greedy decode with the KV cache as candle ops.
    Candle,
    /// The host decode, then generator-evaluator selection (`Ranker::rank`).
    Selection,
    /// Candle ops without the KV cache: the whole sequence recomputed at every step.
    Recompute,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Path::Host => "host",
            Path::Candle => "candle",
            Path::Selection => "selection",
            Path::Recompute => "recompute",
        })
    }
}

#[derive(Debug, Serialize)]
struct Measurement {
    pool: usize,
    batch: usize,
    /// Reasoning tokens per item.
    k: usize,
    /// LARES's recurrent refinements of the candidates (0: plain `eglr`).
    lares_depth: usize,
    decoder: Path,
    workers: usize,
    decoder_steps: usize,
    /// Lists per second of all workers together.
    lists_per_s: f64,
    /// Wall time of one batch divided by its lists (a worker's latency per list).
    ms_per_list: f64,
}

/// The models one reasoning depth is measured with.
struct Models {
    /// Frozen: decodes on the host.
    host: Generator,
    /// The same weights, not frozen: decodes as candle ops.
    candle: Generator,
    /// Frozen, with generator-evaluator selection.
    ranker: Ranker,
    evaluator: Evaluator,
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    let device = super::device()?;
    let encoder = FeatureEncoder::new(pipeline.features.clone(), DenseNormaliser::default());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = if args.workers.is_empty() {
        let mut w = vec![1, cores];
        w.dedup();
        w
    } else {
        args.workers.clone()
    };
    let bench = Bench {
        pipeline,
        args: &args,
        encoder: &encoder,
        device: &device,
        workers: &workers,
    };
    let mut results = Vec::new();
    for grid in grids(&args) {
        results.extend(bench.measure(&grid)?);
    }
    let g = &pipeline.generator;
    println!(
        "greedy EGLR decode, d_model {}, {} heads, {} layer(s), L = {}, theta = 0, {cores} core(s)",
        g.d_model, g.heads, g.layers, pipeline.limits.list_len
    );
    print!("{}", table(&HEADERS, &rows(&results)));
    if let Some(path) = &args.json {
        write_json(path, &results)?;
    }
    if let Some(dir) = &args.plot {
        write_plots(dir, &results, &args)?;
        println!("plots: {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One model depth and the pools and batch sizes it is measured at.
struct Grid {
    /// Reasoning tokens per item.
    k: usize,
    /// LARES's recurrent depth (0: none).
    lares_depth: usize,
    pools: Vec<usize>,
    batches: Vec<usize>,
}

/// The main grid at `--k`, then each extra depth (reasoning K, or LARES's recurrent
/// depth at `--k`) at the first pool and batch size.
fn grids(args: &Args) -> Vec<Grid> {
    let mut grids = vec![Grid {
        k: args.k,
        lares_depth: 0,
        pools: args.pools.clone(),
        batches: args.batches.clone(),
    }];
    if let (Some(&pool), Some(&batch)) = (args.pools.first(), args.batches.first()) {
        let at_first = |k, lares_depth| Grid {
            k,
            lares_depth,
            pools: vec![pool],
            batches: vec![batch],
        };
        grids.extend(
            args.depths
                .iter()
                .filter(|&&k| k != args.k)
                .map(|&k| at_first(k, 0)),
        );
        grids.extend(
            args.lares_depths
                .iter()
                .filter(|&&d| d > 0)
                .map(|&d| at_first(args.k, d)),
        );
    }
    grids
}

/// What every measurement shares.
struct Bench<'a> {
    pipeline: &'a PipelineConfig,
    args: &'a Args,
    encoder: &'a FeatureEncoder,
    device: &'a Device,
    workers: &'a [usize],
}

impl Bench<'_> {
    /// Every pool, batch size, decoder and worker count of `grid`.
    fn measure(&self, grid: &Grid) -> CommandResult<Vec<Measurement>> {
        let (pipeline, args, list_len) = (self.pipeline, self.args, self.pipeline.limits.list_len);
        let models = models(
            pipeline,
            self.encoder,
            self.device,
            grid.k,
            grid.lares_depth,
        )?;
        let mut results = Vec::new();
        for &pool in &grid.pools {
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
            for &batch in &grid.batches {
                let tensors = self.requests(&traffic, batch)?;
                for &decoder in &args.decoders {
                    // The recompute baseline is slow and its ratio does not depend on
                    // the workers: measured once per batch size, on the first pool.
                    let counts = if decoder == Path::Recompute {
                        if Some(&pool) != args.pools.first() {
                            continue;
                        }
                        &self.workers[..1]
                    } else {
                        self.workers
                    };
                    for &w in counts {
                        let m = measure(&models, &tensors, list_len, decoder, w, args.seconds)?;
                        let (k, lares_depth) = (grid.k, grid.lares_depth);
                        tracing::info!(pool, batch, k, lares_depth, %decoder, workers = w, lists_per_s = m.1, "measured");
                        results.push(Measurement {
                            pool,
                            batch,
                            k,
                            lares_depth,
                            decoder,
                            workers: w,
                            decoder_steps: m.0,
                            lists_per_s: m.1,
                            ms_per_list: m.2,
                        });
                    }
                }
            }
        }
        Ok(results)
    }

    /// A batch of `batch` simulated requests, encoded.
    fn requests(&self, traffic: &Traffic<'_>, batch: usize) -> CommandResult<PoolTensors> {
        let requests: Vec<_> = (0..batch as u64)
            .map(|i| traffic.request(&traffic.impression(i)))
            .collect();
        let refs: Vec<_> = requests
            .iter()
            .map(|r| (&r.user, r.candidates.as_slice()))
            .collect();
        Ok(PoolTensors::new(
            &self.encoder.encode(&refs),
            self.encoder,
            self.device,
        )?)
    }
}

/// `bench-batch.svg` (lists/s against the batch size) and `bench-depth.svg` (ms per
/// list against the reasoning depth) under `dir`.
fn write_plots(dir: &std::path::Path, results: &[Measurement], args: &Args) -> CommandResult<()> {
    std::fs::create_dir_all(dir)?;
    let (pool, k) = (args.pools.first().copied(), args.k);
    let by_batch = plot_series(
        results,
        |m| (Some(m.pool) == pool && m.k == k).then_some(m.batch as f64),
        |m| m.lists_per_s,
    );
    let title = format!(
        "greedy decode, pool {}, K = {k}, theta = 0",
        pool.unwrap_or(0)
    );
    std::fs::write(
        dir.join("bench-batch.svg"),
        line_chart(&title, "batch size", "lists/s", &by_batch),
    )?;
    let batch = args.batches.first().copied();
    let by_depth = plot_series(
        results,
        |m| {
            (Some(m.pool) == pool && Some(m.batch) == batch && m.lares_depth == 0)
                .then_some(m.k as f64)
        },
        |m| m.ms_per_list,
    );
    let title = format!(
        "latency against reasoning depth, pool {}, batch {}",
        pool.unwrap_or(0),
        batch.unwrap_or(0)
    );
    std::fs::write(
        dir.join("bench-depth.svg"),
        line_chart(
            &title,
            "reasoning tokens per item K",
            "ms per list",
            &by_depth,
        ),
    )?;
    Ok(())
}

/// One line per decoder and worker count through the measurements `x` keeps (its x
/// value), at height `y`, sorted by x.
fn plot_series(
    results: &[Measurement],
    x: impl Fn(&Measurement) -> Option<f64>,
    y: impl Fn(&Measurement) -> f64,
) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for m in results {
        let Some(at) = x(m) else { continue };
        let label = format!("{}, {} worker(s)", m.decoder, m.workers);
        match series.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push((at, y(m))),
            None => series.push(Series {
                label,
                points: vec![(at, y(m))],
                dashed: m.workers > 1,
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series.retain(|s| s.points.len() > 1);
    series
}

const HEADERS: [&str; 10] = [
    "pool",
    "batch",
    "K",
    "LARES depth",
    "decoder",
    "workers",
    "steps",
    "lists/s",
    "ms/list",
    "vs candle",
];

/// Table rows; `vs candle` is the throughput against the candle decode of the same
/// pool, batch, depth and workers.
fn rows(results: &[Measurement]) -> Vec<Vec<String>> {
    results
        .iter()
        .map(|m| {
            let candle = results.iter().find(|c| {
                c.decoder == Path::Candle
                    && (c.pool, c.batch, c.k, c.lares_depth, c.workers)
                        == (m.pool, m.batch, m.k, m.lares_depth, m.workers)
            });
            vec![
                m.pool.to_string(),
                m.batch.to_string(),
                m.k.to_string(),
                m.lares_depth.to_string(),
                m.decoder.to_string(),
                m.workers.to_string(),
                m.decoder_steps.to_string(),
                format!("{:.0}", m.lists_per_s),
                format!("{:.3}", m.ms_per_list),
                candle.map_or("-".into(), |c| {
                    format!("{:.2}x", m.lists_per_s / c.lists_per_s)
                }),
            ]
        })
        .collect()
}

/// Fresh models at reasoning depth `k` (`eglr`, or `lares+eglr` refining the
/// candidates `lares_depth` times), their weights as plain tensors (inference without
/// autograd bookkeeping, as a loaded bundle runs).
fn models(
    pipeline: &PipelineConfig,
    encoder: &FeatureEncoder,
    device: &Device,
    k: usize,
    lares_depth: usize,
) -> CommandResult<Models> {
    let list_len = pipeline.limits.list_len;
    let cfg = GeneratorConfig {
        variant: if lares_depth > 0 {
            Variant::LaresEglr
        } else {
            Variant::Eglr
        },
        theta: 0.0,
        max_reasoning_steps: k,
        recurrent_depth: lares_depth.max(1),
        ..pipeline.generator.clone()
    };
    let plain = |vars: &VarMap| -> CommandResult<VarBuilder<'static>> {
        Ok(VarBuilder::from_tensors(
            eglr::train::snapshot(vars)?,
            DType::F32,
            device,
        ))
    };
    let vars = VarMap::new();
    Generator::new(
        &cfg,
        encoder,
        list_len,
        VarBuilder::from_varmap(&vars, DType::F32, device),
    )?;
    let candle = Generator::new(&cfg, encoder, list_len, plain(&vars)?)?;
    let host = candle.clone().freeze()?;
    let selecting = GeneratorConfig {
        selection: Some(UpstreamMargin {
            margin: 0.0,
            reward: eglr::model::Reward::Clicks,
        }),
        ..cfg.clone()
    };
    let ranker_vars = VarMap::new();
    Ranker::new(
        &selecting,
        encoder,
        list_len,
        VarBuilder::from_varmap(&ranker_vars, DType::F32, device),
    )?;
    let ranker = Ranker::new(&selecting, encoder, list_len, plain(&ranker_vars)?)?.freeze()?;
    let evaluator_vars = VarMap::new();
    Evaluator::new(
        &pipeline.evaluator,
        encoder,
        list_len,
        VarBuilder::from_varmap(&evaluator_vars, DType::F32, device),
    )?;
    let evaluator = Evaluator::new(
        &pipeline.evaluator,
        encoder,
        list_len,
        plain(&evaluator_vars)?,
    )?;
    Ok(Models {
        host,
        candle,
        ranker,
        evaluator,
    })
}

/// `(decoder steps, lists/s, ms per list)` of `workers` threads each decoding `pools`
/// with `decoder` for `seconds` after one warm-up batch.
fn measure(
    models: &Models,
    pools: &PoolTensors,
    list_len: usize,
    decoder: Path,
    workers: usize,
    seconds: f64,
) -> CommandResult<(usize, f64, f64)> {
    let batch = pools.batch();
    let lens = vec![list_len; batch];
    let decode = || -> CommandResult<usize> {
        let (generator, use_cache) = match decoder {
            Path::Selection => {
                return Ok(models.ranker.rank(pools, &lens, &models.evaluator)?.steps);
            }
            Path::Host => (&models.host, true),
            Path::Candle => (&models.candle, true),
            Path::Recompute => (&models.candle, false),
        };
        let encoded = generator.encode(pools)?;
        let options = DecodeOptions {
            pick: Pick::Greedy,
            track_log_prob: false,
            use_cache,
        };
        Ok(generator.decode(&encoded, &lens, options)?.steps)
    };
    // Every worker runs on a compute pool of its own, one thread, as `serve`'s
    // inference workers do: candle's kernels then run inline on it.
    let per_worker = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> CommandResult<(usize, usize, f64)> {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .map_err(|e| {
                            Failure::new(Fault::External, format!("cannot start a worker: {e}"))
                        })?;
                    pool.install(|| {
                        let steps = decode()?;
                        let started = Instant::now();
                        let mut lists = 0usize;
                        while started.elapsed().as_secs_f64() < seconds {
                            decode()?;
                            lists += batch;
                        }
                        Ok((steps, lists, started.elapsed().as_secs_f64()))
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| Failure::new(Fault::Bug, "a bench worker panicked"))?
            })
            .collect::<CommandResult<Vec<_>>>()
    })?;
    let steps = per_worker.first().map_or(0, |w| w.0);
    let lists_per_s: f64 = per_worker.iter().map(|w| w.1 as f64 / w.2).sum();
    let ms_per_list = per_worker
        .iter()
        .map(|w| 1000.0 * w.2 / w.1.max(1) as f64)
        .sum::<f64>()
        / per_worker.len().max(1) as f64;
    Ok((steps, lists_per_s, ms_per_list))
}
