//! The streaming stages on Kafka: the serve consumer group, its offsets, metrics,
//! model store and hot swap, the feedback logger, the continuous trainer, and the
//! embedded broker.

mod http;
mod inference;
pub mod kafka;
mod logger;
mod offsets;
mod pipeline;
mod prometheus;
mod retrainer;
mod serve;

pub use inference::{rank_batch, Done, Job, Outcome};
pub use kafka::EmbeddedBroker;
pub use logger::{log, LogSettings, LogSummary};
pub use offsets::OffsetTracker;
pub use pipeline::{pipeline, PipelineSummary};
pub use prometheus::{Histogram, ServeMetrics};
pub use retrainer::{round_once, trainer, TrainerSettings, TrainerSummary};
pub use serve::{serve, ServeSettings, ServeSummary};

/// Errors of a stage, by whose fault: the outside system (retry later) or ours.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot {what}: {message}")]
    External { what: String, message: String },
    #[error(transparent)]
    Store(#[from] crate::model::StoreError),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl StreamError {
    pub fn kafka(what: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> StreamError {
        move |e| StreamError::External {
            what: what.to_owned(),
            message: e.to_string(),
        }
    }
}
