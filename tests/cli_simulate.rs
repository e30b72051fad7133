//! `eglr simulate` and the CLI's handling of bad config, run as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use eglr::list_log::LogReader;

fn eglr(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eglr"));
    cmd.current_dir(root).args(args).env("RUST_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("eglr runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "eglr failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

fn simulate(out: &Path, seed: &str, extra: &[&str]) -> String {
    let out = out.to_str().expect("utf-8");
    let mut args = vec![
        "simulate",
        "--out",
        out,
        "--lists",
        "3000",
        "--seed",
        seed,
        "--headroom-lists",
        "20",
    ];
    args.extend_from_slice(extra);
    // Small files so the roll by size is exercised.
    ok(&eglr(
        &args,
        &[
            ("EGLR_LOGS__ROLL_MAX_BYTES", "200000"),
            ("EGLR_LOGS__ROW_GROUP_ROWS", "500"),
        ],
    ))
}

#[test]
fn same_seed_gives_byte_identical_output() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    simulate(&a, "7", &["--events"]);
    simulate(&b, "7", &["--events"]);
    let logs = files(&a.join("logs"));
    assert!(logs.len() > 1, "200 kB files roll: {logs:?}");
    for rel in [
        "world.json",
        "events/requests.jsonl",
        "events/feedback.jsonl",
    ]
    .iter()
    .map(PathBuf::from)
    .chain(
        logs.iter()
            .map(|p| Path::new("logs").join(p.file_name().expect("name"))),
    ) {
        let (x, y) = (
            std::fs::read(a.join(&rel)).expect("a"),
            std::fs::read(b.join(&rel)).expect("b"),
        );
        assert!(x == y, "{} differs", rel.display());
    }
    let reader = LogReader::open(a.join("logs").to_str().expect("utf-8"), 1000).expect("logs");
    let rows: usize = reader.batches().map(|b| b.expect("batch").len()).sum();
    assert_eq!(rows, 3000);
    let requests = std::fs::read_to_string(a.join("events/requests.jsonl")).expect("events");
    assert_eq!(requests.lines().count(), 3000);
    // The events the simulator emits pass the pipeline's own contract.
    let out = eglr(
        &[
            "validate",
            "--kind",
            "request",
            a.join("events/requests.jsonl").to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(ok(&out).contains("3000 events, 3000 valid, 0 invalid"));
}

#[test]
fn world_reuse_keeps_users_and_items_but_not_lists() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    simulate(&a, "7", &[]);
    let world = a.join("world.json");
    simulate(&b, "8", &["--world", world.to_str().expect("utf-8")]);
    assert_eq!(
        std::fs::read(&world).expect("a"),
        std::fs::read(b.join("world.json")).expect("b")
    );
    let first = |dir: &Path| {
        let reader = LogReader::open(dir.join("logs").to_str().expect("utf-8"), 10).expect("logs");
        reader.batches().next().expect("batch").expect("rows")[0].clone()
    };
    assert_ne!(first(&a).served_items, first(&b).served_items);
}

#[test]
fn the_summary_shows_the_fidelity_ceiling_and_demo_keeps_to_its_world() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let printed = simulate(tmp.path(), "7", &[]);
    assert!(printed.contains("fidelity ceiling"), "{printed}");
    let summary: serde_json::Value = {
        let json = tmp.path().join("summary.json");
        simulate(
            tmp.path(),
            "7",
            &["--force", "--json", json.to_str().expect("utf-8")],
        );
        serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("valid json")
    };
    let rows = summary["fidelity_ceiling"]
        .as_array()
        .expect("ceiling rows");
    // The first row knows the truth: it orders every pool's lists as the oracle does.
    assert_eq!(rows[0]["fidelity"]["kendall_tau"], 1.0, "{}", rows[0]);
    // The simulated directory holds world 7: the demo refuses to run another there.
    let out = eglr(
        &[
            "demo",
            "--dir",
            tmp.path().to_str().expect("utf-8"),
            "--world-seed",
            "11",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains("holds world seed 7, not --world-seed 11"),
        "{stderr}"
    );
}

#[test]
fn refuses_to_overwrite_logs_without_force() {
    let tmp = tempfile::tempdir().expect("tempdir");
    simulate(tmp.path(), "1", &[]);
    let out = eglr(
        &[
            "simulate",
            "--out",
            tmp.path().to_str().expect("utf-8"),
            "--lists",
            "10",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --force to replace them"));
    simulate(tmp.path(), "1", &["--force"]);
}

#[test]
fn bad_config_and_flags_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[features.user]\n[features.item]\n[limits]\nlist_len = 10\nmax_canidates = 5\n",
    )
    .expect("write");
    // (arguments, environment, expected part of the error)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> =
        vec![
        (vec!["config", "--pipeline", bad.to_str().expect("utf-8")], vec![],
         "unknown key `limits.max_canidates`"),
        (vec!["config", "--pipeline", "/no/such.toml"], vec![],
         "cannot read pipeline file /no/such.toml"),
        (vec!["config"], vec![("EGLR_LIMITS__LIST_LEN", "many")],
         "bad value for `limits.list_len` (set by environment variable EGLR_LIMITS__LIST_LEN)"),
        (vec!["config", "--set", "simulator.exploration_share=2"], vec![],
         "invalid setting `simulator.exploration_share`"),
        (vec!["simulate", "--out", "/tmp/x", "--world", "/no/world.json"], vec![],
         "/no/world.json: No such file"),
        // No broker list never means a silent embedded broker.
        (vec!["serve"], vec![("EGLR_KAFKA__BROKERS", " ")],
         "`kafka.brokers` is not set"),
        (vec!["log"], vec![("EGLR_KAFKA__BROKERS", "")], "`kafka.brokers` is not set"),
        // The binary's own argument checks are the input's too (they once exited 1).
        (vec!["log", "--window-s=-1"], vec![], "--window-s must be a number of seconds >= 0"),
        // Checked before any bundle is loaded.
        (vec!["eval", "--model", "/no/m", "--data", "/no/d", "--disagreement-penalty=-1"],
         vec![], "--disagreement-penalty must be a non-negative number"),
        (vec!["eval", "--model", "/no/m", "--data", "/no/d", "--beam", "0",
              "--beam-ensemble", "/no/e"],
         vec![], "--beam-ensemble searches the beam row"),
    ];
    for (args, envs, expected) in cases {
        let out = eglr(&args, &envs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Bad input (a setting, a missing file) exits with sysexits' EX_DATAERR.
        assert_eq!(out.status.code(), Some(65), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_device_that_is_not_there_is_a_clear_error() {
    let out = eglr(&["--device", "tpu", "config"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("use cpu, cuda or cuda:N"), "{stderr}");
    // A CPU-only build says how to get CUDA instead of silently running on the CPU.
    if !cfg!(feature = "cuda") {
        let out = eglr(
            &[
                "--device",
                "cuda:0",
                "bench",
                "--batches",
                "1",
                "--seconds",
                "0.1",
            ],
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("built without CUDA"), "{stderr}");
    }
}

#[test]
fn effective_config_shows_overrides() {
    let out = eglr(
        &["config", "--set", "batching.max_batch=32"],
        &[("EGLR_KAFKA__BROKERS", "127.0.0.1:9092")],
    );
    let text = ok(&out);
    assert!(text.contains("max_batch = 32"), "{text}");
    assert!(text.contains("brokers = \"127.0.0.1:9092\""), "{text}");
}

/// `eglr bench --lares-depths` measures `lares+eglr` at each recurrent depth beside the
/// plain `eglr` grid, one row (and JSON record) each.
#[test]
fn bench_measures_lares_at_each_recurrent_depth() {
    let out = eglr(
        &[
            "bench",
            "--pools",
            "12",
            "--batches",
            "2",
            "--decoders",
            "host",
            "--workers",
            "1",
            "--seconds",
            "0.05",
            "--lares-depths",
            "1,4",
            "--json",
            "-",
        ],
        &[],
    );
    let text = ok(&out);
    let json = &text[text.find('[').expect("a JSON array")..];
    let runs: Vec<serde_json::Value> = serde_json::from_str(json).expect("bench JSON");
    let depths: Vec<u64> = runs
        .iter()
        .map(|r| r["lares_depth"].as_u64().expect("lares_depth"))
        .collect();
    assert_eq!(depths, vec![0, 1, 4], "{text}");
    assert!(
        runs.iter()
            .all(|r| r["lists_per_s"].as_f64().is_some_and(|x| x > 0.0)),
        "{text}"
    );
}
