//! librdkafka properties, some of which are secrets (`sasl.password`, `ssl.key.pem`):
//! they can be read from files (a mounted Kubernetes Secret) and are never shown — not
//! by `eglr config`, not in a `Debug` print, not in a config error.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

use super::ConfigError;

/// What a secret value is shown as.
pub const REDACTED: &str = "***";

/// Whether librdkafka's property `name` holds a secret: passwords, client secrets, JAAS
/// and OAUTHBEARER configs (which embed credentials) and private keys given inline.
pub fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "oauthbearer.config",
        "key.pem",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// librdkafka properties passed through to every client of a stage.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct KafkaProperties(BTreeMap<String, String>);

impl KafkaProperties {
    /// The properties as they are shown: secret values replaced by [`REDACTED`].
    fn shown(&self) -> BTreeMap<&str, &str> {
        self.0
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { REDACTED } else { v }))
            .collect()
    }

    /// Reads every `files` entry (property name -> path) into the properties. A trailing
    /// newline is dropped (files written with `echo` end with one; a password does not).
    /// A property set both inline and from a file is refused: which one wins would be a
    /// guess.
    pub(super) fn read_files(
        &mut self,
        files: &BTreeMap<String, PathBuf>,
    ) -> Result<(), ConfigError> {
        for (name, path) in files {
            let key = format!("kafka.property_files.{name}");
            if self.0.contains_key(name) {
                return Err(ConfigError::BadOverride {
                    name: key,
                    message: format!(
                        "`{name}` is also set in kafka.properties; set it in one place"
                    ),
                });
            }
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let value = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text);
            self.0.insert(name.clone(), value.to_owned());
        }
        Ok(())
    }
}

impl Deref for KafkaProperties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for KafkaProperties {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Serialised only for display (`eglr config`): nothing reads a serialised pipeline back
/// as the configuration of a running stage, so secrets are left out.
impl Serialize for KafkaProperties {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shown().serialize(s)
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties() -> KafkaProperties {
        let mut p = KafkaProperties::default();
        for (k, v) in [
            ("sasl.password", "hunter2"),
            ("sasl.username", "svc-eglr"),
            ("ssl.key.pem", "-----BEGIN"),
            ("sasl.jaas.config", "user pass"),
            ("sasl.oauthbearer.client.secret", "s3"),
        ] {
            p.insert(k.to_owned(), v.to_owned());
        }
        p
    }

    #[test]
    fn secrets_are_shown_redacted_and_the_rest_as_they_are() {
        let p = properties();
        let shown = format!("{p:?} {}", serde_json::to_string(&p).expect("json"));
        for secret in ["hunter2", "-----BEGIN", "user pass", "\"s3\""] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("svc-eglr"), "{shown}");
        assert_eq!(shown.matches(REDACTED).count(), 8, "{shown}");
        assert_eq!(p["sasl.password"], "hunter2", "the value itself is kept");
    }

    #[test]
    fn properties_are_read_from_files_without_their_trailing_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (crlf, lf) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&crlf, "pa ss\r\n").expect("write");
        std::fs::write(&lf, "line\n\n").expect("write");
        let mut p = KafkaProperties::default();
        let files = BTreeMap::from([
            ("sasl.password".to_owned(), crlf),
            ("ssl.key.password".to_owned(), lf),
        ]);
        p.read_files(&files).expect("read");
        assert_eq!(p["sasl.password"], "pa ss");
        assert_eq!(
            p["ssl.key.password"], "line\n",
            "only one newline is dropped"
        );

        let missing = BTreeMap::from([("sasl.password".to_owned(), dir.path().join("none"))]);
        let err = KafkaProperties::default()
            .read_files(&missing)
            .expect_err("missing file");
        assert!(err.to_string().contains("none"), "{err}");
        let both = p.clone().read_files(&files).expect_err("set twice");
        assert!(both.to_string().contains("set it in one place"), "{both}");
    }
}
