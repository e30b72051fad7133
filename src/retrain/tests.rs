use super::gate::{gates, OffPolicyComparison};
use super::*;
use crate::list_log::LoggedList;

fn clicks(auc: f64, logloss: f64) -> ClickMetrics {
    ClickMetrics { auc, logloss }
}

/// Two logger instances: the file of instance "1" is published first, so the
/// newest lists are in instance "0"'s file although its name sorts first.
#[test]
fn the_window_is_the_newest_lists_by_publish_time() {
    use crate::list_log::{LogWriter, RollPolicy};
    use crate::sim::{Traffic, World};
    let world = World::small(3);
    let traffic = Traffic::new(&world, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |instance: &str, from: u64| {
        let policy = RollPolicy {
            max_bytes: 1 << 30,
            row_group_rows: 16,
        };
        let mut w =
            LogWriter::create(dir.path(), &format!("lists-{instance}"), policy).expect("writer");
        let rows: Vec<LoggedList> = (from..from + 30)
            .map(|k| traffic.logged_list(&traffic.impression(k)))
            .collect();
        w.write(&rows).expect("write");
        w.finish().expect("publish");
    };
    write("1", 0);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write("0", 100);
    let logs = dir.path().display().to_string();
    assert_eq!(count_lists(dir.path()).expect("count"), 60);
    let window = read_window(&logs, 40).expect("window");
    let ids: Vec<&str> = window.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids.len(), 40);
    assert_eq!(
        ids[0],
        traffic.request_id(20),
        "oldest kept: the file published first"
    );
    assert_eq!(
        ids[39],
        traffic.request_id(129),
        "newest: the file published last"
    );
    assert_eq!(
        count_lists(&dir.path().join("missing")).expect("no log yet"),
        0
    );
}

#[test]
fn every_gate_can_reject_and_a_clear_win_passes() {
    let t = TrainerConfig {
        score_margin: 0.01,
        ..TrainerConfig::default()
    };
    let same = clicks(0.70, 0.50);
    assert!(gates(&t, (same, same), (1.0, 1.02), 0.1, None).is_empty());
    let reasons = |c, s, copy| gates(&t, (same, c), s, copy, None);
    assert_eq!(
        reasons(clicks(0.68, 0.50), (1.0, 1.02), 0.1).len(),
        1,
        "AUC"
    );
    assert_eq!(
        reasons(clicks(0.70, 0.52), (1.0, 1.02), 0.1).len(),
        1,
        "log-loss"
    );
    assert_eq!(reasons(same, (1.0, 1.01), 0.1).len(), 1, "needs > 1.01");
    assert_eq!(
        reasons(same, (1.0, f64::NAN), 0.1).len(),
        1,
        "NaN never passes"
    );
    assert_eq!(reasons(same, (1.0, 1.02), 0.95).len(), 1, "copies");
    assert_eq!(reasons(clicks(0.5, 0.9), (1.0, 0.9), 1.0).len(), 4);
    // The off-policy estimate rejects only a candidate worse with 95 % confidence.
    let estimate = |low: f64, high: f64| OffPolicyComparison {
        lists: 400,
        candidate_minus_serving: (low + high) / 2.0,
        ci95_low: low,
        ci95_high: high,
    };
    let with = |o: &OffPolicyComparison| gates(&t, (same, same), (1.0, 1.02), 0.1, Some(o));
    assert!(with(&estimate(-0.3, 0.1)).is_empty(), "a noisy tie passes");
    assert_eq!(with(&estimate(-0.3, -0.05)).len(), 1, "clearly worse");
}
