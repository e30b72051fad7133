//! Bytes -> typed event, with errors that carry the JSON path of what is wrong.

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::EventError;

/// What the decoder does with a field the event type does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownFields {
    /// Skip it and report its path: upstream may add a field before eglr knows it, and
    /// one new field must not send all traffic to the dead-letter topic.
    Ignore,
    /// Refuse the event (`limits.strict_fields`): a misspelt optional field is caught at
    /// the edge instead of silently taking its default.
    Refuse,
}

/// A decoded event and the JSON paths of the fields it skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<T> {
    pub event: T,
    pub ignored: Vec<String>,
}

/// Parses one JSON event. Trailing bytes after the value are an error; so is, under
/// [`UnknownFields::Refuse`], any field the type does not have.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    unknown: UnknownFields,
) -> Result<Decoded<T>, EventError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut ignored = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| ignored.push(path.to_string());
    let tracked = serde_ignored::Deserializer::new(&mut de, &mut note);
    let event = serde_path_to_error::deserialize(tracked).map_err(|e| {
        let path = render_path(&e.path().to_string());
        from_serde(e.into_inner(), path)
    })?;
    de.end().map_err(|e| from_serde(e, "top level".into()))?;
    if let (UnknownFields::Refuse, Some(path)) = (unknown, ignored.first()) {
        return Err(EventError::UnknownField { path: path.clone() });
    }
    Ok(Decoded { event, ignored })
}

/// serde_path_to_error prints the root as ".".
fn render_path(path: &str) -> String {
    if path == "." || path.is_empty() {
        "top level".to_owned()
    } else {
        path.to_owned()
    }
}

fn from_serde(e: serde_json::Error, path: String) -> EventError {
    let message = strip_position(&e.to_string());
    match e.classify() {
        Category::Io | Category::Syntax | Category::Eof => EventError::Syntax {
            line: e.line(),
            column: e.column(),
            message,
        },
        Category::Data => classify_data_error(message, path),
    }
}

/// serde reports data errors as text only; its wording is stable
/// (`serde::de::Error::{missing_field, invalid_type}`).
fn classify_data_error(message: String, path: String) -> EventError {
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        EventError::MissingField {
            path,
            field: field.to_owned(),
        }
    } else {
        EventError::WrongType { path, message }
    }
}

/// serde_json appends " at line L column C"; the path says more, so drop it.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
