//! The wire format: Kafka event types and their decoding. Checks against a pipeline's
//! features and limits live in [`crate::contract`].

mod decode;
mod error;
mod events;
mod token;

pub use decode::{decode, Decoded, UnknownFields};
pub use error::EventError;
pub use events::{
    Candidate, DenseFeatures, ExplorationDraw, Feedback, LoggingPolicy, RankedItem, RerankRequest,
    RerankResult, ServedSource, SparseFeatures, UserFeatures, SCHEMA_VERSION,
};
pub use token::Token;
