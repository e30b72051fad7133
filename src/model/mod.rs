//! The EGLR models in candle (spec §3-4): the evaluator, the generator with
//! entropy-guided latent reasoning and a KV cache, and model bundles.

mod bundle;
mod config;
mod embedding;
mod evaluator;
mod generator;
mod layers;

pub use bundle::{Bundle, BundleError, BundleMeta, TrainingInfo, BUNDLE_FORMAT};
pub use config::{
    EvaluatorConfig, GeneratorConfig, ReasoningMode, ReasoningPolicy, ReasoningToken, Variant,
};
pub use embedding::{FeatureEmbedding, PoolTensors};
pub use evaluator::{evaluator_loss, gather_rows, Evaluator, ListScores};
pub use generator::{DecodeOptions, Decoded, EncodedPool, Generator, PositionTrace, Selection};
pub use layers::KvCache;

#[cfg(test)]
mod tests;
