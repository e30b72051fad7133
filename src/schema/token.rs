//! Identifiers and sparse feature values: a string, or an integer that is kept as its
//! decimal string. Upstream systems send ids either way; hashing sees the same text.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// An id or categorical value as it arrived, normalised to text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Token(pub String);

impl Token {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Token {
    fn from(s: &str) -> Self {
        Token(s.to_owned())
    }
}

impl From<String> for Token {
    fn from(s: String) -> Self {
        Token(s)
    }
}

impl From<u64> for Token {
    fn from(n: u64) -> Self {
        Token(n.to_string())
    }
}

struct TokenVisitor;

impl Visitor<'_> for TokenVisitor {
    type Value = Token;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an integer")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Token, E> {
        Ok(Token(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Token, E> {
        Ok(Token(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Token, E> {
        Ok(Token(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Token, E> {
        Ok(Token(v.to_string()))
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TokenVisitor)
    }
}
