//! Simulated traffic driven through a running pipeline over Kafka: the load generator
//! (requests from the simulator's users, latency measured end to end) and the simulated
//! users who answer served lists with clicks from the true click model. Used by `eglr
//! loadgen`, `eglr demo` and the tests; the production stages in [`crate::stream`] know
//! nothing of the simulator.

pub mod loadgen;
mod responder;

pub use responder::{respond, VersionOutcome};
