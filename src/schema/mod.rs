//! The wire contract: Kafka event types, their decoding and their validation.

mod decode;
mod error;
mod events;
mod token;
mod validate;

pub use decode::decode;
pub use error::EventError;
pub use events::{
    Candidate, DenseFeatures, Feedback, RankedItem, RerankRequest, RerankResult, ServedSource,
    SparseFeatures, UserFeatures,
};
pub use token::Token;
pub use validate::{Contract, MAX_ID_BYTES};

#[cfg(test)]
mod tests;
