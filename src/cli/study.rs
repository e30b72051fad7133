//! `eglr study`: simulate train and test data, train every generator variant on the
//! same evaluator for several seeds, and write the results table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use eglr::config::PipelineConfig;
use eglr::logs::{LogWriter, RollPolicy};
use eglr::model::Variant;
use eglr::sim::{write_logs, Traffic, World};
use eglr::study::{self, markdown_table, write_doc, StudyPlan};

use super::device;
use super::report::write_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Working directory for the simulated data and the bundles (reused if present).
    #[arg(long, default_value = "data/study")]
    dir: PathBuf,

    /// Logged lists to train on.
    #[arg(long, default_value_t = 20_000)]
    lists: u64,

    /// Held-out lists (same world, another traffic seed).
    #[arg(long, default_value_t = 5_000)]
    test_lists: u64,

    /// Seed of the simulated world and training traffic.
    #[arg(long, default_value_t = 7)]
    world_seed: u64,

    /// Training seeds.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 2, 3])]
    seeds: Vec<u64>,

    /// Variants, the first also trains the evaluator.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Variant::ALL.to_vec())]
    variants: Vec<Variant>,

    /// Markdown file to write.
    #[arg(long, default_value = "docs/results-sim.md")]
    doc: PathBuf,

    /// Also write all runs as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn simulate(
    world: &World,
    seed: u64,
    lists: u64,
    dir: &std::path::Path,
    pipeline: &PipelineConfig,
) -> anyhow::Result<()> {
    if dir.is_dir() && std::fs::read_dir(dir)?.next().is_some() {
        tracing::info!(dir = %dir.display(), "reusing simulated logs");
        return Ok(());
    }
    let policy = RollPolicy {
        max_bytes: pipeline.logs.roll_max_bytes,
        max_age: None,
        row_group_rows: pipeline.logs.row_group_rows,
    };
    let mut writer = LogWriter::create(dir, "lists", policy)?;
    write_logs(&Traffic::new(world, seed), lists, 4096, &mut writer, |_| {})?;
    writer.finish()?;
    Ok(())
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let world_path = args.dir.join("world.json");
    let world = if world_path.exists() {
        World::load(&world_path)?
    } else {
        let w = World::generate(
            &pipeline.simulator,
            pipeline.limits.list_len,
            args.world_seed,
        );
        w.save(&world_path)?;
        w
    };
    let (train_dir, test_dir) = (args.dir.join("train"), args.dir.join("test"));
    simulate(&world, args.world_seed, args.lists, &train_dir, pipeline)?;
    simulate(
        &world,
        args.world_seed + 1000,
        args.test_lists,
        &test_dir,
        pipeline,
    )?;
    let plan = StudyPlan {
        pipeline: pipeline.clone(),
        train_data: train_dir.display().to_string(),
        test_data: test_dir.display().to_string(),
        world: Some(world_path),
        seeds: args.seeds.clone(),
        variants: args.variants.clone(),
        bundles: args.dir.join("bundles"),
    };
    let rows = study::run(&plan, &device())?;
    let table = markdown_table(&rows);
    println!("{table}");
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let variants: Vec<&str> = args.variants.iter().map(|v| v.name()).collect();
    let seeds: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
    let doc = format!(
        "# EGLR variants on simulated data\n\n\
         Regenerate with:\n\n```sh\ncargo run --release -- study --dir {dir} --lists {lists} --test-lists {test} --world-seed {ws} --seeds {seeds} --variants {variants} --doc {doc}\n```\n\n\
         Train: {lists} logged lists of world seed {ws} (`{dir}/train`); test: {test} held-out lists of the same world \
         with traffic seed {ts} (`{dir}/test`). Each seed trains one evaluator (with the first variant) that every \
         variant of that seed is trained against (GRPO). Metrics on the test lists, mean ± std over seeds {seed_list}. \
         MAP/NDCG are computed against the logged clicks; the oracle is the exact expected clicks per list under the \
         simulator's true click model. The initial order is the upstream ranker's order of each pool. \
         This run took {minutes:.1} minutes on this machine.\n\n{table}",
        dir = args.dir.display(),
        lists = args.lists,
        test = args.test_lists,
        ws = args.world_seed,
        ts = args.world_seed + 1000,
        seeds = seeds.join(","),
        seed_list = seeds.join(", "),
        variants = variants.join(","),
        doc = args.doc.display(),
    );
    write_doc(&args.doc, &doc).with_context(|| format!("writing {}", args.doc.display()))?;
    println!("wrote {} ({minutes:.1} min)", args.doc.display());
    if let Some(path) = &args.json {
        write_json(path, &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}
