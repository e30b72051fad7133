//! The join on hand-made event sequences: late, duplicate, early and orphan feedback.

use super::*;
use crate::schema::{Candidate, Feedback, RankedItem, RerankRequest, RerankResult, UserFeatures};

const WINDOW: i64 = 1000;

fn request(id: &str) -> RerankRequest {
    RerankRequest {
        request_id: id.into(),
        user: UserFeatures {
            id: "u".into(),
            sparse: Default::default(),
            dense: Default::default(),
        },
        candidates: ["a", "b", "c"]
            .iter()
            .map(|i| Candidate {
                item_id: (*i).into(),
                sparse: Default::default(),
                dense: Default::default(),
                upstream_score: None,
            })
            .collect(),
        list_len: 3,
        timestamp_ms: 5,
    }
}

fn result(id: &str, items: &[&str]) -> RerankResult {
    RerankResult {
        request_id: id.into(),
        model_version: "v000002".into(),
        items: items
            .iter()
            .map(|i| RankedItem {
                item_id: (*i).into(),
                score: 0.5,
                reasoning_steps: 0,
                entropy_before: 0.0,
                entropy_after: 0.0,
            })
            .collect(),
        latency_ms: 1.0,
        timestamp_ms: 6,
        source: crate::schema::ServedSource::Model,
    }
}

fn click(id: &str, item: &str, clicked: bool) -> Feedback {
    Feedback {
        request_id: id.into(),
        item_id: item.into(),
        position: 0,
        clicked,
        dwell_ms: None,
        utility: None,
        timestamp_ms: 7,
    }
}

fn src(topic: &str, offset: i64) -> Source {
    Source {
        topic: topic.into(),
        partition: 0,
        offset,
    }
}

#[test]
fn a_list_closes_one_window_after_its_result_with_deduplicated_feedback() {
    let mut j = ListJoiner::new(WINDOW);
    // Feedback before the result (out of order), then request, result, a duplicate.
    assert!(j
        .feedback(click("r1", "c", true), src("feedback", 0), 0)
        .is_none());
    j.request(request("r1"), src("requests", 0), 10);
    j.result(result("r1", &["c", "a", "b"]), src("results", 0), 100);
    assert!(j
        .feedback(click("r1", "c", false), src("feedback", 1), 200)
        .is_none());
    assert!(j
        .feedback(click("r1", "b", true), src("feedback", 2), 300)
        .is_none());

    // The window runs from the result (100), not from the first event (0).
    let early = j.close_due(1099);
    assert!(early.lists.is_empty() && early.sources.is_empty());
    let closed = j.close_due(1100);
    assert_eq!(closed.lists.len(), 1);
    let list = &closed.lists[0];
    assert_eq!(list.served_items, ["c", "a", "b"]);
    // c: first copy (clicked) wins over the duplicate; a: no feedback; b: clicked.
    assert_eq!(list.clicks, [true, false, true]);
    assert_eq!(list.utility, 2.0);
    assert_eq!(list.model_version, "v000002");
    assert_eq!(list.timestamp_ms, 5);
    assert_eq!(list.served_indices(), Ok(vec![2, 0, 1]));
    assert_eq!(
        closed.sources.len(),
        5,
        "every event's offset is released with the list"
    );
    assert_eq!(j.stats().duplicate_feedback, 1);
    assert_eq!(j.pending(), 0);

    // Feedback after the list was written is late: kept aside, counted.
    let late = j.feedback(click("r1", "a", true), src("feedback", 3), 1500);
    assert_eq!(late.map(|u| u.reason), Some(UnjoinedReason::LateFeedback));
    assert_eq!(j.stats().late_feedback, 1);
}

#[test]
fn feedback_without_a_result_is_orphaned_and_results_without_requests_are_kept_aside() {
    let mut j = ListJoiner::new(WINDOW);
    assert!(j
        .feedback(click("ghost", "a", true), src("feedback", 0), 0)
        .is_none());
    assert!(j
        .feedback(click("ghost", "b", false), src("feedback", 1), 10)
        .is_none());
    j.result(result("no-request", &["a"]), src("results", 0), 20);
    j.request(request("bad"), src("requests", 0), 30);
    j.result(result("bad", &["a", "z"]), src("results", 1), 30);
    let closed = j.close_due(2000);
    assert!(closed.lists.is_empty());
    let reasons: Vec<(String, UnjoinedReason)> = closed
        .unjoined
        .iter()
        .map(|u| (u.request_id.clone(), u.reason))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for expected in [
        ("ghost", UnjoinedReason::OrphanFeedback),
        ("no-request", UnjoinedReason::ResultWithoutRequest),
        ("bad", UnjoinedReason::ResultNotFromPool),
    ] {
        assert!(
            reasons.contains(&(expected.0.to_owned(), expected.1)),
            "{expected:?} in {reasons:?}"
        );
    }
    assert_eq!(j.stats().orphan_feedback, 2);
    assert_eq!(closed.sources.len(), 5);
}

#[test]
fn shutdown_closes_open_windows_and_a_redelivered_result_counts_once() {
    let mut j = ListJoiner::new(WINDOW);
    j.request(request("r"), src("requests", 0), 0);
    j.result(result("r", &["b", "a"]), src("results", 0), 0);
    j.result(result("r", &["a", "b"]), src("results", 1), 5);
    assert!(j.close_due(500).lists.is_empty());
    let closed = j.close_all(500);
    assert_eq!(closed.lists.len(), 1);
    assert_eq!(
        closed.lists[0].served_items,
        ["b", "a"],
        "the first result counts"
    );
    assert_eq!(closed.sources.len(), 3);
}
