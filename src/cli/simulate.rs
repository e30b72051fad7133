//! `eglr simulate`: a seeded world and its logged traffic, written as
//! `OUT/world.json` + `OUT/logs/*.parquet` (+ `OUT/events/*.jsonl` with `--events`).

use crate::cli::CommandResult;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use eglr::fault::Context;
use serde::Serialize;

use eglr::config::PipelineConfig;
use eglr::list_log::LogWriter;
use eglr::offline::ceiling::{fidelity_ceiling, CeilingRow};
use eglr::offline::fidelity;
use eglr::sim::{headroom, write_logs, Headroom, LogStats, Traffic, World};

use super::report::{table, write_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory (gets `world.json`, `logs/` and, with --events, `events/`).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Number of logged lists to simulate.
    #[arg(long, default_value_t = 20_000)]
    lists: u64,

    /// Seed of the world (unless --world is given) and of the traffic. Same seed and
    /// pipeline => byte-identical output.
    #[arg(long, default_value_t = 7)]
    seed: u64,

    /// Reuse the users and items of an existing world.json (e.g. for a held-out set:
    /// same world, another --seed). The pipeline's [simulator] section is then ignored.
    #[arg(long, value_name = "FILE")]
    world: Option<PathBuf>,

    /// Also write `events/requests.jsonl` and `events/feedback.jsonl` (the wire events
    /// of the logged lists), e.g. to produce them into Kafka.
    #[arg(long)]
    events: bool,

    /// Replace Parquet files already in OUT/logs.
    #[arg(long)]
    force: bool,

    /// Lists used to measure the oracle headroom and the fidelity ceiling (0 to skip):
    /// the Kendall tau, adjacency and redundancy probes and point-wise sort (with and
    /// without the list effects) that evaluators with a perfect list model and stated
    /// point-wise knowledge reach on this world.
    #[arg(long, default_value_t = 500)]
    headroom_lists: u64,

    /// Write the summary as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Summary {
    out: PathBuf,
    seed: u64,
    world_seed: u64,
    users: usize,
    items: usize,
    list_len: usize,
    pool_size: usize,
    files: Vec<PathBuf>,
    seconds: f64,
    clicks_per_list: f64,
    log: LogStats,
    headroom: Option<Headroom>,
    fidelity_ceiling: Option<Vec<CeilingRow>>,
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    let started = Instant::now();
    let world = match &args.world {
        Some(path) => {
            tracing::info!(world = %path.display(), "reusing world; [simulator] of the pipeline is ignored");
            World::load(path)?
        }
        None => World::generate(&pipeline.simulator, pipeline.limits.list_len, args.seed),
    };
    let logs_dir = args.out.join("logs");
    prepare_logs_dir(&logs_dir, args.force)?;
    world.save(&args.out.join("world.json"))?;

    let traffic = Traffic::new(&world, args.seed);
    let policy = pipeline.logs.roll_policy();
    let mut writer = LogWriter::create(&logs_dir, "lists", policy)?;
    let step = (args.lists / 10).max(1);
    let mut next_report = step;
    let log = write_logs(&traffic, args.lists, 4096, &mut writer, |done| {
        if done >= next_report || done == args.lists {
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
            tracing::info!(
                lists = done,
                total = args.lists,
                lists_per_s = rate.round(),
                "simulating"
            );
            next_report = done + step;
        }
    })?;
    writer.finish()?;
    if args.events {
        write_events(&traffic, args.lists, &args.out.join("events"))?;
    }
    let headroom = (args.headroom_lists > 0).then(|| headroom(&traffic, args.headroom_lists));
    let fidelity_ceiling = (args.headroom_lists > 0).then(|| {
        let pools = args.headroom_lists.min(fidelity::POOLS as u64);
        fidelity_ceiling(&traffic, pools, fidelity::Sample::standard(args.seed))
    });

    let summary = Summary {
        files: list_files(&logs_dir)?,
        out: args.out.clone(),
        seed: args.seed,
        world_seed: world.seed,
        users: world.users.len(),
        items: world.items.len(),
        list_len: world.list_len,
        pool_size: world.params.pool_size,
        seconds: started.elapsed().as_secs_f64(),
        clicks_per_list: log.clicks_per_list(),
        log,
        headroom,
        fidelity_ceiling,
    };
    print_summary(&summary);
    if let Some(path) = &args.json {
        write_json(path, &summary)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn prepare_logs_dir(dir: &Path, force: bool) -> CommandResult<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let existing = list_files(dir)?;
    if !existing.is_empty() {
        if !force {
            bail_input!(
                "{} already holds {} Parquet files; pass --force to replace them",
                dir.display(),
                existing.len()
            );
        }
        for f in existing {
            std::fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
        }
    }
    Ok(())
}

fn list_files(dir: &Path) -> CommandResult<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    Ok(files)
}

fn write_events(traffic: &Traffic<'_>, lists: u64, dir: &Path) -> CommandResult<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let open = |name: &str| -> CommandResult<BufWriter<File>> {
        let path = dir.join(name);
        Ok(BufWriter::new(
            File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        ))
    };
    let mut requests = open("requests.jsonl")?;
    let mut feedback = open("feedback.jsonl")?;
    for k in 0..lists {
        let imp = traffic.impression(k);
        serde_json::to_writer(&mut requests, &traffic.request(&imp))?;
        requests.write_all(b"\n")?;
        let row = traffic.logged_list(&imp);
        for (t, id) in row.served_items.iter().enumerate() {
            let event = eglr::schema::Feedback {
                request_id: row.request_id.clone(),
                item_id: id.as_str().into(),
                // A list position: list lengths are checked far below u32::MAX.
                position: t as u32,
                clicked: row.clicks[t],
                dwell_ms: None,
                utility: None,
                timestamp_ms: row.timestamp_ms + 100 * (t as i64 + 1),
                schema_version: Some(eglr::schema::SCHEMA_VERSION),
            };
            serde_json::to_writer(&mut feedback, &event)?;
            feedback.write_all(b"\n")?;
        }
    }
    requests.flush()?;
    feedback.flush()?;
    Ok(())
}

fn print_summary(s: &Summary) {
    println!(
        "simulated {} lists ({} exploration) of {} items from pools of {} — {} users, {} items, seed {} — in {:.1} s",
        s.log.lists, s.log.exploration_lists, s.list_len, s.pool_size, s.users, s.items, s.seed, s.seconds
    );
    println!(
        "logs: {} file(s) under {}",
        s.files.len(),
        s.out.join("logs").display()
    );
    let ctr: Vec<String> = s
        .log
        .ctr_by_position
        .iter()
        .map(|c| format!("{c:.3}"))
        .collect();
    println!(
        "clicks per list {:.3}; click rate by position: {}",
        s.clicks_per_list,
        ctr.join(" ")
    );
    if let Some(h) = &s.headroom {
        println!(
            "\noracle score (true expected clicks per list) on {} pools:",
            h.lists
        );
        let row = |name: &str, v: f64| {
            vec![
                name.to_owned(),
                format!("{v:.4}"),
                format!("{:+.1}%", 100.0 * (v / h.initial - 1.0)),
            ]
        };
        print!(
            "{}",
            table(
                &["order", "expected clicks", "vs initial"],
                &[
                    row("logged (incl. exploration)", h.logged),
                    row("initial (upstream)", h.initial),
                    row("point-wise sort (true relevance)", h.pointwise_sort),
                    row("list-wise search (true model)", h.listwise_search),
                    row("list-wise search (observable inputs)", h.observable_search),
                ],
            )
        );
    }
    if let Some(rows) = &s.fidelity_ceiling {
        print_ceiling(rows);
    }
}

/// The fidelity an evaluator with the world's list effects reaches by what it knows of
/// the point-wise relevance (`eglr::offline::ceiling`).
fn print_ceiling(rows: &[CeilingRow]) {
    let Some(first) = rows.first() else { return };
    println!(
        "\nfidelity ceiling: evaluators that model the list effects exactly, by what they know of point-wise relevance ({} pools, {} orderings each; as `eval --simulator` measures):",
        first.fidelity.pools, first.fidelity.orderings_per_pool
    );
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.knowledge.clone(),
                format!("{:.2}", r.logit_rmse),
                format!("{:.3}", r.fidelity.kendall_tau),
                format!("{:.1} %", 100.0 * r.fidelity.pair_agreement),
                format!(
                    "{:.1} %",
                    100.0 * r.fidelity.adjacency.evaluator_prefers_adjacent
                ),
                format!("{:.1} %", 100.0 * r.fidelity.redundancy.evaluator_sees_loss),
                format!("{:+.1} %", 100.0 * r.pointwise_sort_vs_initial),
                format!(
                    "{:+.1} %",
                    100.0 * r.fidelity.pointwise.sort_vs_initial_without_list_effects
                ),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "point-wise knowledge",
                "logit error (rms)",
                "Kendall tau",
                "pairs as oracle",
                "prefers adjacent",
                "sees redundancy",
                "its point-wise sort vs initial",
                "the same, list effects off"
            ],
            &body
        )
    );
}
