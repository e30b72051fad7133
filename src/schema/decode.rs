//! Bytes -> typed event, with errors that carry the JSON path of what is wrong.

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::EventError;

/// Parses one JSON event. Trailing bytes after the value are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EventError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = render_path(&e.path().to_string());
        from_serde(e.into_inner(), path)
    })?;
    de.end().map_err(|e| from_serde(e, "top level".into()))?;
    Ok(value)
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
/// (`serde::de::Error::{missing_field, unknown_field, invalid_type}`).
fn classify_data_error(message: String, path: String) -> EventError {
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        EventError::MissingField {
            path,
            field: field.to_owned(),
        }
    } else if message.starts_with("unknown field") {
        EventError::UnknownField { path, message }
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
