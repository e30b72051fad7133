//! `eglr serve`: the re-ranking consumer group. Without configured brokers it starts
//! the embedded Kafka-protocol broker and prints its address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use eglr::config::PipelineConfig;
use eglr::stream::{serve, EmbeddedBroker, LiveModel, ModelStore, ServeSettings};

use super::device;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bootstrap servers (overrides `kafka.brokers`; empty: embedded broker).
    #[arg(long)]
    brokers: Option<String>,

    /// Model store directory (overrides `model.store`).
    #[arg(long, value_name = "DIR")]
    model_store: Option<PathBuf>,

    /// Address of `/metrics` and `/healthz`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_addr: SocketAddr,

    /// Partitions of the topics created by the embedded broker or --create-topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,

    /// Create the pipeline's topics on the configured brokers if they are missing (for
    /// brokers that do not auto-create topics, such as tansu).
    #[arg(long)]
    create_topics: bool,

    /// Seconds between checks of the model store for a new version.
    #[arg(long, default_value_t = 2.0)]
    model_poll_s: f64,
}

/// Starts the embedded broker with the pipeline's topics.
pub fn embedded(pipeline: &PipelineConfig, partitions: i32) -> anyhow::Result<EmbeddedBroker> {
    let broker = EmbeddedBroker::start()?;
    let t = &pipeline.kafka.topics;
    broker.create_topics(&[
        (t.requests.as_str(), partitions),
        (t.results.as_str(), partitions),
        (t.feedback.as_str(), partitions),
        (t.dead_letter.as_str(), 1),
        (t.control.as_str(), 1),
    ])?;
    Ok(broker)
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

pub fn run(pipeline: &PipelineConfig, args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut pipeline = pipeline.clone();
        if let Some(b) = args.brokers {
            pipeline.kafka.brokers = b;
        }
        if let Some(s) = args.model_store {
            pipeline.model.store = s;
        }
        let _broker;
        let brokers = if pipeline.kafka.brokers.is_empty() {
            let b = embedded(&pipeline, args.partitions)?;
            let bootstrap = b.bootstrap();
            println!(
                "embedded Kafka broker listening at {bootstrap} (topics: {}, {}, {})",
                pipeline.kafka.topics.requests,
                pipeline.kafka.topics.results,
                pipeline.kafka.topics.dead_letter
            );
            _broker = b;
            bootstrap
        } else {
            if args.create_topics {
                let t = &pipeline.kafka.topics;
                eglr::stream::kafka::create_topics(
                    &pipeline.kafka,
                    &pipeline.kafka.brokers,
                    &[
                        (t.requests.as_str(), args.partitions),
                        (t.results.as_str(), args.partitions),
                        (t.feedback.as_str(), args.partitions),
                        (t.dead_letter.as_str(), 1),
                        (t.control.as_str(), 1),
                    ],
                )
                .await?;
            }
            pipeline.kafka.brokers.clone()
        };
        let store = ModelStore::new(&pipeline.model.store);
        let live = Arc::new(LiveModel::open(store, device()).context("loading the model")?);
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
