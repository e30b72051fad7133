//! The published contract files (`schemas/`) stay in step with the code.

use std::collections::BTreeSet;
use std::path::Path;

use eglr::list_log::log_schema;
use eglr::schema::{
    Candidate, Feedback, RankedItem, RerankRequest, RerankResult, Token, UserFeatures,
};
use serde_json::Value;

fn schema(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The schema lists exactly the fields the code writes (with every optional field set),
/// refuses others, and each field it requires is refused as missing by the decoder.
fn assert_matches<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    schema: &Value,
    full_event: &Value,
    what: &str,
) {
    assert_eq!(
        keys(&schema["properties"]),
        keys(full_event),
        "{what}: properties"
    );
    assert_eq!(schema["additionalProperties"], Value::Bool(false), "{what}");
    for required in schema["required"].as_array().expect("required list") {
        let name = required.as_str().expect("string");
        let mut partial = full_event.clone();
        partial.as_object_mut().expect("object").remove(name);
        let bytes = serde_json::to_vec(&partial).expect("encodes");
        let e = eglr::schema::decode::<T>(&bytes).expect_err(name);
        assert_eq!(e.kind(), "missing_field", "{what}: {name}");
    }
}

#[test]
fn request_schema_matches_the_types() {
    let request = RerankRequest {
        request_id: "r".into(),
        user: UserFeatures {
            id: Token::from("u"),
            sparse: Default::default(),
            dense: Default::default(),
        },
        candidates: vec![Candidate {
            item_id: Token::from("i"),
            sparse: Default::default(),
            dense: Default::default(),
            upstream_score: Some(1.0),
        }],
        list_len: 1,
        timestamp_ms: 0,
    };
    let event = serde_json::to_value(&request).expect("encodes");
    let s = schema("rerank_request.schema.json");
    assert_matches::<RerankRequest>(&s, &event, "request");
    assert_eq!(
        keys(&s["properties"]["user"]["properties"]),
        keys(&event["user"])
    );
    assert_eq!(
        keys(&s["properties"]["candidates"]["items"]["properties"]),
        keys(&event["candidates"][0])
    );
}

#[test]
fn result_and_feedback_schemas_match_the_types() {
    let result = RerankResult {
        request_id: "r".into(),
        model_version: "v1".into(),
        items: vec![RankedItem {
            item_id: Token::from("i"),
            score: 0.5,
            reasoning_steps: 1,
            entropy_before: 1.0,
            entropy_after: 0.5,
        }],
        latency_ms: 1.0,
        timestamp_ms: 0,
        source: eglr::schema::ServedSource::Model,
    };
    let event = serde_json::to_value(&result).expect("encodes");
    let s = schema("rerank_result.schema.json");
    assert_matches::<RerankResult>(&s, &event, "result");
    assert_eq!(
        keys(&s["properties"]["items"]["items"]["properties"]),
        keys(&event["items"][0])
    );

    let feedback = Feedback {
        request_id: "r".into(),
        item_id: Token::from("i"),
        position: 0,
        clicked: true,
        dwell_ms: Some(1.0),
        utility: Some(1.0),
        timestamp_ms: 0,
    };
    let event = serde_json::to_value(&feedback).expect("encodes");
    assert_matches::<Feedback>(&schema("feedback.schema.json"), &event, "feedback");
}

#[test]
fn log_schema_doc_lists_every_column_with_its_type() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/list_log.md");
    let doc = std::fs::read_to_string(&path).expect("schemas/list_log.md");
    let documented: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let actual: Vec<String> = log_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(documented, actual, "columns of schemas/list_log.md");
}
