//! The ground-truth simulator: a seeded world of users and items with a click model that
//! has list-wise effects (position bias, redundancy, complementarity), an upstream ranker
//! with noisy point-wise scores, exploration traffic, and an exact oracle score.

mod click_model;
mod config;
mod dataset;
mod traffic;
mod world;

use std::path::{Path, PathBuf};

pub use click_model::GroupMeans;
pub use config::SimulatorConfig;
pub use dataset::{
    headroom, reference_lists, upstream_calibration, write_logs, Headroom, LogStats,
};
pub use traffic::{Impression, Traffic};
pub use world::{SimItem, SimUser, World, ACTIVITY_WEIGHT, WORLD_FORMAT};

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid world file: {message}")]
    BadWorld { path: PathBuf, message: String },
    #[error("cannot encode the world (a bug in eglr): {0}")]
    Encode(String),
}

impl crate::fault::HasFault for SimError {
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            SimError::Io { source, .. } => Fault::of_io(source),
            SimError::BadWorld { .. } => Fault::Input,
            SimError::Encode(_) => Fault::Bug,
        }
    }
}

impl SimError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        SimError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
