//! The published contract files (`schemas/`) stay in step with the code.

use std::collections::BTreeSet;
use std::path::Path;

use eglr::config::PipelineConfig;
use eglr::contract::Contract;
use eglr::list_log::log_schema;
use eglr::schema::{
    Candidate, Feedback, RankedItem, RerankRequest, RerankResult, Token, UnknownFields,
    UserFeatures, SCHEMA_VERSION,
};
use eglr::sim::{Traffic, World};
use serde_json::{json, Value};

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
/// leaves room for fields added later (no `additionalProperties: false`: the decoder
/// ignores unknown fields by default), and each field it requires is refused as
/// missing by the decoder.
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
    assert!(schema.get("additionalProperties").is_none(), "{what}");
    for required in schema["required"].as_array().expect("required list") {
        let name = required.as_str().expect("string");
        let mut partial = full_event.clone();
        partial.as_object_mut().expect("object").remove(name);
        let bytes = serde_json::to_vec(&partial).expect("encodes");
        let e = eglr::schema::decode::<T>(&bytes, UnknownFields::Ignore).expect_err(name);
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
        schema_version: Some(SCHEMA_VERSION),
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
        source: eglr::schema::ServedSource::Exploration,
        exploration: Some(eglr::schema::ExplorationDraw {
            policy: eglr::schema::LoggingPolicy::PlackettLuce,
            temperature: Some(1.0),
            propensities: vec![1.0],
        }),
        schema_version: Some(SCHEMA_VERSION),
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
        schema_version: Some(SCHEMA_VERSION),
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

/// Which of the three events a fixture is.
#[derive(Debug, Clone, Copy)]
enum Event {
    Request,
    Result,
    Feedback,
}

/// The schema's verdict and the decoder's (with the shipped local pipeline's features
/// and limits) on one event.
fn verdicts(
    validators: &[(Event, jsonschema::Validator)],
    contract: &Contract<'_>,
    event: Event,
    value: &Value,
) -> (bool, Result<(), String>) {
    let validator = validators
        .iter()
        .find(|(e, _)| std::mem::discriminant(e) == std::mem::discriminant(&event))
        .map(|(_, v)| v)
        .expect("a validator per event");
    let bytes = serde_json::to_vec(value).expect("encodes");
    let decoded = match event {
        Event::Request => contract.parse_request(&bytes).map(drop),
        Event::Result => contract.parse_result(&bytes).map(drop),
        Event::Feedback => contract.parse_feedback(&bytes).map(drop),
    };
    (
        validator.is_valid(value),
        decoded.map_err(|e| e.to_string()),
    )
}

/// Every fixture event, valid and invalid, gets the same verdict from the JSON Schema
/// (checked by a JSON Schema validator) as from the decoder: the simulator's requests
/// and feedback, the results serve writes, events with a field added upstream, and
/// events broken in the ways the schemas can say (missing or mistyped fields, blank or
/// overlong ids, out-of-range numbers, empty lists).
#[test]
fn fixture_events_get_the_same_verdict_from_the_schemas_and_the_decoder() {
    let validators: Vec<(Event, jsonschema::Validator)> = [
        (Event::Request, "rerank_request.schema.json"),
        (Event::Result, "rerank_result.schema.json"),
        (Event::Feedback, "feedback.schema.json"),
    ]
    .into_iter()
    .map(|(event, file)| {
        let v = jsonschema::validator_for(&schema(file))
            .unwrap_or_else(|e| panic!("{file} is not a valid JSON Schema: {e}"));
        (event, v)
    })
    .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = PipelineConfig::load(&root.join("pipelines/local.toml"), &[]).expect("pipeline");
    let contract = Contract::new(&p.features, &p.limits);

    // Valid fixtures: what the simulator sends and what serve answers.
    let world = World::generate(&p.simulator, p.limits.list_len, 3);
    let traffic = Traffic::new(&world, 11);
    let mut valid: Vec<(Event, Value)> = Vec::new();
    for index in 0..20 {
        let imp = traffic.impression(index);
        let request = traffic.request(&imp);
        let served: Vec<Token> = request
            .candidates
            .iter()
            .take(request.list_len)
            .map(|c| c.item_id.clone())
            .collect();
        let result = RerankResult {
            request_id: request.request_id.clone(),
            model_version: "v000001".into(),
            items: served
                .iter()
                .map(|id| RankedItem {
                    item_id: id.clone(),
                    score: 0.25,
                    reasoning_steps: 2,
                    entropy_before: 1.5,
                    entropy_after: 0.5,
                })
                .collect(),
            latency_ms: 3.0,
            timestamp_ms: request.timestamp_ms + 5,
            source: eglr::schema::ServedSource::Model,
            exploration: None,
            schema_version: Some(SCHEMA_VERSION),
        };
        for f in traffic.feedback(index, imp.user, &served, result.timestamp_ms) {
            valid.push((Event::Feedback, serde_json::to_value(&f).expect("encodes")));
        }
        valid.push((
            Event::Request,
            serde_json::to_value(&request).expect("encodes"),
        ));
        valid.push((
            Event::Result,
            serde_json::to_value(&result).expect("encodes"),
        ));
    }
    let (request, result, feedback) = (
        valid[valid.len() - 2].1.clone(),
        valid[valid.len() - 1].1.clone(),
        valid[0].1.clone(),
    );
    // A field added upstream, at the top and nested; an integer item id; no version.
    let mut added = request.clone();
    added["experiment"] = json!("b");
    added["candidates"][0]["freshness"] = json!(0.3);
    valid.push((Event::Request, added));
    let mut numeric = feedback.clone();
    numeric["item_id"] = json!(17);
    numeric
        .as_object_mut()
        .expect("object")
        .remove("schema_version");
    valid.push((Event::Feedback, numeric));

    for (event, value) in &valid {
        let (schema_ok, decoded) = verdicts(&validators, &contract, *event, value);
        assert!(
            schema_ok,
            "{event:?} valid by the decoder but not the schema: {value}"
        );
        assert_eq!(decoded, Ok(()), "{event:?} {value}");
    }

    // Invalid fixtures: each breaks one rule both sides state.
    type Edit = fn(&mut Value);
    let broken: Vec<(Event, &Value, &str, Edit)> = vec![
        (Event::Request, &request, "no request_id", |v| {
            drop(v.as_object_mut().map(|o| o.remove("request_id")))
        }),
        (Event::Request, &request, "blank request_id", |v| {
            v["request_id"] = json!("  ")
        }),
        (Event::Request, &request, "request_id of 257 bytes", |v| {
            v["request_id"] = json!("r".repeat(257))
        }),
        (Event::Request, &request, "list_len a string", |v| {
            v["list_len"] = json!("ten")
        }),
        (Event::Request, &request, "list_len 0", |v| {
            v["list_len"] = json!(0)
        }),
        (Event::Request, &request, "no candidates", |v| {
            v["candidates"] = json!([])
        }),
        (Event::Request, &request, "candidate without item_id", |v| {
            drop(
                v["candidates"][0]
                    .as_object_mut()
                    .map(|o| o.remove("item_id")),
            )
        }),
        (Event::Request, &request, "fractional item id", |v| {
            v["candidates"][0]["item_id"] = json!(1.5)
        }),
        (Event::Request, &request, "negative timestamp", |v| {
            v["timestamp_ms"] = json!(-1)
        }),
        (Event::Request, &request, "schema_version 0", |v| {
            v["schema_version"] = json!(0)
        }),
        (Event::Result, &result, "no items", |v| {
            v["items"] = json!([])
        }),
        (Event::Result, &result, "negative latency", |v| {
            v["latency_ms"] = json!(-1.0)
        }),
        (Event::Result, &result, "negative reasoning steps", |v| {
            v["items"][0]["reasoning_steps"] = json!(-1)
        }),
        (Event::Result, &result, "unknown source", |v| {
            v["source"] = json!("oracle")
        }),
        (Event::Feedback, &feedback, "clicked a string", |v| {
            v["clicked"] = json!("yes")
        }),
        (Event::Feedback, &feedback, "negative position", |v| {
            v["position"] = json!(-1)
        }),
        (Event::Feedback, &feedback, "negative dwell", |v| {
            v["dwell_ms"] = json!(-5.0)
        }),
        (Event::Feedback, &feedback, "no timestamp", |v| {
            drop(v.as_object_mut().map(|o| o.remove("timestamp_ms")))
        }),
    ];
    for (event, base, what, edit) in broken {
        let mut value = base.clone();
        edit(&mut value);
        let (schema_ok, decoded) = verdicts(&validators, &contract, event, &value);
        assert!(!schema_ok, "{event:?} {what}: the schema accepts it");
        assert!(decoded.is_err(), "{event:?} {what}: the decoder accepts it");
    }
}
