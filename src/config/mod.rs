//! Pipeline configuration: one TOML file under `pipelines/`, overridden by `EGLR_*`
//! environment variables and `--set key=value` flags (in that order).
//!
//! Every section denies unknown keys, so a typo is an error that names the key instead
//! of a silently ignored setting. Relative paths are relative to the working directory.

mod overrides;
mod secrets;
mod sections;

use std::path::{Path, PathBuf};

pub use overrides::{Override, OverrideSource};
pub use secrets::{is_secret, KafkaProperties, REDACTED};
pub use sections::{
    BatchingConfig, Bootstrap, KafkaConfig, LogsConfig, ModelConfig, Topics, EMBEDDED_BROKERS,
};

use serde::{Deserialize, Serialize};

use crate::contract::Limits;
use crate::features::FeatureSpec;
use crate::model::{EvaluatorConfig, GeneratorConfig};
use crate::sim::SimulatorConfig;
use crate::train::TrainingConfig;

/// Errors in the pipeline file or its overrides. All of them are the user's to fix; none
/// is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read pipeline file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pipeline file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown key `{key}` {origin}: {message}")]
    UnknownKey {
        key: String,
        origin: String,
        message: String,
    },
    #[error("bad value for `{key}` {origin}: {message}")]
    BadValue {
        key: String,
        origin: String,
        message: String,
    },
    #[error("`{key}` is not set: {message}")]
    Missing { key: String, message: String },
    #[error("invalid override {name}: {message}")]
    BadOverride { name: String, message: String },
    #[error("invalid setting `{key}` in {path}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// The pipeline file and its overrides are the operator's to fix.
impl crate::fault::HasFault for ConfigError {
    fn fault(&self) -> crate::fault::Fault {
        match self {
            ConfigError::Read { source, .. } => crate::fault::Fault::of_io(source),
            _ => crate::fault::Fault::Input,
        }
    }
}

/// The whole pipeline definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// A name for logs and metrics.
    #[serde(default = "default_name")]
    pub name: String,
    pub features: FeatureSpec,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub batching: BatchingConfig,
    /// Exploration traffic served by a randomised logging policy (off by default).
    #[serde(default)]
    pub exploration: crate::exploration::ExplorationConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub logs: LogsConfig,
    #[serde(default)]
    pub simulator: SimulatorConfig,
    #[serde(default)]
    pub evaluator: EvaluatorConfig,
    #[serde(default)]
    pub generator: GeneratorConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub trainer: crate::retrain::TrainerConfig,
}

fn default_name() -> String {
    "eglr".to_owned()
}

impl PipelineConfig {
    /// Reads `path`, applies `overrides` in order, deserialises and validates.
    pub fn load(path: &Path, overrides: &[Override]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, path, overrides)
    }

    /// Like [`PipelineConfig::load`] on text already in memory; `path` only names it in
    /// error messages.
    pub fn from_toml_str(
        text: &str,
        path: &Path,
        overrides: &[Override],
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
        for o in overrides {
            o.apply(&mut table)?;
        }
        let mut config: PipelineConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table))
                .map_err(|e| deserialize_error(e, path, overrides))?;
        config.validate(path)?;
        let kafka = &mut config.kafka;
        kafka.properties.read_files(&kafka.property_files)?;
        Ok(config)
    }

    /// Cross-field checks serde cannot express.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        for (entity, spec) in [("user", &self.features.user), ("item", &self.features.item)] {
            for (name, buckets) in &spec.sparse {
                if *buckets == 0 {
                    return Err(invalid(
                        &format!("features.{entity}.sparse.{name}"),
                        "a sparse field needs at least 1 hash bucket".into(),
                    ));
                }
                if spec.dense.contains_key(name) {
                    return Err(invalid(
                        &format!("features.{entity}.dense.{name}"),
                        "a field cannot be both sparse and dense".into(),
                    ));
                }
            }
        }
        for (entity, spec) in [("user", &self.features.user), ("item", &self.features.item)] {
            if let Some(name) = spec.exact.iter().find(|n| !spec.sparse.contains_key(*n)) {
                return Err(invalid(
                    &format!("features.{entity}.exact"),
                    format!("{name:?} is not a sparse field of the {entity}: declare it under features.{entity}.sparse with its number of values"),
                ));
            }
        }
        if let Some(ids) = &self.features.semantic_ids {
            ids.validate(&self.features.item)
                .map_err(|(k, m)| invalid(&k, m))?;
        }
        self.limits.validate().map_err(|(k, m)| invalid(k, m))?;
        self.kafka.validate().map_err(|(k, m)| invalid(k, m))?;
        self.batching.validate().map_err(|(k, m)| invalid(k, m))?;
        self.exploration
            .validate()
            .map_err(|(k, m)| invalid(k, m))?;
        self.logs.validate().map_err(|(k, m)| invalid(k, m))?;
        self.simulator
            .validate(&self.limits)
            .map_err(|(k, m)| invalid(k, m))?;
        self.evaluator.validate().map_err(|(k, m)| invalid(k, m))?;
        self.generator.validate().map_err(|(k, m)| invalid(k, m))?;
        self.training.validate().map_err(|(k, m)| invalid(k, m))?;
        self.trainer.validate().map_err(|(k, m)| invalid(k, m))?;
        Ok(())
    }

    /// The effective configuration as TOML, for `eglr config`.
    pub fn to_toml(&self) -> String {
        // Serialising plain structs of strings, numbers and maps cannot fail.
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Turns serde's error into one that names the full key and where its value came from.
fn deserialize_error(
    e: serde_path_to_error::Error<toml::de::Error>,
    path: &Path,
    overrides: &[Override],
) -> ConfigError {
    let key = e.path().to_string();
    let message = e.inner().message().to_owned();
    let origin = overrides
        .iter()
        .rev()
        .find(|o| o.key() == key)
        .map(|o| format!("(set by {})", o.source()))
        .unwrap_or_else(|| format!("in {}", path.display()));
    if message.starts_with("unknown field") {
        ConfigError::UnknownKey {
            key,
            origin,
            message,
        }
    } else {
        ConfigError::BadValue {
            key,
            origin,
            message,
        }
    }
}

#[cfg(test)]
mod tests;
