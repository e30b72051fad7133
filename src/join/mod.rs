//! The feedback join under `eglr log` (the Kafka stage is [`crate::stream`]'s logger): requests (features), results (served order) and feedback
//! (clicks) of one request_id become one [`LoggedList`] once the join window after the
//! result has closed. Pure state, no I/O: the Kafka stage feeds it events with their
//! source offsets and a clock, and writes what it closes.
//!
//! - Feedback may arrive before its result, after it, or twice: it is kept per
//!   (request_id, item_id); the first copy wins and later copies are counted.
//! - A list closes `window_ms` after its result arrived (the time users have to click).
//! - What cannot be joined is not dropped: feedback whose request never got a result
//!   within the window (orphans), feedback arriving after its list closed (late), and
//!   results whose request was never seen are returned as [`Unjoined`] for a side file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::list_log::LoggedList;
use crate::schema::{Feedback, RerankRequest, RerankResult};

/// Where an event came from: its offset is finished once what it went into is durable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// An event that went into no list, with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unjoined {
    pub request_id: String,
    pub reason: UnjoinedReason,
    /// The event, as JSON.
    pub event: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnjoinedReason {
    /// Feedback for a request that got no result within the window.
    OrphanFeedback,
    /// Feedback that arrived after its list was written.
    LateFeedback,
    /// A result whose request was never seen.
    ResultWithoutRequest,
    /// A result naming items that are not in its request's pool, or one twice.
    ResultNotFromPool,
    /// A result or feedback event that does not decode or validate (the event is the
    /// error and the raw payload).
    Malformed,
}

/// What closing the window produced, with the sources to finish once it is durable.
#[derive(Debug, Default)]
pub struct Closed {
    pub lists: Vec<LoggedList>,
    pub unjoined: Vec<Unjoined>,
    pub sources: Vec<Source>,
}

/// Counters for metrics and the summary.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct JoinStats {
    pub lists: u64,
    pub duplicate_feedback: u64,
    pub orphan_feedback: u64,
    pub late_feedback: u64,
    pub results_without_request: u64,
}

#[derive(Debug, Default)]
struct Pending {
    request: Option<RerankRequest>,
    result: Option<RerankResult>,
    /// First feedback per item id.
    feedback: BTreeMap<String, Feedback>,
    /// When the first event of this request arrived (ms, the joiner's clock).
    first_seen_ms: i64,
    sources: Vec<Source>,
}

/// The join state.
#[derive(Debug)]
pub struct ListJoiner {
    window_ms: i64,
    pending: HashMap<String, Pending>,
    /// (deadline, request_id): when each pending request closes.
    deadlines: BTreeSet<(i64, String)>,
    /// Recently closed request ids and when they may be forgotten: feedback for them is
    /// late, not orphaned.
    closed: HashMap<String, i64>,
    stats: JoinStats,
}

impl ListJoiner {
    pub fn new(window_ms: i64) -> Self {
        Self {
            window_ms: window_ms.max(0),
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            closed: HashMap::new(),
            stats: JoinStats::default(),
        }
    }

    pub fn stats(&self) -> &JoinStats {
        &self.stats
    }

    /// Requests waiting for their window to close.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn entry(&mut self, id: &str, now_ms: i64) -> &mut Pending {
        if !self.pending.contains_key(id) {
            // Until a result arrives, a request waits one window from its first event.
            self.deadlines
                .insert((now_ms + self.window_ms, id.to_owned()));
        }
        self.pending
            .entry(id.to_owned())
            .or_insert_with(|| Pending {
                first_seen_ms: now_ms,
                ..Pending::default()
            })
    }

    pub fn request(&mut self, request: RerankRequest, source: Source, now_ms: i64) {
        let p = self.entry(&request.request_id.clone(), now_ms);
        p.sources.push(source);
        if p.request.is_none() {
            p.request = Some(request);
        }
    }

    /// A result starts the list's window: it closes `window_ms` from now.
    pub fn result(&mut self, result: RerankResult, source: Source, now_ms: i64) {
        let id = result.request_id.clone();
        let window = self.window_ms;
        let p = self.entry(&id, now_ms);
        p.sources.push(source);
        if p.result.is_some() {
            return; // a re-delivered result (at-least-once serving): the first one counts
        }
        p.result = Some(result);
        let first_seen = p.first_seen_ms;
        self.deadlines.remove(&(first_seen + window, id.clone()));
        self.deadlines.insert((now_ms + window, id));
    }

    /// Feedback joins its pending request; for a request already written it is late.
    pub fn feedback(
        &mut self,
        feedback: Feedback,
        source: Source,
        now_ms: i64,
    ) -> Option<Unjoined> {
        let id = feedback.request_id.clone();
        if self.closed.contains_key(&id) {
            self.stats.late_feedback += 1;
            return Some(unjoined(&id, UnjoinedReason::LateFeedback, &feedback));
        }
        let p = self.entry(&id, now_ms);
        p.sources.push(source);
        let item = feedback.item_id.0.clone();
        match p.feedback.entry(item) {
            std::collections::btree_map::Entry::Occupied(_) => self.stats.duplicate_feedback += 1,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(feedback);
            }
        }
        None
    }

    /// Closes every request whose deadline is at or before `now_ms`.
    pub fn close_due(&mut self, now_ms: i64) -> Closed {
        let mut out = Closed::default();
        while let Some((deadline, id)) = self.deadlines.first().cloned() {
            if deadline > now_ms {
                break;
            }
            self.deadlines.remove(&(deadline, id.clone()));
            if let Some(p) = self.pending.remove(&id) {
                self.close(id, p, now_ms, &mut out);
            }
        }
        self.closed.retain(|_, forget_at| *forget_at > now_ms);
        out
    }

    /// Closes everything (shutdown): lists whose window is still open are written with
    /// the feedback seen so far.
    pub fn close_all(&mut self, now_ms: i64) -> Closed {
        let mut out = Closed::default();
        self.deadlines.clear();
        let ids: Vec<String> = self.pending.keys().cloned().collect();
        for id in ids {
            if let Some(p) = self.pending.remove(&id) {
                self.close(id, p, now_ms, &mut out);
            }
        }
        out
    }

    fn close(&mut self, id: String, p: Pending, now_ms: i64, out: &mut Closed) {
        out.sources.extend(p.sources);
        match (p.request, p.result) {
            (Some(request), Some(result)) if served_from_pool(&request, &result) => {
                out.lists.push(joined(request, &result, &p.feedback));
                self.stats.lists += 1;
                // Feedback can still trickle in: remember the id for another window.
                self.closed.insert(id, now_ms + self.window_ms);
            }
            (request, Some(result)) => {
                self.stats.results_without_request += 1;
                let reason = if request.is_some() {
                    UnjoinedReason::ResultNotFromPool
                } else {
                    UnjoinedReason::ResultWithoutRequest
                };
                out.unjoined.push(unjoined(&id, reason, &result));
                self.orphans(&id, p.feedback, out);
            }
            (_, None) => self.orphans(&id, p.feedback, out),
        }
    }

    fn orphans(&mut self, id: &str, feedback: BTreeMap<String, Feedback>, out: &mut Closed) {
        for f in feedback.values() {
            self.stats.orphan_feedback += 1;
            out.unjoined
                .push(unjoined(id, UnjoinedReason::OrphanFeedback, f));
        }
    }
}

fn unjoined(id: &str, reason: UnjoinedReason, event: &impl Serialize) -> Unjoined {
    Unjoined {
        request_id: id.to_owned(),
        reason,
        event: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
    }
}

/// Every served item is a distinct candidate of the request.
fn served_from_pool(request: &RerankRequest, result: &RerankResult) -> bool {
    let pool: std::collections::HashSet<&str> = request
        .candidates
        .iter()
        .map(|c| c.item_id.as_str())
        .collect();
    let mut seen = std::collections::HashSet::new();
    result
        .items
        .iter()
        .all(|i| pool.contains(i.item_id.as_str()) && seen.insert(i.item_id.as_str()))
}

/// The logged list: the pool in initial order, the served order, a click per served
/// position (no feedback = no click), and the utility (the sum of the feedback's
/// utilities where given, else the number of clicks).
fn joined(
    request: RerankRequest,
    result: &RerankResult,
    feedback: &BTreeMap<String, Feedback>,
) -> LoggedList {
    let served: Vec<String> = result.items.iter().map(|i| i.item_id.0.clone()).collect();
    let clicks: Vec<bool> = served
        .iter()
        .map(|id| feedback.get(id).is_some_and(|f| f.clicked))
        .collect();
    let utilities: Vec<f64> = served
        .iter()
        .filter_map(|id| feedback.get(id).and_then(|f| f.utility))
        .collect();
    let utility = if utilities.is_empty() {
        clicks.iter().filter(|&&c| c).count() as f64
    } else {
        utilities.iter().sum()
    };
    LoggedList {
        request_id: request.request_id,
        timestamp_ms: request.timestamp_ms,
        user: request.user,
        candidates: request.candidates,
        served_items: served,
        clicks,
        utility,
        model_version: result.model_version.clone(),
        exploration: false,
    }
}

#[cfg(test)]
mod tests;
