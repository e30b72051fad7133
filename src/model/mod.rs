//! The EGLR models in candle (spec §3-4): the evaluator, the generator with
//! entropy-guided latent reasoning and a KV cache, the paper's baselines as
//! configurations of it (or of the score-and-sort [`Scorer`]), model bundles and the
//! versioned store serving reads them from.

mod beam;
mod bundle;
mod config;
mod embedding;
mod evaluator;
mod generator;
mod host;
mod layers;
mod ranker;
mod reward;
mod scorer;
mod store;

pub use beam::{beam_search, SearchObjective};
pub use bundle::{
    judge_conflict, Bundle, BundleError, BundleMeta, DataPart, TrainingInfo, BUNDLE_FORMAT,
};
pub use config::{
    Architecture, DecoderKind, EpochCriterion, EvaluatorConfig, EvaluatorKind, GeneratorConfig,
    ReasoningMode, ReasoningPolicy, ReasoningToken, Recipe, Rl, ScorerKind, UpstreamMargin,
    Variant,
};
pub use embedding::{FeatureEmbedding, PoolTensors};
pub use evaluator::{evaluator_loss, gather_rows, EmbeddedPools, Evaluator, ListScores};
pub use generator::{
    DecodeOptions, Decoded, DecoderState, Generator, Pick, PoolEncoding, PositionTrace,
};
pub use layers::{mask_scores, KvCache, LayerNorm, LAYER_NORM_NAMES};
pub use ranker::{is_upstream_order, upstream_lists, Ranker};
pub use reward::{
    batch_advantages, click_probabilities, conditional_rewards, group_advantages,
    informative_groups, list_values, rewards, Reward,
};
pub use scorer::Scorer;
pub use store::{LiveModel, ModelStore, StoreError};

#[cfg(test)]
pub(crate) mod tests;
