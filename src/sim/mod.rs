//! The ground-truth simulator: a seeded world of users and items with a click model that
//! has list-wise effects (position bias, redundancy, complementarity), an upstream ranker
//! with noisy point-wise scores, exploration traffic, and an exact oracle score.

mod click_model;
mod dataset;
mod traffic;
mod world;

use std::path::{Path, PathBuf};

use rand::Rng;

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

impl SimError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        SimError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// A standard normal draw (Box-Muller); kept here so the stream of draws, and so every
/// world and log, is fixed by our code and not by a dependency's sampler.
pub fn normal<R: Rng>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // in (0, 1]: ln is finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests;
