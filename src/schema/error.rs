//! Why an event was refused. Every variant is the sender's fault (bad input): the stage
//! routes the raw bytes to the dead-letter topic with [`EventError::kind`] in a header
//! and goes on; retrying would fail the same way.

/// A malformed or invalid event, with the JSON path of the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("malformed JSON at line {line} column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("missing field `{field}` in {path}")]
    MissingField { path: String, field: String },
    #[error("wrong type at {path}: {message}")]
    WrongType { path: String, message: String },
    #[error("unknown field {path} (limits.strict_fields refuses fields the schema does not list)")]
    UnknownField { path: String },
    #[error("{path} is empty")]
    EmptyId { path: String },
    #[error("{path} is {len} bytes long; at most {max} are allowed")]
    IdTooLong {
        path: String,
        len: usize,
        max: usize,
    },
    #[error("duplicate item_id {item_id:?} at candidates[{first}] and candidates[{second}]")]
    DuplicateItem {
        item_id: String,
        first: usize,
        second: usize,
    },
    #[error("the request has no candidates")]
    NoCandidates,
    #[error("{count} candidates exceed the limit of {max} (limits.max_candidates)")]
    TooManyCandidates { count: usize, max: usize },
    #[error("list_len {list_len} is larger than the pool of {candidates} candidates")]
    ListLongerThanPool { list_len: usize, candidates: usize },
    #[error("list_len {list_len} is outside 1..={max} (limits.max_list_len)")]
    ListLenOutOfRange { list_len: usize, max: usize },
    #[error("{path} is {value}, not a finite number")]
    NonFinite { path: String, value: f64 },
    #[error("{path} is {value}; {expected}")]
    OutOfRange {
        path: String,
        value: f64,
        expected: &'static str,
    },
    #[error("unknown {entity} feature `{name}` at {path}; the pipeline declares: {known}")]
    UnknownFeature {
        entity: &'static str,
        path: String,
        name: String,
        known: String,
    },
    #[error("{entity} feature `{name}` at {path} is declared {declared}, not {given}")]
    WrongFeatureKind {
        entity: &'static str,
        path: String,
        name: String,
        declared: &'static str,
        given: &'static str,
    },
    #[error(
        "{path}: `{name}` is not sent as a feature; set the candidate's `upstream_score` field"
    )]
    ReservedFeature { path: String, name: String },
    #[error("the result has no items")]
    EmptyResult,
    #[error(
        "item_id {item_id:?} appears twice in the result (items[{first}] and items[{second}])"
    )]
    DuplicateResultItem {
        item_id: String,
        first: usize,
        second: usize,
    },
}

/// An event that fails decoding or validation is its producer's to fix.
impl crate::fault::HasFault for EventError {
    fn fault(&self) -> crate::fault::Fault {
        crate::fault::Fault::Input
    }
}

impl EventError {
    /// A short stable name for metrics labels and the dead-letter `error.kind` header.
    pub fn kind(&self) -> &'static str {
        match self {
            EventError::Syntax { .. } => "malformed_json",
            EventError::MissingField { .. } => "missing_field",
            EventError::WrongType { .. } => "wrong_type",
            EventError::UnknownField { .. } => "unknown_field",
            EventError::EmptyId { .. } | EventError::IdTooLong { .. } => "bad_id",
            EventError::DuplicateItem { .. } | EventError::DuplicateResultItem { .. } => {
                "duplicate_item"
            }
            EventError::NoCandidates | EventError::EmptyResult => "empty_list",
            EventError::TooManyCandidates { .. } => "too_many_candidates",
            EventError::ListLongerThanPool { .. } | EventError::ListLenOutOfRange { .. } => {
                "bad_list_len"
            }
            EventError::NonFinite { .. } => "non_finite",
            EventError::OutOfRange { .. } => "out_of_range",
            EventError::UnknownFeature { .. } => "unknown_feature",
            EventError::WrongFeatureKind { .. } => "wrong_feature_kind",
            EventError::ReservedFeature { .. } => "reserved_feature",
        }
    }
}
