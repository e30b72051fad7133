//! The join on hand-made event sequences: late, duplicate, early and orphan feedback,
//! and the event-time clocks: a backlog read in any order, on any wall clock, gives the
//! same lists.

use super::*;
use crate::schema::{Candidate, Feedback, RankedItem, RerankRequest, RerankResult, UserFeatures};

const WINDOW: i64 = 1000;
/// Longer than any wall-clock step of these tests unless a test means a stream to idle.
const IDLE: i64 = 60_000;

fn joiner() -> ListJoiner {
    ListJoiner::new(
        JoinSettings {
            window_ms: WINDOW,
            idle_ms: IDLE,
            remember_lists: 100,
        },
        0,
    )
}

fn request_at(id: &str, timestamp_ms: i64) -> RerankRequest {
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
        timestamp_ms,
        schema_version: None,
    }
}

fn result_at(id: &str, items: &[&str], timestamp_ms: i64) -> RerankResult {
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
        timestamp_ms,
        source: crate::schema::ServedSource::Model,
        exploration: None,
        schema_version: None,
    }
}

fn click_at(id: &str, item: &str, clicked: bool, timestamp_ms: i64) -> Feedback {
    Feedback {
        request_id: id.into(),
        item_id: item.into(),
        position: 0,
        clicked,
        dwell_ms: None,
        utility: None,
        timestamp_ms,
        schema_version: None,
    }
}

fn src(topic: &str, offset: i64) -> Source {
    Source {
        topic: topic.into(),
        partition: 0,
        offset,
    }
}

fn reasons(closed: &Closed) -> Vec<(String, UnjoinedReason)> {
    closed
        .unjoined
        .iter()
        .map(|u| (u.request_id.clone(), u.reason))
        .collect()
}

#[test]
fn a_list_closes_when_the_feedback_stream_passes_its_window_with_deduplicated_feedback() {
    let mut j = joiner();
    // Feedback before the result (out of order), then request, result, a duplicate.
    j.feedback(click_at("r1", "c", true, 150), src("feedback", 0), 0);
    j.request(request_at("r1", 90), src("requests", 0), 1);
    j.result(result_at("r1", &["c", "a", "b"], 100), src("results", 0), 2);
    j.feedback(click_at("r1", "c", false, 160), src("feedback", 1), 3);
    j.feedback(click_at("r1", "b", true, 900), src("feedback", 2), 4);
    // Clicked within the window by its time but after the window: late.
    j.feedback(click_at("r1", "a", true, 1101), src("feedback", 3), 5);

    // The feedback stream is at 1101 > 100 + 1000: the window has passed in the events,
    // whatever the wall clock says.
    let closed = j.close_due(6);
    assert_eq!(closed.lists.len(), 1);
    let list = &closed.lists[0];
    assert_eq!(list.served_items, ["c", "a", "b"]);
    // c: first copy (clicked) wins over the duplicate; a: its click is late; b: clicked.
    assert_eq!(list.clicks, [true, false, true]);
    assert_eq!(list.utility, 2.0);
    assert_eq!(list.model_version, "v000002");
    assert_eq!(list.timestamp_ms, 90);
    assert_eq!(list.served_indices(), Ok(vec![2, 0, 1]));
    assert_eq!(
        reasons(&closed),
        [("r1".into(), UnjoinedReason::LateFeedback)]
    );
    assert_eq!(
        closed.sources.len(),
        6,
        "every event's offset is released with the list"
    );
    assert_eq!(j.stats().duplicate_feedback, 1);
    assert_eq!(j.pending(), 0);

    // Feedback after the list was written is late; a re-delivered result a duplicate.
    j.feedback(click_at("r1", "a", true, 200), src("feedback", 4), 7);
    j.result(result_at("r1", &["a", "b", "c"], 100), src("results", 1), 8);
    let after = j.close_due(9);
    assert_eq!(
        reasons(&after),
        [("r1".into(), UnjoinedReason::LateFeedback)]
    );
    assert_eq!(after.sources.len(), 2, "both offsets finish");
    assert_eq!(j.stats().late_feedback, 2);
    assert_eq!(j.stats().duplicate_events, 1);
    assert_eq!(j.pending(), 0, "the duplicate opened no new list");
}

#[test]
fn a_list_waits_for_its_window_on_the_events_clock_not_the_wall_clock() {
    let mut j = joiner();
    j.request(request_at("r", 90), src("requests", 0), 0);
    j.result(result_at("r", &["a"], 100), src("results", 0), 0);
    j.feedback(click_at("r", "a", true, 600), src("feedback", 0), 0);
    // Wall time runs on (a slow batch), the feedback stream is still before the window's end.
    assert!(j.close_due(IDLE - 1).lists.is_empty());
    j.feedback(
        click_at("other", "a", true, 1100),
        src("feedback", 1),
        IDLE - 1,
    );
    assert_eq!(j.close_due(IDLE).lists.len(), 1);
}

#[test]
fn a_quiet_feedback_stream_closes_lists_once_it_is_idle() {
    let mut j = joiner();
    j.request(request_at("r", 90), src("requests", 0), 0);
    j.result(result_at("r", &["a"], 100), src("results", 0), 0);
    j.feedback(click_at("r", "a", true, 150), src("feedback", 0), 0);
    assert!(j.close_due(IDLE - 1).lists.is_empty());
    // Nothing on the feedback partition for IDLE: caught up, its clock is wall - IDLE.
    let closed = j.close_due(IDLE + 100 + WINDOW);
    assert_eq!(closed.lists.len(), 1);
    assert_eq!(closed.lists[0].clicks, [true]);
}

/// The logger catching up a backlog: results (small) are read far ahead of their
/// requests (large), the feedback is all read before them, and every step of reading
/// takes longer than the window on the wall clock. Every list is written.
#[test]
fn a_backlog_read_out_of_step_on_a_late_wall_clock_loses_no_list() {
    let mut j = joiner();
    let n = 50;
    let ts = |k: i64| 1_000_000 + 100 * k;
    let mut wall = ts(0);
    let mut lists = Vec::new();
    for k in 0..n {
        j.result(
            result_at(&format!("r{k}"), &["a", "b"], ts(k) + 5),
            src("results", k),
            wall,
        );
        j.feedback(
            click_at(&format!("r{k}"), "b", true, ts(k) + 50),
            src("feedback", k),
            wall,
        );
    }
    for k in 0..n {
        wall += 5 * WINDOW;
        j.request(
            request_at(&format!("r{k}"), ts(k)),
            src("requests", k),
            wall,
        );
        let closed = j.close_due(wall);
        assert!(closed.unjoined.is_empty(), "{:?}", reasons(&closed));
        lists.extend(closed.lists);
    }
    // The last ones close once the streams are idle.
    let closed = j.close_due(wall + IDLE);
    assert!(closed.unjoined.is_empty(), "{:?}", reasons(&closed));
    lists.extend(closed.lists);
    assert_eq!(lists.len(), n as usize);
    assert!(lists.iter().all(|l| l.clicks == [false, true]));
    assert_eq!(j.stats().results_without_request, 0);
    assert_eq!(j.pending(), 0);
}

/// A `serve` that lags by more than the window: the request waits for its result as
/// long as results keep coming for older requests.
#[test]
fn a_request_waits_for_a_late_result_while_serve_works_through_older_requests() {
    let mut j = joiner();
    for k in 0..10 {
        j.request(
            request_at(&format!("r{k}"), 1000 * k),
            src("requests", k),
            0,
        );
    }
    // serve answers r0..r8 much later (its own clock), one window of wall time apart.
    let mut wall = 0;
    for k in 0..9 {
        wall += 2 * WINDOW;
        j.result(
            result_at(&format!("r{k}"), &["a"], 50_000 + k),
            src("results", k),
            wall,
        );
        j.feedback(click_at("x", "a", false, 100_000), src("feedback", k), wall);
        let closed = j.close_due(wall);
        assert!(
            !reasons(&closed).iter().any(|(id, _)| id == "r9"),
            "r9 given up while serve still answers older requests"
        );
    }
    // r9 is answered at last.
    j.result(result_at("r9", &["a"], 60_000), src("results", 9), wall);
    j.feedback(
        click_at("x", "a", false, 100_000),
        src("feedback", 10),
        wall,
    );
    let closed = j.close_due(wall);
    assert!(closed.lists.iter().any(|l| l.request_id == "r9"));
    assert_eq!(j.stats().requests_without_result, 0);
}

#[test]
fn what_cannot_be_joined_is_set_aside_once_the_streams_have_passed_it() {
    let mut j = joiner();
    j.feedback(click_at("ghost", "a", true, 100), src("feedback", 0), 0);
    j.feedback(click_at("ghost", "b", false, 110), src("feedback", 1), 0);
    j.result(result_at("no-request", &["a"], 120), src("results", 0), 0);
    j.request(request_at("bad", 125), src("requests", 0), 0);
    j.result(result_at("bad", &["a", "z"], 130), src("results", 1), 0);
    j.request(request_at("unanswered", 130), src("requests", 1), 0);
    assert!(
        j.close_due(1).unjoined.is_empty(),
        "nothing has passed them yet"
    );
    // The streams move a window past them: younger requests, results and feedback.
    j.request(request_at("young", 5000), src("requests", 2), 2);
    j.result(result_at("young", &["a"], 5000), src("results", 2), 2);
    j.feedback(click_at("young", "a", true, 5000), src("feedback", 2), 2);
    let closed = j.close_due(3);
    let got = reasons(&closed);
    assert_eq!(got.len(), 5, "{got:?}");
    for expected in [
        ("ghost", UnjoinedReason::OrphanFeedback),
        ("no-request", UnjoinedReason::ResultWithoutRequest),
        ("bad", UnjoinedReason::ResultNotFromPool),
        ("unanswered", UnjoinedReason::RequestWithoutResult),
    ] {
        assert!(
            got.contains(&(expected.0.to_owned(), expected.1)),
            "{expected:?} in {got:?}"
        );
    }
    assert_eq!(j.stats().orphan_feedback, 2);
    assert_eq!(j.stats().requests_without_result, 1);
    assert_eq!(closed.sources.len(), 6);
    assert_eq!(j.pending(), 1, "young is still in its window");
}

#[test]
fn a_newly_assigned_partition_holds_the_clock_and_a_paused_stream_is_not_idle() {
    let mut j = joiner();
    j.assign(Stream::Feedback, &[0, 1], 0);
    j.request(request_at("r", 90), src("requests", 0), 0);
    j.result(result_at("r", &["a"], 100), src("results", 0), 0);
    j.feedback(click_at("other", "a", true, 5000), src("feedback", 0), 0);
    assert!(
        j.close_due(1).lists.is_empty(),
        "feedback partition 1 has not been read yet"
    );
    j.pause(Stream::Feedback, true, 1);
    assert!(
        j.close_due(10 * IDLE).lists.is_empty(),
        "silence of a paused stream is not idleness"
    );
    j.pause(Stream::Feedback, false, 10 * IDLE);
    assert_eq!(j.close_due(11 * IDLE).lists.len(), 1);
}

#[test]
fn at_the_bound_the_join_names_the_stream_most_lists_wait_for() {
    let mut j = joiner();
    for k in 0..3 {
        j.result(
            result_at(&format!("r{k}"), &["a"], 100),
            src("results", k),
            0,
        );
    }
    j.request(request_at("q", 100), src("requests", 0), 0);
    assert_eq!(j.waiting_on(), Stream::Requests);
    for k in 0..3 {
        j.request(request_at(&format!("r{k}"), 90), src("requests", k + 1), 0);
    }
    assert_eq!(j.waiting_on(), Stream::Feedback);
}

#[test]
fn written_lists_are_remembered_up_to_a_bound() {
    let mut j = ListJoiner::new(
        JoinSettings {
            window_ms: WINDOW,
            idle_ms: IDLE,
            remember_lists: 2,
        },
        0,
    );
    for k in 0..3 {
        let id = format!("r{k}");
        j.request(request_at(&id, 0), src("requests", k), 0);
        j.result(result_at(&id, &["a"], 0), src("results", k), 0);
    }
    j.feedback(click_at("x", "a", true, 5000), src("feedback", 0), 0);
    assert_eq!(j.close_due(1).lists.len(), 3);
    // r0 is forgotten: its feedback is an orphan, not late; r2's is late.
    j.feedback(click_at("r0", "a", true, 10), src("feedback", 1), 2);
    j.feedback(click_at("r2", "a", true, 10), src("feedback", 2), 2);
    assert_eq!(j.stats().late_feedback, 1);
    assert_eq!(j.pending(), 2, "r0's feedback and x wait as orphans");
}

#[test]
fn lists_written_before_a_restart_make_their_re_read_events_duplicates() {
    // A restarted logger re-reads a result whose request offset was committed (the list
    // is in its files): without knowing the list it would be `result_without_request`.
    let mut j = joiner();
    j.written_before(["r1".to_owned()]);
    j.result(result_at("r1", &["a"], 10), src("results", 7), 0);
    j.request(request_at("r1", 0), src("requests", 3), 0);
    j.request(request_at("r2", 0), src("requests", 4), 0);
    j.result(result_at("r2", &["b"], 10), src("results", 8), 0);
    j.feedback(click_at("x", "a", true, 5000), src("feedback", 0), 0);
    let closed = j.close_due(1);
    assert_eq!(reasons(&closed), vec![]);
    assert_eq!(closed.lists.len(), 1, "only r2 is written");
    assert_eq!(j.stats().duplicate_events, 2);
    let offsets: Vec<i64> = closed.sources.iter().map(|s| s.offset).collect();
    for finished in [7, 3] {
        assert!(
            offsets.contains(&finished),
            "{offsets:?} finishes {finished}"
        );
    }
}

/// A list the logging policy drew is logged as exploration, with its policy and
/// propensities; a model's list carries neither.
#[test]
fn an_exploration_result_is_logged_with_its_policy_and_propensities() {
    use crate::schema::{ExplorationDraw, LoggingPolicy, ServedSource};
    let mut j = joiner();
    j.request(request_at("r1", 0), src("requests", 0), 0);
    let mut explored = result_at("r1", &["b", "c", "a"], 10);
    explored.source = ServedSource::Exploration;
    explored.exploration = Some(ExplorationDraw {
        policy: LoggingPolicy::PlackettLuce,
        temperature: Some(0.5),
        propensities: vec![0.6, 0.7, 1.0],
    });
    j.result(explored, src("results", 0), 1);
    j.request(request_at("r2", 0), src("requests", 1), 2);
    j.result(result_at("r2", &["a", "b", "c"], 10), src("results", 1), 3);
    j.feedback(click_at("r1", "b", true, 2000), src("feedback", 0), 4);
    let closed = j.close_due(5);
    let by_id = |id: &str| {
        closed
            .lists
            .iter()
            .find(|l| l.request_id == id)
            .expect("closed list")
    };
    let r1 = by_id("r1");
    assert!(r1.exploration);
    assert_eq!(r1.logging_policy.as_deref(), Some("plackett_luce@0.5"));
    assert_eq!(r1.propensities, [0.6, 0.7, 1.0]);
    let r2 = by_id("r2");
    assert!(!r2.exploration);
    assert_eq!(
        (r2.logging_policy.as_ref(), r2.propensities.len()),
        (None, 0)
    );
}
