//! Offline jobs over logged lists and simulated pools: evaluating a bundle
//! ([`evaluate`]), replaying logged requests ([`replay`]), the Evaluator Score audit of
//! several bundles ([`audit`]) with off-policy estimates from exploration lists
//! ([`off_policy`]), and the evaluator's fidelity to the simulator's oracle
//! ([`fidelity`]).

pub mod audit;
pub mod evaluate;
pub mod fidelity;
pub mod off_policy;
pub mod replay;

use crate::features::FeatureEncoder;
use crate::list_log::{LogError, LoggedList};
use crate::train::Example;

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

/// Encodes logged rows read from `source` with `encoder`.
pub fn encode_rows(
    rows: &[LoggedList],
    encoder: &FeatureEncoder,
    source: &str,
) -> Result<Vec<Example>, OfflineError> {
    rows.iter()
        .map(|row| Example::from_logged(row, encoder))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| {
            OfflineError::Log(LogError::BadFile {
                path: source.into(),
                message,
            })
        })
}
