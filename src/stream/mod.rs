//! The streaming stages on Kafka: the serve consumer group, its offsets, metrics,
//! model store and hot swap, the feedback logger, the continuous trainer, and the
//! embedded broker.

mod headers;
mod http;
mod inference;
pub mod kafka;
mod logger;
mod offsets;
mod pipeline;
mod prometheus;
mod quality;
mod serve;
mod stage;
mod trainer;

use crate::fault::{Fault, HasFault};
pub use headers::TraceContext;
pub use inference::{rank_batch, Done, Job};
pub use kafka::EmbeddedBroker;
pub use logger::{log, LogSettings, LogSummary, UNJOINED_DIR};
pub use offsets::OffsetTracker;
pub use pipeline::{pipeline, PipelineSummary};
pub use prometheus::{Histogram, ServeMetrics};
pub use serve::{serve, ServeSettings, ServeSummary};
pub use stage::Stage;
pub use trainer::{round_once, trainer, TrainerSettings, TrainerSummary};

/// Errors that stop a stage. [`HasFault`] says whose fault each is: the binary exits
/// with its code, so a supervisor can tell a broker outage (restart later) from a bad
/// setting or model (fix first).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot {what}: {message}")]
    External { what: String, message: String },
    #[error(transparent)]
    Store(#[from] crate::model::StoreError),
    #[error("cannot write the list log: {0}")]
    Log(#[from] crate::list_log::LogError),
    #[error("training round: {0}")]
    Round(#[from] crate::retrain::RoundError),
    /// The cluster is set up in a way the stage cannot work with (the operator's to fix).
    #[error("{0}")]
    Topology(String),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl HasFault for StreamError {
    fn fault(&self) -> Fault {
        match self {
            StreamError::External { .. } => Fault::External,
            StreamError::Store(e) => e.fault(),
            StreamError::Log(e) => e.fault(),
            StreamError::Round(e) => e.fault(),
            StreamError::Topology(_) => Fault::Input,
            StreamError::Internal(_) => Fault::Bug,
        }
    }
}

impl StreamError {
    pub fn kafka(what: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> StreamError {
        move |e| StreamError::External {
            what: what.to_owned(),
            message: e.to_string(),
        }
    }
}
