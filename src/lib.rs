//! eglr — a stream-processing re-ranking pipeline around EGLR (Entropy-Guided Latent
//! Reasoning, arXiv 2601.13533). See `README.md` and `docs/` for the big picture.
//!
//! Modules are grouped by layer, lowest first: a module uses modules of its own group
//! or of groups above it, never one below, and never in a cycle (`tests/layering.rs`).

// Foundations: no dependency inside the crate.
pub mod check;
pub mod clock;
pub mod fault;
pub mod plot;
pub mod random;
pub mod ranking_metrics;

// Data: the wire format, features, the contract events are checked against, list logs.
pub mod contract;
pub mod exploration;
pub mod features;
pub mod import;
pub mod join;
pub mod list_log;
pub mod schema;

// Models and learning: candle models and their store, the encoded logged list, the
// simulator, training.
pub mod encoded;
pub mod model;
pub mod sim;
pub mod train;

// Jobs: offline evaluation and audits, the continuous-training round, the study.
pub mod offline;
pub mod retrain;

// Configuration gathers every module's section; the study, the stages and the
// simulated traffic drivers read whole pipelines.
pub mod config;
pub mod drive;
pub mod stream;
pub mod study;
