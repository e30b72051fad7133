//! `eglr pipeline`: serve + log + trainer in one process.

use crate::cli::CommandResult;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use eglr::fault::Context;

use eglr::config::PipelineConfig;
use eglr::model::{LiveModel, ModelStore};
use eglr::stream::{pipeline, LogSettings, ServeSettings, TrainerSettings};

use super::runtime;
use super::serve::{connect, shutdown_signal, TopicArgs};
use super::{device, git_revision, with_places};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bootstrap servers (overrides `kafka.brokers`), or `embedded` for the in-process
    /// broker of local runs.
    #[arg(long)]
    brokers: Option<String>,

    /// Model store (overrides `model.store`).
    #[arg(long, value_name = "DIR")]
    model_store: Option<PathBuf>,

    /// List log directory (overrides `logs.dir`).
    #[arg(long, value_name = "DIR")]
    logs: Option<PathBuf>,

    /// Address of serve's `/metrics`, `/livez` and `/readyz`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_addr: SocketAddr,

    /// Address of the logger's `/metrics`, `/livez` and `/readyz`.
    #[arg(long, default_value = "127.0.0.1:9465")]
    log_metrics_addr: SocketAddr,

    /// Address of the trainer's `/metrics` (default: no endpoint).
    #[arg(long, value_name = "ADDR")]
    trainer_metrics_addr: Option<SocketAddr>,

    /// Seconds a served list waits for feedback before it is logged.
    #[arg(long, default_value_t = 60.0)]
    window_s: f64,

    #[command(flatten)]
    topics: TopicArgs,
}

pub fn run(base: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    ensure_input!(
        args.window_s.is_finite() && args.window_s >= 0.0,
        "--window-s must be a number of seconds >= 0"
    );
    let p = with_places(base, args.brokers, args.model_store, args.logs);
    let runtime = runtime()?;
    runtime.block_on(async {
        let (_broker, brokers) = connect(&p, &args.topics).await?;
        let live = Arc::new(
            LiveModel::open(ModelStore::new(&p.model.store), device()?)
                .context("loading the model")?,
        );
        println!(
            "serving {} from {}; logging into {}; training rounds every {} new lists",
            live.current().meta.version,
            p.model.store.display(),
            p.logs.dir.display(),
            p.trainer.min_new_lists
        );
        let summary = pipeline(
            ServeSettings {
                pipeline: p.clone(),
                brokers: brokers.clone(),
                metrics_addr: Some(args.metrics_addr),
                model_poll: Duration::from_secs(2),
                shutdown_timeout: Duration::from_secs(30),
            },
            live,
            LogSettings {
                metrics_addr: Some(args.log_metrics_addr),
                pipeline: p.clone(),
                brokers: brokers.clone(),
                group_id: format!("{}-logger", p.kafka.group_id),
                window: Duration::from_secs_f64(args.window_s),
                instance: "0".into(),
            },
            TrainerSettings {
                pipeline: p.clone(),
                brokers: Some(brokers),
                git_revision: git_revision(),
                world: None,
                device: device()?,
                metrics_addr: args.trainer_metrics_addr,
            },
            shutdown_signal(),
        )
        .await?;
        println!("stopped: {}", serde_json::to_string(&summary)?);
        Ok(ExitCode::SUCCESS)
    })
}
