//! `eglr log`: the feedback logger's consumer group (requests + results + feedback ->
//! Parquet list log).

use crate::cli::CommandResult;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use eglr::config::PipelineConfig;
use eglr::stream::{log, LogSettings};

use super::serve::{connect, shutdown_signal, TopicArgs};
use super::{runtime, with_places};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bootstrap servers (overrides `kafka.brokers`), or `embedded` for the in-process
    /// broker of local runs.
    #[arg(long)]
    brokers: Option<String>,

    /// Directory the list log is published into (overrides `logs.dir`).
    #[arg(long, value_name = "DIR")]
    logs: Option<PathBuf>,

    /// Seconds a served list waits for feedback after its result before it is written.
    #[arg(long, default_value_t = 60.0)]
    window_s: f64,

    /// Consumer group of the logger (default: `<kafka.group_id>-logger`).
    #[arg(long)]
    group: Option<String>,

    /// Name of this instance in its file names; instances sharing a log directory need
    /// distinct names.
    #[arg(long, default_value = "0")]
    instance: String,

    /// Address of `/metrics`, `/livez` and `/readyz`.
    #[arg(long, default_value = "127.0.0.1:9465")]
    metrics_addr: std::net::SocketAddr,

    #[command(flatten)]
    topics: TopicArgs,
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    ensure_input!(
        args.window_s.is_finite() && args.window_s >= 0.0,
        "--window-s must be a number of seconds >= 0, not {}",
        args.window_s
    );
    let pipeline = with_places(pipeline, args.brokers, None, args.logs);
    let runtime = runtime()?;
    runtime.block_on(async {
        let (_broker, brokers) = connect(&pipeline, &args.topics).await?;
        let settings = LogSettings {
            metrics_addr: Some(args.metrics_addr),
            group_id: args
                .group
                .unwrap_or_else(|| format!("{}-logger", pipeline.kafka.group_id)),
            brokers,
            window: Duration::from_secs_f64(args.window_s),
            instance: args.instance,
            pipeline: pipeline.clone(),
        };
        println!(
            "logging joined lists into {} (group {}, window {:.1} s)",
            pipeline.logs.dir.display(),
            settings.group_id,
            args.window_s
        );
        let summary = log(settings, shutdown_signal()).await?;
        println!("stopped: {}", serde_json::to_string(&summary)?);
        Ok(ExitCode::SUCCESS)
    })
}
