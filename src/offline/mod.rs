//! Offline jobs over logged lists and simulated pools: evaluating a bundle
//! ([`evaluate`]), replaying logged requests ([`replay`]), the Evaluator Score audit of
//! several bundles ([`audit`]) with off-policy estimates from exploration lists
//! ([`off_policy`]), and the evaluator's fidelity to the simulator's oracle
//! ([`fidelity`]).

pub mod audit;
pub mod ceiling;
pub mod evaluate;
pub mod fidelity;
pub mod off_policy;
pub mod replay;

use crate::list_log::LogError;

/// Errors of the offline tools that read list logs and run a bundle (`replay`, `audit`).
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("model error: {0}")]
    Model(#[from] candle_core::Error),
}

impl crate::fault::HasFault for OfflineError {
    fn fault(&self) -> crate::fault::Fault {
        match self {
            OfflineError::Log(e) => e.fault(),
            OfflineError::Model(e) => e.fault(),
        }
    }
}
