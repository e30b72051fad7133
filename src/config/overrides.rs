//! Overrides of single config keys from `EGLR_*` environment variables and `--set` flags.
//!
//! Env var names map to keys by lower-casing and splitting sections on a double
//! underscore: `EGLR_BATCHING__MAX_BATCH=128` sets `batching.max_batch`. Values are read
//! as TOML when they parse as a TOML value (`128`, `true`, `[1, 2]`, `"x"`), otherwise as
//! a plain string (`localhost:9092`). librdkafka properties are the exception (see
//! [`PROPERTY_SECTIONS`]).

use std::fmt;

use super::ConfigError;

/// Where an override came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideSource {
    Env(String),
    Flag(String),
}

impl fmt::Display for OverrideSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverrideSource::Env(name) => write!(f, "environment variable {name}"),
            OverrideSource::Flag(text) => write!(f, "flag --set {text}"),
        }
    }
}

/// One key set from outside the pipeline file.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    path: Vec<String>,
    value: toml::Value,
    source: OverrideSource,
}

const ENV_PREFIX: &str = "EGLR_";

/// Sections whose keys are librdkafka property names, which have dots of their own: the
/// rest of the key after the section is one name (`--set
/// kafka.properties.sasl.password=…`), an environment variable spells those dots as
/// single underscores (`EGLR_KAFKA__PROPERTIES__SASL_PASSWORD`; librdkafka's names have
/// none), and values are strings, never TOML (a numeric password stays a string and is
/// never echoed back in a type error).
const PROPERTY_SECTIONS: [&str; 2] = ["kafka.properties.", "kafka.property_files."];

/// The property section `key` is in and the property's name.
fn property_section(key: &str) -> Option<(&'static str, &str)> {
    PROPERTY_SECTIONS
        .iter()
        .find_map(|section| key.strip_prefix(section).map(|name| (*section, name)))
}

/// The config key an `EGLR_*` variable (without its prefix) sets.
fn env_key(name: &str) -> String {
    let key = name.to_lowercase().replace("__", ".");
    match property_section(&key) {
        Some((section, property)) => format!("{section}{}", property.replace('_', ".")),
        None => key,
    }
}

impl Override {
    /// All `EGLR_*` variables of `vars`, sorted by name so the result does not depend on
    /// the environment's order.
    pub fn from_env_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<Self>, ConfigError> {
        let mut found: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        found.sort();
        found
            .into_iter()
            .map(|(name, raw)| {
                let key = env_key(&name[ENV_PREFIX.len()..]);
                Self::new(&key, &raw, OverrideSource::Env(name))
            })
            .collect()
    }

    /// The process environment's `EGLR_*` variables.
    pub fn from_process_env() -> Result<Vec<Self>, ConfigError> {
        Self::from_env_vars(std::env::vars())
    }

    /// A `--set key=value` flag.
    pub fn parse_flag(text: &str) -> Result<Self, ConfigError> {
        let (key, raw) = text
            .split_once('=')
            .ok_or_else(|| ConfigError::BadOverride {
                name: format!("--set {text}"),
                message: "expected KEY=VALUE, e.g. --set batching.max_batch=128".into(),
            })?;
        let (key, raw) = (key.trim(), raw.trim());
        // The flag is named in error messages; a secret's value is not.
        let shown = if super::is_secret(key) {
            format!("{key}={}", super::REDACTED)
        } else {
            text.to_owned()
        };
        Self::new(key, raw, OverrideSource::Flag(shown))
    }

    fn new(key: &str, raw: &str, source: OverrideSource) -> Result<Self, ConfigError> {
        let sections = |key: &str| key.split('.').map(str::to_owned).collect::<Vec<_>>();
        let (path, value) = match property_section(key) {
            Some((section, property)) => {
                let mut path = sections(section.trim_end_matches('.'));
                path.push(property.to_owned());
                (path, toml::Value::String(raw.to_owned()))
            }
            None => (sections(key), parse_value(raw)),
        };
        if path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::BadOverride {
                name: source.to_string(),
                message: format!("`{key}` is not a config key (empty section name)"),
            });
        }
        Ok(Self {
            path,
            value,
            source,
        })
    }

    /// The dotted key, as serde_path_to_error prints paths.
    pub fn key(&self) -> String {
        self.path.join(".")
    }

    pub fn source(&self) -> &OverrideSource {
        &self.source
    }

    /// Writes the value into `table`, creating sections that the file left out.
    pub(super) fn apply(&self, table: &mut toml::Table) -> Result<(), ConfigError> {
        let (last, sections) = self
            .path
            .split_last()
            .ok_or_else(|| ConfigError::BadOverride {
                name: self.source.to_string(),
                message: "empty key".into(),
            })?;
        let mut current = table;
        for (depth, section) in sections.iter().enumerate() {
            let entry = current
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            current = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::BadOverride {
                    name: self.source.to_string(),
                    message: format!(
                        "`{}` is a value, not a section",
                        self.path[..=depth].join(".")
                    ),
                })?;
        }
        current.insert(last.clone(), self.value.clone());
        Ok(())
    }
}

fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}
