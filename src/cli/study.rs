//! `eglr study`: on simulated data (or imported logs), train every variant of a suite
//! — the EGLR ablation or the paper's baselines — on the same evaluator for several
//! seeds, and write the results tables and the entropy-by-position plot.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use eglr::config::PipelineConfig;
use eglr::list_log::{LogWriter, RollPolicy};
use eglr::model::Variant;
use eglr::plot::{line_chart, Series};
use eglr::sim::{write_logs, Traffic, World};
use eglr::study::{
    self, markdown_table, mean_positions, positions_table, write_doc, StudyPlan, StudyRow, StudyRun,
};

use super::device;
use super::report::write_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Working directory for the simulated data and the bundles (reused if present).
    #[arg(long, default_value = "data/study")]
    dir: PathBuf,

    /// Study imported logs instead of simulating: DIR/train and DIR/test as written by
    /// `eglr import` (no oracle score then). --lists, --test-lists, --world-seed are
    /// ignored.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,

    /// Logged lists to train on.
    #[arg(long, default_value_t = 20_000)]
    lists: u64,

    /// Held-out test lists (same world, traffic seed world-seed + 1000): read only by
    /// the final tables.
    #[arg(long, default_value_t = 5_000)]
    test_lists: u64,

    /// Validation lists (same world, traffic seed world-seed + 500): the evaluators'
    /// fidelity is measured on their pools; settings are chosen on them, never on test.
    #[arg(long, default_value_t = 3_000)]
    validation_lists: u64,

    /// Pools of the headroom table (true point-wise sort, true list-wise search, search
    /// over observable inputs), from the test traffic.
    #[arg(long, default_value_t = 300)]
    headroom_lists: u64,

    /// Seed of the simulated world and training traffic.
    #[arg(long, default_value_t = 7)]
    world_seed: u64,

    /// Training seeds.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 2, 3])]
    seeds: Vec<u64>,

    /// Which comparison: `ablation` (the EGLR variants of spec §4) or `paper` (EGLR, the
    /// nine baselines of the paper's Table 2 and the EGLR module on three backbones,
    /// Table 3). Sets the default variants and document.
    #[arg(long, value_enum, default_value_t = Suite::Ablation)]
    suite: Suite,

    /// Variants instead of the suite's; the first also trains the evaluator.
    #[arg(long, value_enum, value_delimiter = ',')]
    variants: Option<Vec<Variant>>,

    /// Also train `eglr` with these reasoning caps K (the paper's Table 4 sweep; the
    /// pipeline's K is the `eglr` row).
    #[arg(long, value_delimiter = ',', value_name = "K,...")]
    k_sweep: Vec<usize>,

    /// Markdown file to write (default: `docs/results-sim.md` for the ablation,
    /// `docs/results-baselines-sim.md` or, with `--data`, `docs/results-baselines-kuairand.md`
    /// for the paper suite). A `## Findings` section already in it is kept.
    #[arg(long)]
    doc: Option<PathBuf>,

    /// Also write all runs as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    Ablation,
    Paper,
}

impl Args {
    fn variants(&self) -> Vec<Variant> {
        self.variants.clone().unwrap_or_else(|| match self.suite {
            Suite::Ablation => Variant::ABLATION.to_vec(),
            Suite::Paper => Variant::PAPER.to_vec(),
        })
    }

    fn doc(&self) -> PathBuf {
        self.doc.clone().unwrap_or_else(|| {
            PathBuf::from(match (self.suite, self.data.is_some()) {
                (Suite::Ablation, _) => "docs/results-sim.md",
                (Suite::Paper, false) => "docs/results-baselines-sim.md",
                (Suite::Paper, true) => "docs/results-baselines-kuairand.md",
            })
        })
    }
}

/// The paper's Table 3: each generator backbone without and with the EGLR module.
const TRANSFER_PAIRS: [(Variant, Variant); 4] = [
    (Variant::Backbone, Variant::Eglr),
    (Variant::EgRerank, Variant::EgRerankEglr),
    (Variant::Cmr, Variant::CmrEglr),
    (Variant::Last, Variant::LastEglr),
];

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

/// ", from N lists (split: RULE)" from `DIR/import.json` when the importer wrote one.
fn import_summary(data: &std::path::Path) -> String {
    let Ok(text) = std::fs::read_to_string(data.join("import.json")) else {
        return String::new();
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return String::new();
    };
    format!(
        "; {} train and {} test lists of {} impressions (split: {})",
        json["train_lists"],
        json["test_lists"],
        json["list_len"],
        json["split_rule"].as_str().unwrap_or("?")
    )
}

/// Simulates (or reuses) the world and the train/validation/test logs under `--dir`.
fn simulate_study_data(
    pipeline: &PipelineConfig,
    args: &Args,
) -> anyhow::Result<(PathBuf, PathBuf, PathBuf, PathBuf)> {
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
    let validation_dir = args.dir.join("validation");
    simulate(&world, args.world_seed, args.lists, &train_dir, pipeline)?;
    simulate(
        &world,
        args.world_seed + 500,
        args.validation_lists,
        &validation_dir,
        pipeline,
    )?;
    simulate(
        &world,
        args.world_seed + 1000,
        args.test_lists,
        &test_dir,
        pipeline,
    )?;
    Ok((train_dir, validation_dir, test_dir, world_path))
}

/// Expected clicks per list of the headroom orderings on the first test pools.
fn headroom_table(world_path: &std::path::Path, args: &Args) -> anyhow::Result<String> {
    let world = World::load(world_path)?;
    let h = eglr::sim::headroom(
        &Traffic::new(&world, args.world_seed + 1000),
        args.headroom_lists,
    );
    let pct = |x: f64| 100.0 * (x / h.initial - 1.0);
    Ok(format!(
        "| ordering ({} test pools) | oracle (true clicks/list) | vs initial |\n|---|---:|---:|\n\
         | initial (upstream) | {:.4} | +0.0 % |\n\
         | point-wise sort by true relevance | {:.4} | {:+.1} % |\n\
         | list-wise search, true click model | {:.4} | {:+.1} % |\n\
         | list-wise search, observable inputs only | {:.4} | {:+.1} % |\n",
        h.lists,
        h.initial,
        h.pointwise_sort,
        pct(h.pointwise_sort),
        h.listwise_search,
        pct(h.listwise_search),
        h.observable_search,
        pct(h.observable_search),
    ))
}

/// The over-optimisation curve of `eglr`: its greedy lists on validation pools at each
/// RL checkpoint, by its own evaluator, the judge and the oracle (mean over seeds), as a
/// table and an SVG beside the doc.
fn curve_section(rows: &[StudyRow], doc_path: &std::path::Path) -> anyhow::Result<Option<String>> {
    let Some(row) = rows
        .iter()
        .find(|r| r.name == "eglr" && !r.curves.is_empty())
    else {
        return Ok(None);
    };
    let curve = study::mean_curve(row);
    let mut table =
        String::from("| RL step | own evaluator | judge | oracle |\n|---:|---:|---:|---:|\n");
    for p in &curve {
        table += &format!(
            "| {} | {:.4} | {:.4} | {} |\n",
            p.step,
            p.own,
            p.judge,
            p.oracle.map_or("-".into(), |o| format!("{o:.4}"))
        );
    }
    let best: Vec<String> = row
        .curves
        .iter()
        .filter_map(|c| c.iter().max_by(|a, b| a.judge.total_cmp(&b.judge)))
        .map(|p| p.step.to_string())
        .collect();
    let relative = |f: fn(&eglr::train::CurvePoint) -> Option<f64>| -> Vec<(f64, f64)> {
        let base = curve.first().and_then(f).unwrap_or(1.0);
        curve
            .iter()
            .filter_map(|p| Some((p.step as f64, 100.0 * (f(p)? / base - 1.0))))
            .collect()
    };
    let series = vec![
        Series {
            label: "own evaluator".into(),
            points: relative(|p| Some(p.own)),
            dashed: true,
        },
        Series {
            label: "judge".into(),
            points: relative(|p| Some(p.judge)),
            dashed: false,
        },
        Series {
            label: "oracle".into(),
            points: relative(|p| p.oracle),
            dashed: false,
        },
    ];
    let plot = doc_path.with_extension("rl-curve.svg");
    write_doc(
        &plot,
        &line_chart(
            "eglr during RL: greedy lists on validation pools",
            "RL step",
            "% vs step 0",
            &series,
        ),
    )
    .with_context(|| format!("writing {}", plot.display()))?;
    Ok(Some(format!(
        "\n## Over-optimisation curve (validation pools)\n\n`eglr`'s greedy lists on 500 validation pools at every \
         RL checkpoint (step 0: the policy RL starts from), scored by the evaluator it is trained against, by the judge \
         and by the oracle; mean over seeds. Training keeps the checkpoint the judge scores highest (early stopping by \
         the judge; chosen steps by seed: {}). A rising own score over a flat or falling oracle is reward hacking.\n\n\
         ![RL curve]({})\n\n{table}",
        best.join(", "),
        plot.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
    )))
}

/// The seeds' evaluator fidelity on validation pools.
fn fidelity_table(rows: &[StudyRow]) -> String {
    let Some(row) = rows.iter().find(|r| !r.fidelity.is_empty()) else {
        return String::new();
    };
    let stat = |f: fn(&eglr::offline::fidelity::Fidelity) -> f64| {
        let xs: Vec<f64> = row.fidelity.iter().map(f).collect();
        let (m, s) = study::mean_std(&xs);
        format!("{m:.3} ± {s:.3}")
    };
    format!(
        "| Kendall tau | pairs ordered as the oracle | adjacency probe: evaluator prefers adjacent | oracle prefers adjacent | evaluator gain | oracle gain |\n\
         |---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} | {} |\n",
        stat(|f| f.kendall_tau),
        stat(|f| f.pair_agreement),
        stat(|f| f.adjacency.evaluator_prefers_adjacent),
        stat(|f| f.adjacency.oracle_prefers_adjacent),
        stat(|f| f.adjacency.evaluator_gain),
        stat(|f| f.adjacency.oracle_gain),
    )
}

/// NDCG@10 of EGLR on KuaiRand-1K by K (paper Table 4, via spec §8): orientation only.
const PAPER_NDCG10_BY_K: [(usize, f64); 3] = [(0, 0.7443), (1, 0.7526), (3, 0.7541)];

pub fn run(pipeline: &PipelineConfig, args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let (train_dir, validation_dir, test_dir, world, source) = match &args.data {
        Some(data) => (
            data.join("train"),
            None,
            data.join("test"),
            None,
            format!(
                "the imported logs `{0}/train` (train) and `{0}/test` (test){1}. MAP/NDCG are computed against the \
                 logged clicks of the same items; the initial order is the logged order",
                data.display(),
                import_summary(data)
            ),
        ),
        None => {
            let (train, validation, test, world) = simulate_study_data(pipeline, &args)?;
            let source = format!(
                "train: {lists} logged lists of world seed {ws} (`{dir}/train`); test: {test} held-out lists of the same world \
                 with traffic seed {ts} (`{dir}/test`). MAP/NDCG are computed against the logged clicks; the oracle is the exact \
                 expected clicks per list under the simulator's true click model. The initial order is the upstream ranker's order",
                lists = args.lists,
                ws = args.world_seed,
                ts = args.world_seed + 1000,
                dir = args.dir.display(),
                test = args.test_lists,
            );
            (train, Some(validation), test, Some(world), source)
        }
    };
    let doc_path = args.doc();
    let runs: Vec<StudyRun> = args
        .variants()
        .iter()
        .map(|&variant| StudyRun {
            variant,
            max_reasoning_steps: None,
        })
        .chain(args.k_sweep.iter().map(|&k| StudyRun {
            variant: Variant::Eglr,
            max_reasoning_steps: Some(k),
        }))
        .collect();
    let plan = StudyPlan {
        pipeline: pipeline.clone(),
        train_data: train_dir.display().to_string(),
        test_data: test_dir.display().to_string(),
        validation_data: validation_dir.map(|d| d.display().to_string()),
        world: world.clone(),
        seeds: args.seeds.clone(),
        runs,
        bundles: args.dir.join("bundles"),
    };
    let rows = study::run(&plan, &device())?;
    let table = markdown_table(&rows);
    let paired = study::paired_table(&rows, "initial order");
    let headroom = world
        .as_deref()
        .map(|w| headroom_table(w, &args))
        .transpose()?
        .unwrap_or_default();
    let fidelity = fidelity_table(&rows);
    let judged = pipeline.training.judge_share > 0.0;
    println!("{table}");
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let seeds: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
    let splits = if args.data.is_some() {
        "Splits: the train lists (a hashed validation share of them selects epochs and RL checkpoints) and the test \
         lists, read only by these tables; real logs have no oracle, so the headlines are the judge and NDCG@10 against \
         the logged clicks."
    } else {
        "Three splits of the world: the train lists, validation lists (another traffic seed: the evaluators' fidelity \
         below is measured on their pools and settings are chosen on them) and the test lists, read only by these \
         tables."
    };
    let protocol = if judged {
        format!(
            "**Protocol.** {splits} Each seed trains one evaluator (with the first variant) that every model of that \
             seed is trained against, on the train lists outside the judge part; a **judge** evaluator is trained on the \
             judge part ({share:.0} % of the train lists by a hash of request_id, never seen by the models) with its own \
             seed (seed + 1000). Headlines use the oracle and the judge, never a model's own evaluator. Differences are \
             paired by seed, with 95 % t intervals.\n\n",
            share = 100.0 * pipeline.training.judge_share
        )
    } else {
        String::new()
    };
    let mut doc = format!(
        "# {suite} on {title}\n\n\
         Generated by (everything above `## Findings`):\n\n```sh\n{command}\n```\n\n{protocol}\
         Data: {source}. Models are trained by their recipe{recipes}; model selection uses a validation split of the \
         train lists. Metrics on the test lists, mean ± std over seeds {seed_list}. This run took {minutes:.1} minutes \
         on this machine.\n\n{table}\n## Paired differences\n\n{paired}",
        title = if args.data.is_some() {
            format!("`{}` logs", pipeline.name)
        } else {
            "simulated data".to_owned()
        },
        suite = match args.suite {
            Suite::Ablation => "EGLR variants",
            Suite::Paper => "The paper's baselines (Tables 2 and 3)",
        },
        command = command_line(pipeline, &args),
        recipes = match args.suite {
            Suite::Ablation => " (GRPO)".to_owned(),
            Suite::Paper => format!(" — {}", recipes(&args.variants())),
        },
        seed_list = seeds.join(", "),
    );
    if !headroom.is_empty() {
        doc += &format!(
            "\n## Headroom\n\nWhat re-ranking the test pools can gain, by the oracle: the true point-wise sort, a \
             list-wise search with the true click model, and the same search knowing only what a model observes \
             (upstream score, category, kind; `src/sim/click_model.rs`).\n\n{headroom}"
        );
    }
    if !fidelity.is_empty() {
        doc += &format!(
            "\n## Evaluator fidelity (validation pools)\n\nEach seed's evaluator against the oracle on {} validation \
             pools: Kendall tau over {} orderings of each pool, the share of list pairs it orders as the oracle does, and \
             the adjacency probe (a complementary pair adjacent vs one place apart). Mean ± std over seeds.\n\n{fidelity}",
            eglr::offline::fidelity::POOLS,
            eglr::offline::fidelity::ORDERINGS
        );
    }
    let transfer = transfer_table(&rows);
    if !transfer.is_empty() {
        doc += &format!(
            "\n## The EGLR module on other backbones (paper Table 3)\n\nEach backbone without (`X`) and with \
             (`X+eglr`: entropy gate, context-aware token, dynamic temperature) the EGLR module, same training \
             otherwise (`backbone`/`eglr`, when the study has both, is our Transformer generator).\n\n{transfer}"
        );
    }
    if !args.k_sweep.is_empty() {
        doc += &format!(
            "\n## Reasoning cap K (paper Table 4)\n\n{}",
            k_sweep_table(pipeline, &rows)
        );
    }
    if let Some(section) = curve_section(&rows, &doc_path)? {
        doc += &section;
    }
    let traced: Vec<&StudyRow> = rows
        .iter()
        .filter(|r| r.name == "backbone" || r.name == "eglr")
        .collect();
    if !traced.is_empty() {
        let plot = doc_path.with_extension("entropy.svg");
        write_doc(&plot, &entropy_plot(&traced))
            .with_context(|| format!("writing {}", plot.display()))?;
        doc += &format!(
            "\n## Entropy by list position\n\nMean entropy (nats) of the selection distribution at each position of the \
             greedy test lists, before and after the reasoning tokens of that position (equal without reasoning), and the \
             mean reasoning tokens inserted there (the paper's Figures 1, 2 and 5).\n\n![entropy by position]({})\n\n{}",
            plot.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            positions_table(&traced)
        );
    }
    write_doc(&doc_path, &doc).with_context(|| format!("writing {}", doc_path.display()))?;
    println!("wrote {} ({minutes:.1} min)", doc_path.display());
    if let Some(path) = &args.json {
        write_json(path, &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The command that regenerates the doc.
fn command_line(pipeline: &PipelineConfig, args: &Args) -> String {
    let variants: Vec<&str> = args.variants().iter().map(|v| v.name()).collect();
    let seeds: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
    // The committed pipelines are `pipelines/NAME.toml`.
    let mut cmd = format!(
        "cargo run --release -- --pipeline pipelines/{}.toml study",
        pipeline.name
    );
    match &args.data {
        Some(data) => cmd += &format!(" --data {}", data.display()),
        None => {
            cmd += &format!(
                " --lists {} --validation-lists {} --test-lists {} --world-seed {}",
                args.lists, args.validation_lists, args.test_lists, args.world_seed
            )
        }
    }
    cmd += &format!(
        " --dir {} --seeds {} --variants {}",
        args.dir.display(),
        seeds.join(","),
        variants.join(",")
    );
    if !args.k_sweep.is_empty() {
        let ks: Vec<String> = args.k_sweep.iter().map(usize::to_string).collect();
        cmd += &format!(" --k-sweep {}", ks.join(","));
    }
    if args.suite == Suite::Paper {
        cmd += " --suite paper";
    }
    cmd + &format!(" --doc {}", args.doc().display())
}

/// How each model is trained, for the doc's data paragraph.
fn recipes(variants: &[Variant]) -> String {
    let parts: Vec<String> = variants
        .iter()
        .map(|v| {
            let r = v.recipe();
            let how = match (r.supervised, r.rl) {
                (true, None) => "supervised on clicks".to_owned(),
                (true, Some(rl)) => format!("supervised, then {rl:?}"),
                (false, Some(rl)) => format!("{rl:?}"),
                (false, None) => "untrained".to_owned(),
            };
            format!("{}: {how}", v.name())
        })
        .collect();
    format!(
        "{} (see `src/model/config.rs` for each model's paper and simplifications)",
        parts.join("; ")
    )
}

/// Table 3 rows: the pairs of [`TRANSFER_PAIRS`] present in the study, base then +EGLR.
fn transfer_table(rows: &[StudyRow]) -> String {
    let find = |v: Variant| rows.iter().find(|r| r.name == v.name());
    let pairs: Vec<StudyRow> = TRANSFER_PAIRS
        .iter()
        .filter_map(|&(base, with)| Some([find(base)?.clone(), find(with)?.clone()]))
        .flatten()
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        markdown_table(&pairs)
    }
}

/// NDCG@10 and reasoning by K for `eglr`, next to the paper's numbers.
fn k_sweep_table(pipeline: &PipelineConfig, rows: &[StudyRow]) -> String {
    let k_of = |name: &str| -> Option<usize> {
        if name == "eglr" {
            Some(pipeline.generator.max_reasoning_steps)
        } else {
            name.strip_prefix("eglr K=")?.parse().ok()
        }
    };
    let mut ks: Vec<(usize, &StudyRow)> = rows
        .iter()
        .filter_map(|r| Some((k_of(&r.name)?, r)))
        .collect();
    ks.sort_by_key(|(k, _)| *k);
    let mut out = String::from(
        "| K | NDCG@10 (ours) | NDCG@10 (paper, KuaiRand-1K) | MAP@10 | Evaluator Score | reasoning steps/list | ms/list |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (k, row) in ks {
        let stat = |f: fn(&eglr::offline::evaluate::OrderingReport) -> f64| {
            let xs: Vec<f64> = row.runs.iter().map(f).collect();
            let (m, s) = study::mean_std(&xs);
            format!("{m:.4} ± {s:.4}")
        };
        let paper = PAPER_NDCG10_BY_K
            .iter()
            .find(|(pk, _)| *pk == k)
            .map_or_else(|| "-".to_owned(), |(_, v)| format!("{v:.4}"));
        out += &format!(
            "| {k} | {} | {paper} | {} | {} | {} | {} |\n",
            stat(|r| r.metrics.ndcg10),
            stat(|r| r.metrics.map10),
            stat(|r| r.metrics.evaluator_score),
            stat(|r| r.metrics.reasoning_steps_per_list),
            stat(|r| r.ms_per_list),
        );
    }
    out
}

/// Entropy before/after reasoning by position, one pair of lines per traced row.
fn entropy_plot(rows: &[&StudyRow]) -> String {
    let mut series = Vec::new();
    for row in rows {
        let positions = mean_positions(row);
        let line =
            |label: String, dashed, f: fn(&eglr::offline::evaluate::PositionStats) -> f64| Series {
                label,
                points: positions
                    .iter()
                    .map(|p| (p.position as f64, f(p)))
                    .collect(),
                dashed,
            };
        if row
            .positions
            .iter()
            .flatten()
            .any(|p| p.reasoning_steps > 0.0)
        {
            series.push(line(format!("{} before reasoning", row.name), false, |p| {
                p.entropy_before
            }));
            series.push(line(format!("{} after reasoning", row.name), true, |p| {
                p.entropy_after
            }));
        } else {
            series.push(line(row.name.clone(), false, |p| p.entropy_before));
        }
    }
    line_chart(
        "Selection entropy by list position",
        "position",
        "entropy (nats)",
        &series,
    )
}
