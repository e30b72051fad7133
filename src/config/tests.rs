use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
[features.user]
sparse = { user_id = 100 }
[features.item]
sparse = { item_id = 1000 }
dense = { views = "log1p" }
"#;

fn load(text: &str, overrides: &[Override]) -> Result<PipelineConfig, ConfigError> {
    PipelineConfig::from_toml_str(text, Path::new("test.toml"), overrides)
}

fn env(pairs: &[(&str, &str)]) -> Vec<Override> {
    Override::from_env_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .expect("env overrides parse")
}

#[test]
fn shipped_pipelines_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in [
        "pipelines/local.toml",
        "pipelines/kuairand.toml",
        "pipelines/rerank.toml",
    ] {
        let config =
            PipelineConfig::load(&root.join(name), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!config.features.item.sparse.is_empty(), "{name}");
    }
}

#[test]
fn defaults_fill_what_the_file_leaves_out() {
    let c = load(MINIMAL, &[]).expect("minimal file");
    assert_eq!(c.limits.list_len, 10);
    assert_eq!(c.batching.max_batch, 256);
    assert_eq!(c.kafka.topics.requests, "eglr.requests");
}

#[test]
fn unknown_key_is_named_with_its_file() {
    let e = load(&format!("{MINIMAL}\n[batching]\nmax_bach = 3\n"), &[]).expect_err("typo");
    let text = e.to_string();
    assert!(
        text.starts_with("unknown key `batching.max_bach` in test.toml: unknown field `max_bach`"),
        "{text}"
    );
    let e = load(&format!("{MINIMAL}\n[batchin]\nmax_batch = 3\n"), &[]).expect_err("typo");
    assert!(e.to_string().starts_with("unknown key `batchin`"), "{e}");
}

#[test]
fn syntax_errors_point_at_the_line() {
    let e = load("[limits\nlist_len = 3", &[]).expect_err("bad TOML");
    let text = e.to_string();
    assert!(
        text.starts_with("pipeline file test.toml is not valid TOML"),
        "{text}"
    );
    assert!(text.contains("line 1"), "{text}");
}

#[test]
fn wrong_value_type_is_named() {
    let e = load(&format!("{MINIMAL}\n[limits]\nlist_len = \"ten\"\n"), &[]).expect_err("type");
    let text = e.to_string();
    assert!(
        text.starts_with("bad value for `limits.list_len` in test.toml"),
        "{text}"
    );
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let mut overrides = env(&[
        ("EGLR_BATCHING__MAX_BATCH", "64"),
        ("EGLR_KAFKA__BROKERS", "localhost:9092"),
        ("PATH", "/bin"),
    ]);
    let c = load(MINIMAL, &overrides).expect("env");
    assert_eq!(c.batching.max_batch, 64);
    assert_eq!(c.kafka.brokers, "localhost:9092");
    overrides.push(Override::parse_flag("batching.max_batch=32").expect("flag"));
    let c = load(MINIMAL, &overrides).expect("flag");
    assert_eq!(c.batching.max_batch, 32);
}

#[test]
fn unknown_env_key_names_the_variable() {
    let e = load(MINIMAL, &env(&[("EGLR_BATCHING__MAX_BACH", "64")])).expect_err("typo");
    assert_eq!(
        e.to_string(),
        "unknown key `batching.max_bach` (set by environment variable EGLR_BATCHING__MAX_BACH): \
         unknown field `max_bach`, expected one of `max_batch`, `max_wait_ms`, `queue_capacity`, `max_request_age_ms`, `workers`, `quality_every`"
    );
    let e = load(
        MINIMAL,
        &[Override::parse_flag("limits.list_len=abc").expect("flag")],
    )
    .expect_err("type");
    assert!(
        e.to_string()
            .starts_with("bad value for `limits.list_len` (set by flag --set limits.list_len=abc)"),
        "{e}"
    );
}

#[test]
fn malformed_overrides_are_refused() {
    let e = Override::parse_flag("limits.list_len").expect_err("no =");
    assert!(e.to_string().contains("expected KEY=VALUE"), "{e}");
    let e = Override::parse_flag("limits..list_len=3").expect_err("empty section");
    assert!(e.to_string().contains("empty section name"), "{e}");
    let into_value = Override::parse_flag("features.item.dense.views.x=3").expect("flag");
    let e = load(MINIMAL, &[into_value]).expect_err("into value");
    assert!(
        e.to_string()
            .contains("`features.item.dense.views` is a value, not a section"),
        "{e}"
    );
}

#[test]
fn cross_field_checks() {
    let cases = [
        (
            "[limits]\nlist_len = 20\nmax_list_len = 10",
            "limits.list_len",
            "20 exceeds limits.max_list_len = 10",
        ),
        (
            "[batching]\nmax_batch = 0",
            "batching.max_batch",
            "must be at least 1",
        ),
        (
            "[simulator]\nexploration_share = 1.5",
            "simulator.exploration_share",
            "1.5 is not a share in [0, 1]",
        ),
        (
            "[simulator]\npool_size = 5",
            "simulator.pool_size",
            "5 must lie between limits.list_len = 10",
        ),
        (
            "[training]\nevaluator_weight_decay = -0.1",
            "training.evaluator_weight_decay",
            "-0.1 must be finite and >= 0",
        ),
    ];
    for (extra, key, message) in cases {
        let e = load(&format!("{MINIMAL}\n{extra}\n"), &[]).expect_err(key);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("invalid setting `{key}` in test.toml: {message}")),
            "{text}"
        );
    }
    let both =
        "[features.user]\nsparse = { x = 4 }\ndense = { x = \"identity\" }\n[features.item]\n";
    let e = load(both, &[]).expect_err("sparse and dense");
    assert!(
        e.to_string().contains("cannot be both sparse and dense"),
        "{e}"
    );
    let e = load(
        "[features.user]\nsparse = { x = 0 }\n[features.item]\n",
        &[],
    )
    .expect_err("0 buckets");
    assert!(e.to_string().contains("features.user.sparse.x"), "{e}");
    let e = load(
        "[features.user]\ndense = { x = \"log\" }\n[features.item]\n",
        &[],
    )
    .expect_err("transform");
    assert!(e.to_string().contains("unknown variant `log`"), "{e}");
}

#[test]
fn effective_config_round_trips_through_toml() {
    let c = load(MINIMAL, &[]).expect("minimal");
    let again = load(&c.to_toml(), &[]).expect("rendered config loads");
    assert_eq!(c, again);
}

#[test]
fn replication_factor_is_the_clusters_unless_set_and_set_means_at_least_one() {
    assert_eq!(
        load(MINIMAL, &[])
            .expect("minimal")
            .kafka
            .replication_factor,
        None
    );
    let three = load(&format!("{MINIMAL}[kafka]\nreplication_factor = 3\n"), &[]).expect("3");
    assert_eq!(three.kafka.replication_factor, Some(3));
    let e = load(&format!("{MINIMAL}[kafka]\nreplication_factor = 0\n"), &[]).expect_err("0");
    assert!(e.to_string().contains("kafka.replication_factor"), "{e}");
}

#[test]
fn librdkafka_properties_are_set_from_the_environment_flags_and_files_as_strings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("password");
    std::fs::write(&secret, "from-a-file\n").expect("write");
    let secret_path = secret.display().to_string();
    let overrides = [
        env(&[
            // A numeric password stays a string (and a type error never echoes it).
            ("EGLR_KAFKA__PROPERTIES__SSL_KEY_PASSWORD", "123456"),
            ("EGLR_KAFKA__PROPERTIES__SECURITY_PROTOCOL", "SASL_SSL"),
            ("EGLR_KAFKA__PROPERTY_FILES__SASL_PASSWORD", &secret_path),
        ]),
        vec![Override::parse_flag("kafka.properties.sasl.mechanism=SCRAM-SHA-512").expect("flag")],
    ]
    .concat();
    let c = load(MINIMAL, &overrides).expect("config");
    let p = &c.kafka.properties;
    assert_eq!(p["ssl.key.password"], "123456");
    assert_eq!(p["security.protocol"], "SASL_SSL");
    assert_eq!(p["sasl.password"], "from-a-file");
    assert_eq!(p["sasl.mechanism"], "SCRAM-SHA-512");

    let shown = format!(
        "{}{}{c:?}",
        c.to_toml(),
        serde_json::to_string(&c).expect("json")
    );
    assert!(
        !shown.contains("123456") && !shown.contains("from-a-file"),
        "{shown}"
    );
    assert!(shown.contains("SCRAM-SHA-512") && shown.contains(&secret_path));

    let flag = Override::parse_flag("kafka.properties.sasl.password=hunter2").expect("flag");
    assert!(
        !flag.source().to_string().contains("hunter2"),
        "{:?}",
        flag.source()
    );

    let inline_and_file = [
        overrides,
        env(&[("EGLR_KAFKA__PROPERTIES__SASL_PASSWORD", "inline")]),
    ]
    .concat();
    let err = load(MINIMAL, &inline_and_file).expect_err("set twice");
    assert!(err.to_string().contains("set it in one place"), "{err}");
}
