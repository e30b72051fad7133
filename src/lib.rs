//! eglr — a stream-processing re-ranking pipeline around EGLR (Entropy-Guided Latent
//! Reasoning, arXiv 2601.13533). See `README.md` and `docs/` for the big picture.

pub mod audit;
pub mod config;
pub mod eval;
pub mod features;
pub mod fidelity;
pub mod import;
pub mod logger;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod replay;
pub mod schema;
pub mod sim;
pub mod stream;
pub mod study;
pub mod train;
pub mod trainer;
