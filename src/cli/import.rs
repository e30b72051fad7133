//! `eglr import kuairand`: a public data set into the Parquet list log.

use crate::cli::CommandResult;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use eglr::config::PipelineConfig;
use eglr::import::kuairand::{self, ImportOptions, Label, SplitAt, Utility};

use super::report::{table, write_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    source: Source,
}

#[derive(Debug, clap::Subcommand)]
enum Source {
    /// KuaiRand (Pure, 1K or 27K; Gao et al., CIKM 2022, https://kuairand.com, CC BY-SA
    /// 4.0). Each user's standard-log impressions, sorted by time, are cut into lists of
    /// --list-len (remainder dropped); the logged order is the initial order. Writes
    /// OUT/train and OUT/test (split by time) and OUT/import.json. Use it with
    /// `--pipeline pipelines/kuairand.toml`, which declares the feature columns.
    Kuairand(KuaiRandArgs),
}

#[derive(Debug, clap::Args)]
struct KuaiRandArgs {
    /// KuaiRand `data/` folder: log_standard_*.csv, user_features_*.csv,
    /// video_features_basic_*.csv, video_features_statistic_*.csv.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,

    /// Output directory; its train/ and test/ must not hold Parquet files yet.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Impressions per list (default: the pipeline's limits.list_len).
    #[arg(long)]
    list_len: Option<usize>,

    /// Log column used as the click label.
    #[arg(long, value_enum, default_value_t = Label::Click)]
    label: Label,

    /// What the list utility measures.
    #[arg(long, value_enum, default_value_t = Utility::LabelCount)]
    utility: Utility,

    /// Lists whose first impression is before this are train, the rest test: `auto` (the
    /// time that leaves 20 % of the lists for test), a date YYYY-MM-DD (its first
    /// impression), or a time in ms since the epoch.
    #[arg(long, default_value = "auto")]
    split_at: SplitAt,

    /// Log bytes per sort shard: bounds memory on the 1K/27K logs.
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    shard_bytes: u64,

    /// Also write the import summary as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    let Source::Kuairand(args) = args.source;
    let started = Instant::now();
    let options = ImportOptions {
        list_len: args.list_len.unwrap_or(pipeline.limits.list_len),
        label: args.label,
        utility: args.utility,
        split_at: args.split_at,
        roll: pipeline.logs.roll_policy(),
        shard_bytes: args.shard_bytes,
    };
    let summary = kuairand::import(&args.dir, &args.out, &pipeline.features, &options)?;
    let rows: Vec<Vec<String>> = [
        ("impressions", summary.impressions.to_string()),
        ("users", summary.users.to_string()),
        ("videos", summary.videos.to_string()),
        ("lists", summary.lists.to_string()),
        ("train lists", summary.train_lists.to_string()),
        ("test lists", summary.test_lists.to_string()),
        ("dropped remainder", summary.dropped_remainder.to_string()),
        ("repeated in list", summary.repeated_in_list.to_string()),
        ("positive labels", summary.positive_labels.to_string()),
        (
            "null cells",
            summary.nulls.values().sum::<u64>().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_owned(), v])
    .collect();
    print!("{}", table(&["", "count"], &rows));
    println!("split: {} ({} ms)", summary.split_rule, summary.split_at_ms);
    println!(
        "wrote {}/train and {}/test in {:.1} s",
        args.out.display(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.json {
        write_json(path, &summary)?;
    }
    Ok(ExitCode::SUCCESS)
}
