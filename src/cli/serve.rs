//! `eglr serve`: the re-ranking consumer group. With `kafka.brokers = "embedded"` it
//! starts the embedded Kafka-protocol broker and prints its address.

use crate::cli::CommandResult;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use eglr::fault::Context;
use tokio::sync::watch;

use eglr::config::{Bootstrap, PipelineConfig};
use eglr::model::{LiveModel, ModelStore};
use eglr::stream::{serve, EmbeddedBroker, ServeSettings};

use super::device;
use super::{runtime, with_places};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bootstrap servers (overrides `kafka.brokers`), or `embedded` for the in-process
    /// broker of local runs.
    #[arg(long)]
    brokers: Option<String>,

    /// Model store directory (overrides `model.store`).
    #[arg(long, value_name = "DIR")]
    model_store: Option<PathBuf>,

    /// Address of `/metrics`, `/livez` and `/readyz`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_addr: SocketAddr,

    #[command(flatten)]
    topics: TopicArgs,

    /// Seconds between checks of the model store for a new version.
    #[arg(long, default_value_t = 2.0)]
    model_poll_s: f64,
}

/// How a stage finds its topics.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicArgs {
    /// Partitions of the topics created by the embedded broker or --create-topics.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,

    /// Create the pipeline's topics on the configured brokers if they are missing (for
    /// brokers that do not auto-create topics, such as tansu).
    #[arg(long)]
    pub create_topics: bool,
}

/// The brokers a stage talks to: the configured ones (with the topics created on
/// request), or, for `embedded`, a broker started here (kept alive by the returned
/// handle). No brokers at all is an error: starting a broker nobody else can reach
/// would look like a healthy stage that never sees a request.
pub async fn connect(
    pipeline: &PipelineConfig,
    topics: &TopicArgs,
) -> CommandResult<(Option<EmbeddedBroker>, String)> {
    let t = &pipeline.kafka.topics;
    let all = [
        (t.requests.as_str(), topics.partitions),
        (t.results.as_str(), topics.partitions),
        (t.feedback.as_str(), topics.partitions),
        (t.dead_letter.as_str(), 1),
        (t.control.as_str(), 1),
    ];
    let servers = match pipeline.kafka.bootstrap()? {
        Bootstrap::Servers(servers) => servers,
        Bootstrap::Embedded => {
            let b = EmbeddedBroker::start()?;
            b.create_topics(&all)?;
            let bootstrap = b.bootstrap();
            println!(
                "embedded Kafka broker listening at {bootstrap} (topics: {}, {}, {}, {}, {})",
                t.requests, t.results, t.feedback, t.dead_letter, t.control
            );
            return Ok((Some(b), bootstrap));
        }
    };
    if topics.create_topics {
        eglr::stream::kafka::create_topics(&pipeline.kafka, &servers, &all).await?;
    }
    Ok((None, servers))
}

/// A channel that turns true on SIGINT or SIGTERM.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        let _ = tx.send(true);
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("signal received: stopping intake");
        let _ = tx.send(true);
    });
    rx
}

pub fn run(pipeline: &PipelineConfig, args: Args) -> CommandResult<ExitCode> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let pipeline = with_places(pipeline, args.brokers, args.model_store, None);
        let (_broker, brokers) = connect(&pipeline, &args.topics).await?;
        let store = ModelStore::new(&pipeline.model.store);
        let live = Arc::new(LiveModel::open(store, device()?).context("loading the model")?);
        println!(
            "serving model {} from {}",
            live.current().meta.version,
            pipeline.model.store.display()
        );
        let settings = ServeSettings {
            pipeline,
            brokers,
            metrics_addr: Some(args.metrics_addr),
            model_poll: Duration::from_secs_f64(args.model_poll_s.max(0.05)),
            shutdown_timeout: Duration::from_secs(30),
        };
        let summary = serve(settings, live, shutdown_signal()).await?;
        println!(
            "stopped: {} requests, {} results, {} dead letters",
            summary.requests, summary.results, summary.dead_letters
        );
        Ok(ExitCode::SUCCESS)
    })
}
