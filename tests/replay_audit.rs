//! `replay` and `audit` on fixture log directories: the metrics of the initial and the
//! logged order are the ones computed by hand below, the model's lists are permutations
//! of their pools written to Parquet, the streamed replay equals the in-memory
//! evaluation, and the audit's uplift, copy share and flag are the hand-derived ones.

mod common;

use candle_core::Device;

use common::{pipeline, write_bundle};
use eglr::list_log::{LogWriter, LoggedList, RollPolicy};
use eglr::model::Bundle;
use eglr::offline::audit::{audit_model, AuditOptions};
use eglr::offline::evaluate::{evaluate, EvalOptions};
use eglr::offline::replay::replay;
use eglr::schema::{Candidate, UserFeatures};
use eglr::train::Dataset;

fn list(id: &str, served: &[&str], clicks: &[bool], exploration: bool) -> LoggedList {
    pool_list(id, &["a", "b", "c"], served, clicks, exploration)
}

fn pool_list(
    id: &str,
    pool: &[&str],
    served: &[&str],
    clicks: &[bool],
    exploration: bool,
) -> LoggedList {
    let candidates = pool
        .iter()
        .enumerate()
        .map(|(i, item)| Candidate {
            item_id: (*item).into(),
            sparse: [("item_id".to_owned(), (*item).into())].into(),
            dense: Default::default(),
            upstream_score: Some(3.0 - i as f64),
        })
        .collect();
    LoggedList {
        request_id: id.into(),
        timestamp_ms: 0,
        user: UserFeatures {
            id: "u1".into(),
            sparse: Default::default(),
            dense: Default::default(),
        },
        candidates,
        served_items: served.iter().map(|s| (*s).to_owned()).collect(),
        clicks: clicks.to_vec(),
        utility: clicks.iter().filter(|&&c| c).count() as f64,
        model_version: "upstream".into(),
        exploration,
        logging_policy: None,
        propensities: Vec::new(),
    }
}

fn roll() -> RollPolicy {
    RollPolicy {
        max_bytes: 1 << 30,
        row_group_rows: 2,
    }
}

#[test]
fn replay_gives_the_hand_computed_metrics_and_permutations() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut p = pipeline();
    p.limits.list_len = 3;
    let logs = tmp.path().join("logs");
    // Pool order a, b, c is the initial order in every list.
    // A: shown as initial, clicks a and c. B: shown c, a, b (exploration), click on a.
    // C: no click. Two files, to replay across file boundaries.
    let mut w = LogWriter::create(&logs, "lists", roll()).expect("writer");
    w.write(&[list("A", &["a", "b", "c"], &[true, false, true], false)])
        .expect("write");
    w.finish().expect("publish");
    let mut w = LogWriter::create(&logs, "lists", roll()).expect("writer");
    w.write(&[
        list("B", &["c", "a", "b"], &[false, true, false], true),
        list("C", &["a", "b", "c"], &[false, false, false], false),
    ])
    .expect("write");
    w.finish().expect("publish");

    let bundle_dir = tmp.path().join("bundle");
    write_bundle(&p, &bundle_dir, 3);
    let bundle = Bundle::load(&bundle_dir, &Device::Cpu).expect("bundle");
    let opts = EvalOptions {
        batch: 2,
        list_len: 3,
        pass_at_n: 1,
        seed: 0,
        beam_width: 0,
    };
    let out = tmp.path().join("replayed");
    let mut progress = Vec::new();
    let report = replay(
        &bundle,
        &logs.display().to_string(),
        &out,
        roll(),
        &opts,
        &Device::Cpu,
        |done| progress.push(done),
    )
    .expect("replay");
    assert_eq!(report.lists, 3);
    assert_eq!(progress.last(), Some(&3));

    // By hand (LibRerank, spec §7). Initial order labels: A [1,0,1], B [1,0,0], C [0,0,0].
    //   AP: A (1/1 + 2/3) / 2 = 0.8333, B 1, C 0        -> MAP@5 = 0.6111
    //   NDCG: A (1 + 1/log2 4) / (1 + 1/log2 3) = 0.9197, B 1, C 0 -> 0.6399
    // Logged order labels: A [1,0,1], B [0,1,0], C [0,0,0].
    //   AP: A 0.8333, B (1/2) / 1 = 0.5, C 0            -> MAP@5 = 0.4444
    //   NDCG: A 0.9197, B (1/log2 3) / 1 = 0.6309, C 0   -> 0.5169
    let close = |a: f64, b: f64| (a - b).abs() < 1e-3;
    let (i, l) = (&report.initial.metrics, &report.logged.metrics);
    assert!(close(i.map5, 0.6111) && close(i.map10, 0.6111), "{i:?}");
    assert!(close(i.ndcg5, 0.6399) && close(i.ndcg10, 0.6399), "{i:?}");
    assert!(close(l.map5, 0.4444) && close(l.ndcg5, 0.5169), "{l:?}");

    // The re-ranked lists: one row per request, each a permutation of its pool.
    let rows = read_replayed(&out);
    assert_eq!(rows.len(), 3);
    for (id, items) in &rows {
        let mut sorted = items.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "b", "c"], "request {id}");
    }

    // Streaming replay and the in-memory evaluation agree on the model's metrics.
    let examples =
        Dataset::load_all(&logs.display().to_string(), bundle.encoder.clone()).expect("examples");
    let in_memory = evaluate(
        &bundle,
        &examples,
        eglr::offline::evaluate::Scorers::default(),
        &opts,
        &Device::Cpu,
    )
    .expect("eval");
    assert_eq!(in_memory.model.metrics, report.model.metrics);
}

/// The audit of two seeded bundles with lists of one item (one a judge) over `rows`,
/// decoded `batch` at a time.
fn audit_lists_of_one(rows: &[LoggedList], batch: usize) -> eglr::offline::audit::ModelAudit {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut p = pipeline();
    p.limits.list_len = 1;
    let logs = tmp.path().join("logs");
    let mut w = LogWriter::create(&logs, "lists", roll()).expect("writer");
    w.write(rows).expect("write");
    w.finish().expect("publish");
    let (model_dir, judge_dir) = (tmp.path().join("m"), tmp.path().join("j"));
    write_bundle(&p, &model_dir, 3);
    write_bundle(&p, &judge_dir, 11);
    let model = Bundle::load(&model_dir, &Device::Cpu).expect("model");
    let judge = Bundle::load(&judge_dir, &Device::Cpu).expect("judge");
    let opts = AuditOptions {
        batch,
        list_len: 1,
        bootstrap: 100,
        seed: 0,
        tolerance: 0.0,
    };
    let logs = logs.display().to_string();
    audit_model(&model, Some(&judge), &logs, &opts, &Device::Cpu).expect("audit")
}

#[test]
fn audit_of_lists_that_cannot_differ_from_the_log_finds_no_uplift_and_full_copying() {
    // Pools of one item: the model's list, the initial order and the logged order are
    // the same list, so every uplift is exactly 0, its interval [0, 0], and every list
    // copies the input order.
    let rows: Vec<LoggedList> = (0..5)
        .map(|i| pool_list(&format!("r{i}"), &["a"], &["a"], &[i % 2 == 0], false))
        .collect();
    let a = audit_lists_of_one(&rows, 2);
    assert_eq!(a.lists, 5);
    assert_eq!(a.copies_input_order, 1.0);
    for u in [&a.serving, a.judge.as_ref().expect("judge")] {
        assert_eq!(
            (u.uplift, u.ci95_low, u.ci95_high),
            (0.0, 0.0, 0.0),
            "{u:?}"
        );
        assert_eq!(u.model_score, u.logged_score);
    }
    assert!(!a.reward_hacking_flag, "equal uplifts are never flagged");
    assert!(
        a.off_policy.is_none(),
        "no exploration list, no off-policy estimate"
    );
    // Two different evaluators score the same lists differently.
    assert_ne!(
        a.serving.model_score,
        a.judge.as_ref().map_or(0.0, |j| j.model_score)
    );
}

/// Uniform exploration lists give the off-policy estimate: the initial order's IPS value
/// is the pool size times its clicks where the logged top item is the initial top item,
/// over the lists; lists of another policy or none are left out.
#[test]
fn audit_estimates_clicks_from_the_uniform_exploration_lists_alone() {
    let shown = [
        ("a", true),
        ("b", false),
        ("c", true),
        ("a", false),
        ("a", true),
        ("b", true),
    ];
    let mut rows: Vec<LoggedList> = shown
        .iter()
        .enumerate()
        .map(|(i, (item, click))| {
            let mut row = list(&format!("x{i}"), &[item], &[*click], true);
            row.logging_policy = Some("uniform".into());
            row.propensities = vec![1.0 / 3.0];
            row
        })
        .collect();
    // Served by a model, and explored by an unknown policy: neither counts.
    rows.push(list("m", &["a"], &[true], false));
    rows.push(list("k", &["a"], &[true], true));
    let a = audit_lists_of_one(&rows, 3);
    let o = a.off_policy.expect("an off-policy estimate");
    assert_eq!(o.lists, 6);
    // "a" on top and clicked in 2 of 6 lists: 3 x 2 / 6.
    assert!((o.ips.logged_score - 1.0).abs() < 1e-12, "{o:?}");
    let dr = o.doubly_robust.expect("with a judge");
    assert!(
        dr.logged_score.is_finite() && dr.ci95_low <= dr.ci95_high,
        "{dr:?}"
    );
}

/// (request_id, items) of every replayed row, read back with the parquet crate.
fn read_replayed(dir: &std::path::Path) -> Vec<(String, Vec<String>)> {
    use arrow::array::{Array, ListArray, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let file = std::fs::File::open(&path).expect("open");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .expect("parquet");
        for batch in reader {
            let batch = batch.expect("batch");
            let ids = batch
                .column_by_name("request_id")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .expect("request_id");
            let items = batch
                .column_by_name("items")
                .and_then(|c| c.as_any().downcast_ref::<ListArray>())
                .expect("items");
            for r in 0..batch.num_rows() {
                let list = items.value(r);
                let list = list
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("item ids");
                let values = (0..list.len()).map(|k| list.value(k).to_owned()).collect();
                out.push((ids.value(r).to_owned(), values));
            }
        }
    }
    out
}
