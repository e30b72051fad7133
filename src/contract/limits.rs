//! Sizes every request must respect (spec §1): the `[limits]` section of a pipeline.

use serde::{Deserialize, Serialize};

use crate::check::{check, Problem};

/// Sizes every request must respect (spec §1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Default length `L` of the re-ranked list.
    #[serde(default = "Limits::default_list_len")]
    pub list_len: usize,
    /// Largest `list_len` a request may ask for.
    #[serde(default = "Limits::default_max_list_len")]
    pub max_list_len: usize,
    /// Largest candidate pool a request may carry; bigger pools go to the dead-letter topic.
    #[serde(default = "Limits::default_max_candidates")]
    pub max_candidates: usize,
    /// Refuse events with fields their schema does not list (dead-lettered as
    /// `unknown_field`). Off by default: upstream adding a field must not dead-letter
    /// all traffic; unknown fields are then skipped and counted.
    #[serde(default)]
    pub strict_fields: bool,
}

impl Limits {
    fn default_list_len() -> usize {
        10
    }
    fn default_max_list_len() -> usize {
        50
    }
    fn default_max_candidates() -> usize {
        200
    }

    pub(crate) fn validate(&self) -> Result<(), Problem> {
        check(self.list_len >= 1, "limits.list_len", || {
            "must be at least 1".into()
        })?;
        check(
            self.list_len <= self.max_list_len,
            "limits.list_len",
            || {
                format!(
                    "{} exceeds limits.max_list_len = {}",
                    self.list_len, self.max_list_len
                )
            },
        )?;
        check(
            self.max_list_len <= self.max_candidates,
            "limits.max_list_len",
            || {
                format!(
                    "{} exceeds limits.max_candidates = {}",
                    self.max_list_len, self.max_candidates
                )
            },
        )
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            list_len: Self::default_list_len(),
            max_list_len: Self::default_max_list_len(),
            max_candidates: Self::default_max_candidates(),
            strict_fields: false,
        }
    }
}
