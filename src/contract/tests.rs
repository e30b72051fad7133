use serde_json::{json, Value};

use super::*;
use crate::features::{DenseTransform, EntityFeatures, FeatureSpec};
use crate::schema::{decode, EventError};

fn spec() -> FeatureSpec {
    FeatureSpec {
        user: EntityFeatures {
            sparse: [("segment".to_owned(), 16)].into(),
            dense: [("sessions_per_day".to_owned(), DenseTransform::Log1p)].into(),
            ..Default::default()
        },
        item: EntityFeatures {
            sparse: [("category".to_owned(), 64), ("kind".to_owned(), 8)].into(),
            dense: [("views".to_owned(), DenseTransform::Log1p)].into(),
            ..Default::default()
        },
        semantic_ids: None,
    }
}

fn limits() -> Limits {
    Limits {
        list_len: 2,
        max_list_len: 4,
        max_candidates: 4,
        strict_fields: false,
    }
}

fn valid_request() -> Value {
    json!({
        "request_id": "r1",
        "user": {"id": "u1", "sparse": {"segment": 3}, "dense": {"sessions_per_day": 2.5}},
        "candidates": [
            {"item_id": "a", "sparse": {"category": "7", "kind": 1}, "dense": {"views": 10.0}, "upstream_score": 0.9},
            {"item_id": 42, "sparse": {"category": 2}, "dense": {}, "upstream_score": 0.5},
            {"item_id": "c"}
        ],
        "list_len": 2,
        "timestamp_ms": 1_700_000_000_000i64
    })
}

fn request_error(event: &Value) -> EventError {
    let spec = spec();
    let limits = limits();
    let bytes = serde_json::to_vec(event).expect("test JSON encodes");
    Contract::new(&spec, &limits)
        .parse_request(&bytes)
        .expect_err("the event must be refused")
}

/// Applies `edit` to a valid request and returns the error it causes.
fn refuse(edit: impl FnOnce(&mut Value)) -> EventError {
    let mut event = valid_request();
    edit(&mut event);
    request_error(&event)
}

#[test]
fn valid_request_parses_and_normalises_ids() {
    let spec = spec();
    let limits = limits();
    let bytes = serde_json::to_vec(&valid_request()).expect("encodes");
    let r = Contract::new(&spec, &limits)
        .parse_request(&bytes)
        .expect("valid request")
        .event;
    assert_eq!(r.candidates[1].item_id.as_str(), "42");
    assert_eq!(r.user.sparse["segment"].as_str(), "3");
    assert_eq!(r.candidates[2].upstream_score, None);
}

#[test]
fn malformed_requests_say_what_is_wrong() {
    let cases: Vec<(EventError, &str, &str)> = vec![
        (
            {
                let spec = spec();
                let limits = limits();
                Contract::new(&spec, &limits)
                    .parse_request(b"{\"request_id\": \"r1\",")
                    .expect_err("truncated")
            },
            "malformed_json",
            "malformed JSON at line 1 column 20",
        ),
        (
            {
                let spec = spec();
                let limits = limits();
                Contract::new(&spec, &limits)
                    .parse_request(b"\xff\xfe")
                    .expect_err("binary")
            },
            "malformed_json",
            "malformed JSON",
        ),
        (
            refuse(|e| drop(e.as_object_mut().map(|o| o.remove("request_id")))),
            "missing_field",
            "missing field `request_id` in top level",
        ),
        (
            refuse(|e| drop(e["candidates"][1].as_object_mut().map(|o| o.remove("item_id")))),
            "missing_field",
            "missing field `item_id` in candidates[1]",
        ),
        (
            refuse(|e| e["list_len"] = json!("ten")),
            "wrong_type",
            "wrong type at list_len: invalid type: string \"ten\", expected usize",
        ),
        (
            refuse(|e| e["candidates"][0]["dense"]["views"] = json!("many")),
            "wrong_type",
            "wrong type at candidates[0].dense.views",
        ),
        (
            refuse(|e| e["candidates"][0]["sparse"]["kind"] = json!(1.5)),
            "wrong_type",
            "expected a string or an integer",
        ),
        (
            refuse(|e| e["candidates"] = json!({"a": 1})),
            "wrong_type",
            "wrong type at candidates: invalid type: map, expected a sequence",
        ),
        (
            refuse(|e| e["candidates"][2]["item_id"] = json!("a")),
            "duplicate_item",
            "duplicate item_id \"a\" at candidates[0] and candidates[2]",
        ),
        (
            refuse(|e| e["list_len"] = json!(4)),
            "bad_list_len",
            "list_len 4 is larger than the pool of 3 candidates",
        ),
        (
            refuse(|e| e["list_len"] = json!(0)),
            "bad_list_len",
            "list_len 0 is outside 1..=4 (limits.max_list_len)",
        ),
        (
            refuse(|e| {
                e["candidates"] = json!([{"item_id": "a"}, {"item_id": "b"}, {"item_id": "c"},
                                         {"item_id": "d"}, {"item_id": "e"}]);
            }),
            "too_many_candidates",
            "5 candidates exceed the limit of 4 (limits.max_candidates)",
        ),
        (
            refuse(|e| e["candidates"] = json!([])),
            "empty_list",
            "the request has no candidates",
        ),
        (
            refuse(|e| e["candidates"][0]["sparse"]["colour"] = json!("red")),
            "unknown_feature",
            "unknown item feature `colour` at candidates[0].sparse.colour; the pipeline declares: category, kind, views",
        ),
        (
            refuse(|e| e["user"]["dense"]["age"] = json!(31)),
            "unknown_feature",
            "unknown user feature `age` at user.dense.age",
        ),
        (
            refuse(|e| e["candidates"][1]["dense"]["category"] = json!(3.0)),
            "wrong_feature_kind",
            "item feature `category` at candidates[1].dense.category is declared sparse, not dense",
        ),
        (
            refuse(|e| e["candidates"][0]["dense"]["upstream_score"] = json!(0.3)),
            "reserved_feature",
            "candidates[0].dense.upstream_score: `upstream_score` is not sent as a feature; set the candidate's `upstream_score` field",
        ),
        (
            refuse(|e| e["request_id"] = json!("  ")),
            "bad_id",
            "request_id is empty",
        ),
        (
            refuse(|e| e["user"]["id"] = json!("x".repeat(300))),
            "bad_id",
            "user.id is 300 bytes long; at most 256 are allowed",
        ),
        (
            refuse(|e| e["timestamp_ms"] = json!(-5)),
            "out_of_range",
            "timestamp_ms is -5; must be milliseconds since the Unix epoch",
        ),
        (
            {
                let spec = spec();
                let limits = limits();
                let text = valid_request().to_string().replace("10.0", "1e999");
                Contract::new(&spec, &limits)
                    .parse_request(text.as_bytes())
                    .expect_err("overflowing number")
            },
            "malformed_json",
            "number out of range",
        ),
    ];
    assert!(cases.len() >= 15);
    for (error, kind, message) in cases {
        assert_eq!(error.kind(), kind, "kind of: {error}");
        assert!(
            error.to_string().contains(message),
            "expected {message:?} in {:?}",
            error.to_string()
        );
    }
}

#[test]
fn non_finite_values_built_in_process_are_refused() {
    // JSON cannot carry NaN, but events are also built from Parquet and in code.
    let spec = spec();
    let limits = limits();
    let contract = Contract::new(&spec, &limits);
    let bytes = serde_json::to_vec(&valid_request()).expect("encodes");
    let mut r = contract.parse_request(&bytes).expect("valid").event;
    r.candidates[0].upstream_score = Some(f64::NAN);
    let e = contract.check_request(&r).expect_err("NaN score");
    assert_eq!(e.kind(), "non_finite");
    assert!(
        e.to_string()
            .contains("candidates[0].upstream_score is NaN"),
        "{e}"
    );
    r.candidates[0].upstream_score = Some(1.0);
    r.user
        .dense
        .insert("sessions_per_day".into(), f64::INFINITY);
    let e = contract.check_request(&r).expect_err("inf feature");
    assert!(
        e.to_string().contains("user.dense.sessions_per_day is inf"),
        "{e}"
    );
}

#[test]
fn finite_values_that_would_overflow_the_models_are_refused() {
    let mut spec = spec();
    spec.item
        .dense
        .insert("price".into(), DenseTransform::Identity);
    let limits = limits();
    let contract = Contract::new(&spec, &limits);
    let bytes = serde_json::to_vec(&valid_request()).expect("encodes");
    let valid = contract.parse_request(&bytes).expect("valid").event;
    // Identity: 1e300 stays 1e300, infinite in f32 once scaled: refused.
    let mut r = valid.clone();
    r.candidates[1].dense.insert("price".into(), 1e300);
    let e = contract.check_request(&r).expect_err("1e300 price");
    assert_eq!(e.kind(), "out_of_range");
    assert!(e.to_string().contains("candidates[1].dense.price"), "{e}");
    let mut r = valid.clone();
    r.candidates[0].upstream_score = Some(-1e300);
    assert!(contract.check_request(&r).is_err(), "upstream score -1e300");
    // log1p(1e300) is about 690: harmless, accepted.
    let mut r = valid;
    r.candidates[0].dense.insert("views".into(), 1e300);
    contract.check_request(&r).expect("log1p keeps it small");
}

#[test]
fn results_and_feedback_are_validated() {
    let spec = spec();
    let limits = limits();
    let contract = Contract::new(&spec, &limits);
    let result = json!({
        "request_id": "r1", "model_version": "v3",
        "items": [
            {"item_id": "a", "score": 0.7, "reasoning_steps": 2, "entropy_before": 1.2, "entropy_after": 0.4},
            {"item_id": "a", "score": 0.9, "reasoning_steps": 0, "entropy_before": 0.3, "entropy_after": 0.3}
        ],
        "latency_ms": 1.5, "timestamp_ms": 5
    });
    let e = contract
        .parse_result(&serde_json::to_vec(&result).expect("encodes"))
        .expect_err("duplicate");
    assert_eq!(
        e.to_string(),
        "item_id \"a\" appears twice in the result (items[0] and items[1])"
    );
    let e = contract
        .parse_result(br#"{"request_id":"r1","model_version":"v3","items":[],"latency_ms":1,"timestamp_ms":5}"#)
        .expect_err("empty");
    assert_eq!(e.to_string(), "the result has no items");

    let ok = contract
        .parse_feedback(br#"{"request_id":"r1","item_id":7,"position":2,"clicked":true,"dwell_ms":3000,"timestamp_ms":9}"#)
        .expect("valid feedback")
        .event;
    assert_eq!(ok.item_id.as_str(), "7");
    let e = contract
        .parse_feedback(
            br#"{"request_id":"r1","item_id":"a","position":4,"clicked":true,"timestamp_ms":9}"#,
        )
        .expect_err("position");
    assert_eq!(
        e.to_string(),
        "position is 4; must be below limits.max_list_len"
    );
    let e = contract
        .parse_feedback(
            br#"{"request_id":"r1","item_id":"a","position":0,"clicked":"yes","timestamp_ms":9}"#,
        )
        .expect_err("clicked type");
    assert_eq!(
        e.to_string(),
        "wrong type at clicked: invalid type: string \"yes\", expected a boolean"
    );
    let e = contract
        .parse_feedback(br#"{"request_id":"r1","item_id":"a","position":0,"clicked":true,"dwell_ms":-1,"timestamp_ms":9}"#)
        .expect_err("negative dwell");
    assert_eq!(e.to_string(), "dwell_ms is -1; must be >= 0");
}

#[test]
fn trailing_garbage_is_an_error() {
    let e = decode::<Feedback>(
        br#"{"request_id":"r1","item_id":"a","position":0,"clicked":true,"timestamp_ms":9} x"#,
        UnknownFields::Ignore,
    )
    .expect_err("trailing");
    assert_eq!(e.kind(), "malformed_json");
    assert!(e.to_string().contains("trailing characters"), "{e}");
}

/// A field upstream added is skipped and reported by default (one new field must not
/// dead-letter all traffic); `limits.strict_fields` refuses it, naming where it is.
#[test]
fn unknown_fields_are_ignored_unless_strict() {
    let spec = spec();
    let mut event = valid_request();
    event["list_length"] = json!(2);
    event["candidates"][1]["colour"] = json!("red");
    event["schema_version"] = json!(1);
    let bytes = serde_json::to_vec(&event).expect("encodes");
    let tolerant = limits();
    let decoded = Contract::new(&spec, &tolerant)
        .parse_request(&bytes)
        .expect("tolerated");
    assert_eq!(decoded.ignored, vec!["candidates.1.colour", "list_length"]);
    assert_eq!(decoded.event.schema_version, Some(1));
    let strict = Limits {
        strict_fields: true,
        ..limits()
    };
    let e = Contract::new(&spec, &strict)
        .parse_request(&bytes)
        .expect_err("strict");
    assert_eq!(e.kind(), "unknown_field");
    assert!(
        e.to_string()
            .starts_with("unknown field candidates.1.colour"),
        "{e}"
    );
    // A known event decodes alike either way, with nothing ignored.
    let plain = serde_json::to_vec(&valid_request()).expect("encodes");
    let strict_ok = Contract::new(&spec, &strict)
        .parse_request(&plain)
        .expect("valid");
    assert!(strict_ok.ignored.is_empty());
}
