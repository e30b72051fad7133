//! The feedback logger (`eglr log`): joins requests, results and feedback into the
//! Parquet list log. This module holds the join; the Kafka stage around it follows.

mod join;

pub use join::{Closed, JoinStats, ListJoiner, Source, Unjoined, UnjoinedReason};

#[cfg(test)]
mod tests;
