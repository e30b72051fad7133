//! The streaming stages on Kafka: the serve consumer group, its offsets, metrics,
//! model store and hot swap, the feedback logger, the continuous trainer, and the
//! embedded broker.

mod http;
mod inference;
pub mod kafka;
pub mod loadgen;
mod log_stage;
mod metrics;
mod model_store;
mod offsets;
mod pipeline;
mod responder;
mod serve;
mod trainer_stage;

use std::path::PathBuf;

pub use inference::{rank_batch, Done, Job, Outcome};
pub use kafka::EmbeddedBroker;
pub use log_stage::{log, LogSettings, LogSummary};
pub use metrics::{Histogram, ServeMetrics};
pub use model_store::{LiveModel, ModelStore};
pub use offsets::OffsetTracker;
pub use pipeline::{pipeline, PipelineSummary};
pub use responder::{respond, VersionOutcome};
pub use serve::{serve, ServeSettings, ServeSummary};
pub use trainer_stage::{round_once, trainer, TrainerSettings, TrainerSummary};

/// Errors of a stage, by whose fault: the outside system (retry later) or ours.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot {what}: {message}")]
    External { what: String, message: String },
    #[error("no model in the store {0} (train one with `eglr train --out STORE/v000001`)")]
    NoModel(PathBuf),
    #[error("model {version} is not usable: {message}")]
    BadModel { version: String, message: String },
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl StreamError {
    fn kafka(what: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> StreamError {
        move |e| StreamError::External {
            what: what.to_owned(),
            message: e.to_string(),
        }
    }
}
