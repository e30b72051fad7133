//! `eglr study`: on simulated data (or imported logs), train every variant of a suite
//! — the EGLR ablation or the paper's baselines — on the same evaluator for several
//! seeds, and write the results tables and the entropy-by-position plot.

use crate::cli::CommandResult;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use eglr::fault::Context;

use eglr::config::PipelineConfig;
use eglr::model::{EvaluatorKind, Variant};
use eglr::study::{
    self, markdown_table, Report, RlSetting, SimulatedData, StudyData, StudyPlan, StudyRun, Suite,
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

    /// Also train a variant (`VARIANT:`, default `eglr`) with another RL recipe than its
    /// own: `grpo`, `ppo`, `dapo` (DAPO, GR2's RL) or `latent-grpo` (LatentR3's), each
    /// optionally `@B` for GR2's conditional reward with improvement bonus B (e.g.
    /// `dapo,dapo@0.05,latentr3:grpo`). Each is compared with its variant's own recipe,
    /// with the copy share of the upstream order along RL.
    #[arg(long, value_delimiter = ',', value_name = "RECIPE,...")]
    rl_sweep: Vec<RlSetting>,

    /// Also train `lares` at these recurrent depths (LARES's quality against depth; the
    /// pipeline's `generator.recurrent_depth` is the `lares` row), each compared with it.
    #[arg(long, value_delimiter = ',', value_name = "DEPTH,...")]
    depth_sweep: Vec<usize>,

    /// Also train these variants with GR2's semantic item ids (`features.semantic_ids`
    /// of the pipeline, else its defaults, in place of the replaced id field), each with
    /// an evaluator of its own and compared with the variant's row. The other rows and
    /// the judge are trained without semantic ids. With `--set
    /// training.cold_item_share=S` every model and the judge never see a share S of the
    /// items (cold start).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "VARIANT,...")]
    semantic_ids: Vec<Variant>,

    /// Width of the beam search over each seed's evaluator (by expected clicks), a
    /// non-learned row: the ceiling the evaluator allows a generator. It costs about
    /// `width x pool size` evaluator calls per list position; 0: no such row.
    #[arg(long, default_value_t = 8, value_name = "WIDTH")]
    beam: usize,

    /// Also train evaluators of these kinds per seed, on the same lists as the models'
    /// evaluator (no generator): rows for each one's point-wise sort and beam search,
    /// and its fidelity. `logistic` is the hand-featured floor every neural evaluator
    /// must pass; the pipeline's own kind is already there.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND,...")]
    reference_evaluators: Vec<EvaluatorKind>,

    /// Markdown file to write (default: `docs/results-sim.md` for the ablation,
    /// `docs/results-baselines-sim.md` or, with `--data`, `docs/results-baselines-kuairand.md`
    /// for the paper suite). A `## Findings` section already in it is kept.
    #[arg(long)]
    doc: Option<PathBuf>,

    /// Also write all runs as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

impl Args {
    fn variants(&self) -> Vec<Variant> {
        self.variants
            .clone()
            .unwrap_or_else(|| self.suite.variants())
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

    /// The generator configurations to train: the variants, then `eglr` at each K.
    fn runs(&self) -> Vec<StudyRun> {
        self.variants()
            .iter()
            .map(|&variant| StudyRun {
                variant,
                max_reasoning_steps: None,
                recurrent_depth: None,
                rl: None,
                semantic_ids: false,
            })
            .chain(self.k_sweep.iter().map(|&k| StudyRun {
                variant: Variant::Eglr,
                max_reasoning_steps: Some(k),
                recurrent_depth: None,
                rl: None,
                semantic_ids: false,
            }))
            .chain(self.rl_sweep.iter().map(|&rl| StudyRun {
                variant: rl.variant,
                max_reasoning_steps: None,
                recurrent_depth: None,
                rl: Some(rl),
                semantic_ids: false,
            }))
            .chain(self.depth_sweep.iter().map(|&depth| StudyRun {
                variant: Variant::Lares,
                max_reasoning_steps: None,
                recurrent_depth: Some(depth),
                rl: None,
                semantic_ids: false,
            }))
            .chain(self.semantic_ids.iter().map(|&variant| StudyRun {
                variant,
                max_reasoning_steps: None,
                recurrent_depth: None,
                rl: None,
                semantic_ids: true,
            }))
            .collect()
    }
}

pub fn run(pipeline: &PipelineConfig, args: Args, overrides: &[String]) -> CommandResult<ExitCode> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let data = match &args.data {
        Some(dir) => StudyData::imported(dir),
        None => StudyData::simulated(
            pipeline,
            &SimulatedData {
                dir: args.dir.clone(),
                world_seed: args.world_seed,
                lists: args.lists,
                validation_lists: args.validation_lists,
                test_lists: args.test_lists,
            },
        )?,
    };
    let plan = StudyPlan {
        pipeline: pipeline.clone(),
        train_data: data.train.display().to_string(),
        test_data: data.test.display().to_string(),
        validation_data: data.validation.as_ref().map(|d| d.display().to_string()),
        world: data.world.clone(),
        seeds: args.seeds.clone(),
        runs: args.runs(),
        bundles: args.dir.join("bundles"),
        beam_width: args.beam,
        reference_evaluators: args.reference_evaluators.clone(),
    };
    let rows = study::run(&plan, &device()?)?;
    println!("{}", markdown_table(&rows));
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let doc = args.doc();
    let variants = args.variants();
    Report {
        pipeline,
        suite: args.suite,
        variants: &variants,
        k_sweep: !args.k_sweep.is_empty(),
        command: command_line(pipeline, &args, overrides),
        data: &data,
        headroom: data.headroom(args.headroom_lists)?,
        seeds: &args.seeds,
        minutes,
        doc: &doc,
    }
    .write(&rows)
    .with_context(|| format!("writing {}", doc.display()))?;
    println!("wrote {} ({minutes:.1} min)", doc.display());
    if let Some(path) = &args.json {
        write_json(path, &rows)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Sections whose `--set` overrides change what a study trains or measures, and so
/// belong in the command that regenerates its doc (not, say, Kafka credentials).
const STUDY_SECTIONS: [&str; 6] = [
    "features.",
    "training.",
    "generator.",
    "evaluator.",
    "limits.",
    "simulator.",
];

/// The command that regenerates the doc.
pub(super) fn command_line(pipeline: &PipelineConfig, args: &Args, overrides: &[String]) -> String {
    let variants: Vec<String> = args.variants().iter().map(|v| v.name()).collect();
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
    if !args.rl_sweep.is_empty() {
        let recipes: Vec<String> = args.rl_sweep.iter().map(RlSetting::flag).collect();
        cmd += &format!(" --rl-sweep {}", recipes.join(","));
    }
    if !args.depth_sweep.is_empty() {
        let depths: Vec<String> = args.depth_sweep.iter().map(usize::to_string).collect();
        cmd += &format!(" --depth-sweep {}", depths.join(","));
    }
    if !args.semantic_ids.is_empty() {
        let variants: Vec<String> = args.semantic_ids.iter().map(|v| v.name()).collect();
        cmd += &format!(" --semantic-ids {}", variants.join(","));
    }
    if args.suite == Suite::Paper {
        cmd += " --suite paper";
    }
    cmd += &format!(" --beam {}", args.beam);
    if !args.reference_evaluators.is_empty() {
        let kinds: Vec<&str> = args.reference_evaluators.iter().map(|k| k.name()).collect();
        cmd += &format!(" --reference-evaluators {}", kinds.join(","));
    }
    for o in overrides {
        if STUDY_SECTIONS.iter().any(|s| o.trim_start().starts_with(s)) {
            cmd += &format!(" --set {o}");
        }
    }
    cmd + &format!(" --doc {}", args.doc().display())
}
