//! The feedback join under `eglr log` (the Kafka stage is [`crate::stream`]'s logger):
//! requests (features), results (served order) and feedback (clicks) of one request_id
//! become one [`LoggedList`]. Pure state, no I/O: the Kafka stage feeds it events with
//! their source offsets and its wall clock, and writes what it closes.
//!
//! The join runs on the events' own time and on completeness, never on the logger's
//! wall clock alone (see [`clock`]): a list is written once its request and its result
//! are both there and its feedback window — `window_ms` from the result's timestamp —
//! has passed on the feedback stream's clock. So a logger that catches up a backlog, or
//! one reading a `serve` that lags, writes the same lists as one that keeps up.
//!
//! - Feedback may arrive before its result, after it, or twice: it is kept per
//!   (request_id, item_id); the first copy wins and later copies are counted. Feedback
//!   timed after its list's window, or arriving after the list was written, is late.
//! - What cannot be joined is not dropped: it is returned as [`Unjoined`] for a side
//!   file. A result waits for its request until the requests stream has passed the
//!   result's window (its request, sent before it, is not coming); a request waits for
//!   its result until results have been seen for requests a window younger than it on
//!   every results partition (however long `serve` takes: a quiet `serve`, or a
//!   results partition without traffic, holds requests, bounded below);
//!   feedback with neither waits until the results and requests streams have passed it.
//! - Pending state is bounded by the caller: [`ListJoiner::waiting_on`] names the
//!   stream most pending lists wait for, so intake of the others can pause.

mod event_time;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::list_log::LoggedList;
use crate::schema::{Feedback, RerankRequest, RerankResult, ServedSource};
use event_time::{Idle, StreamClock};

/// Where an event came from: its offset is finished once what it went into is durable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The three streams the join reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Requests,
    Results,
    Feedback,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Requests, Stream::Results, Stream::Feedback];
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
    /// Feedback for a request that got no result.
    OrphanFeedback,
    /// Feedback timed after its list's window, or arriving after the list was written.
    LateFeedback,
    /// A result whose request was never seen.
    ResultWithoutRequest,
    /// A request that got no result while results for younger requests came.
    RequestWithoutResult,
    /// A result naming items that are not in its request's pool, or one twice.
    ResultNotFromPool,
    /// A result or feedback event that does not decode or validate (the event is the
    /// error and the raw payload).
    Malformed,
}

/// What closing produced, with the sources to finish once it is durable.
#[derive(Debug, Default)]
pub struct Closed {
    pub lists: Vec<LoggedList>,
    pub unjoined: Vec<Unjoined>,
    pub sources: Vec<Source>,
}

/// How the join decides when a list is complete.
#[derive(Debug, Clone, Copy)]
pub struct JoinSettings {
    /// How long after its result a list takes feedback (ms of event time).
    pub window_ms: i64,
    /// A partition that delivered nothing for this long (wall ms) is caught up.
    pub idle_ms: i64,
    /// How many written lists are remembered so that their feedback and re-delivered
    /// events are recognised as late or duplicate.
    pub remember_lists: usize,
}

/// Counters for metrics and the summary.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct JoinStats {
    pub lists: u64,
    pub duplicate_feedback: u64,
    pub orphan_feedback: u64,
    pub late_feedback: u64,
    pub results_without_request: u64,
    pub requests_without_result: u64,
    /// Requests and results re-delivered after their list was written.
    pub duplicate_events: u64,
}

/// What a pending request waits for, and so which clock closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wait {
    /// Request and result are there: the feedback window.
    Window,
    /// A result without its request: the window, and the requests stream passing it.
    Request,
    /// A request without its result: results for requests a window younger.
    Answer,
    /// Feedback alone: the results and requests streams passing it.
    Served,
}

const WAITS: [Wait; 4] = [Wait::Window, Wait::Request, Wait::Answer, Wait::Served];

#[derive(Debug, Default)]
struct Pending {
    request: Option<RerankRequest>,
    result: Option<RerankResult>,
    /// The partition the result came from (its answered-requests clock).
    result_partition: i32,
    /// First feedback per item id.
    feedback: BTreeMap<String, Feedback>,
    sources: Vec<Source>,
    /// Where it is queued: (what it waits for, at which time of that clock).
    due: Option<(Wait, i64)>,
}

impl Pending {
    fn due(&self, window_ms: i64) -> (Wait, i64) {
        match (&self.request, &self.result) {
            (Some(_), Some(r)) => (Wait::Window, r.timestamp_ms.saturating_add(window_ms)),
            (None, Some(r)) => (Wait::Request, r.timestamp_ms.saturating_add(window_ms)),
            (Some(q), None) => (Wait::Answer, q.timestamp_ms.saturating_add(window_ms)),
            (None, None) => {
                let first = self.feedback.values().map(|f| f.timestamp_ms).min();
                (
                    Wait::Served,
                    first.unwrap_or(i64::MIN).saturating_add(window_ms),
                )
            }
        }
    }
}

/// The request ids of the most recently written lists, oldest first (bounded).
#[derive(Debug, Default)]
struct Written {
    order: VecDeque<String>,
    ids: HashSet<String>,
    capacity: usize,
}

impl Written {
    fn insert(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

/// The event-time clocks of the three streams, and of the requests answered so far.
#[derive(Debug)]
struct Clocks {
    requests: StreamClock,
    results: StreamClock,
    feedback: StreamClock,
    /// Per results partition, the timestamp of the newest request answered there: how
    /// far `serve` has got through the requests, in the requests' own time.
    answered: StreamClock,
}

impl Clocks {
    fn of(&mut self, stream: Stream) -> Vec<&mut StreamClock> {
        match stream {
            Stream::Requests => vec![&mut self.requests],
            Stream::Results => vec![&mut self.results, &mut self.answered],
            Stream::Feedback => vec![&mut self.feedback],
        }
    }

    fn now(&self, wait: Wait, wall_ms: i64) -> i64 {
        let at = |c: &StreamClock| c.now(wall_ms);
        match wait {
            Wait::Window => at(&self.feedback),
            Wait::Request => at(&self.feedback).min(at(&self.requests)),
            Wait::Answer => at(&self.answered),
            Wait::Served => at(&self.results).min(at(&self.requests)),
        }
    }
}

/// The join state.
#[derive(Debug)]
pub struct ListJoiner {
    settings: JoinSettings,
    pending: HashMap<String, Pending>,
    /// (deadline, request_id) per [`Wait`], in [`WAITS`] order.
    queues: [BTreeSet<(i64, String)>; 4],
    clocks: Clocks,
    written: Written,
    /// Closed since the last [`ListJoiner::close_due`]: late feedback and duplicates.
    ready: Closed,
    stats: JoinStats,
}

impl ListJoiner {
    pub fn new(settings: JoinSettings, wall_ms: i64) -> Self {
        let idle_ms = settings.idle_ms.max(0);
        Self {
            settings: JoinSettings {
                window_ms: settings.window_ms.max(0),
                idle_ms,
                ..settings
            },
            pending: HashMap::new(),
            queues: Default::default(),
            clocks: Clocks {
                requests: StreamClock::new(Idle::FollowsWall, idle_ms, wall_ms),
                results: StreamClock::new(Idle::FollowsWall, idle_ms, wall_ms),
                feedback: StreamClock::new(Idle::FollowsWall, idle_ms, wall_ms),
                answered: StreamClock::new(Idle::Holds, idle_ms, wall_ms),
            },
            written: Written {
                capacity: settings.remember_lists.max(1),
                ..Written::default()
            },
            ready: Closed::default(),
            stats: JoinStats::default(),
        }
    }

    /// Lists written before this joiner started (by an earlier run of the logger, read
    /// back from its files), oldest first: their re-delivered requests and results are
    /// duplicates, not events without a partner.
    pub fn written_before(&mut self, request_ids: impl IntoIterator<Item = String>) {
        for id in request_ids {
            self.written.insert(id);
        }
    }

    pub fn stats(&self) -> &JoinStats {
        &self.stats
    }

    /// Requests waiting to be written or set aside.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The partitions of `stream` this instance reads now (after a rebalance).
    pub fn assign(&mut self, stream: Stream, partitions: &[i32], wall_ms: i64) {
        for c in self.clocks.of(stream) {
            c.assign(partitions, wall_ms);
        }
    }

    /// The partitions of `stream` the consumer knows to have unread records: none of
    /// them counts as caught up while it is quiet.
    pub fn behind(&mut self, stream: Stream, partitions: &[i32]) {
        for c in self.clocks.of(stream) {
            c.behind(partitions);
        }
    }

    /// The caller paused (or resumed) its intake of `stream`.
    pub fn pause(&mut self, stream: Stream, paused: bool, wall_ms: i64) {
        for c in self.clocks.of(stream) {
            c.pause(paused, wall_ms);
        }
    }

    /// The stream most pending requests wait for: the one to keep reading when
    /// pending state is at its bound (reading it completes lists or moves the clock
    /// that closes them; once it is caught up, its idle clock closes them).
    pub fn waiting_on(&self) -> Stream {
        let waiting = |w: Wait| self.queues[w as usize].len();
        [
            (Stream::Feedback, waiting(Wait::Window)),
            (Stream::Requests, waiting(Wait::Request)),
            (
                Stream::Results,
                waiting(Wait::Answer) + waiting(Wait::Served),
            ),
        ]
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or(Stream::Feedback, |(s, _)| s)
    }

    /// A re-delivered request or result of a list already written: its offset is
    /// finished, nothing else.
    fn duplicate(&mut self, id: &str, source: &Source) -> bool {
        if !self.written.ids.contains(id) || self.pending.contains_key(id) {
            return false;
        }
        self.stats.duplicate_events += 1;
        self.ready.sources.push(source.clone());
        true
    }

    fn entry(&mut self, id: &str) -> &mut Pending {
        self.pending.entry(id.to_owned()).or_default()
    }

    /// Queues `id` by what it now waits for.
    fn schedule(&mut self, id: &str) {
        let window = self.settings.window_ms;
        let Some(p) = self.pending.get_mut(id) else {
            return;
        };
        let due = p.due(window);
        if p.due == Some(due) {
            return;
        }
        if let Some((wait, at)) = p.due.replace(due) {
            self.queues[wait as usize].remove(&(at, id.to_owned()));
        }
        self.queues[due.0 as usize].insert((due.1, id.to_owned()));
    }

    /// Moves the answered-requests clock when `id` has both its request and result.
    fn answered(&mut self, id: &str, wall_ms: i64) {
        if let Some(p) = self.pending.get(id) {
            if let (Some(q), Some(_)) = (&p.request, &p.result) {
                self.clocks
                    .answered
                    .advance(p.result_partition, q.timestamp_ms, wall_ms);
            }
        }
    }

    pub fn request(&mut self, request: RerankRequest, source: Source, wall_ms: i64) {
        self.clocks
            .requests
            .event(source.partition, request.timestamp_ms, wall_ms);
        let id = request.request_id.clone();
        if self.duplicate(&id, &source) {
            return;
        }
        let p = self.entry(&id);
        p.sources.push(source);
        if p.request.is_none() {
            p.request = Some(request);
        }
        self.answered(&id, wall_ms);
        self.schedule(&id);
    }

    /// A result starts its list's window: feedback until `window_ms` after its time.
    pub fn result(&mut self, result: RerankResult, source: Source, wall_ms: i64) {
        self.clocks
            .results
            .event(source.partition, result.timestamp_ms, wall_ms);
        // The result's partition now counts for (and holds) the answered clock; its
        // request's time moves that clock once both are there.
        self.clocks.answered.message(source.partition, wall_ms);
        let id = result.request_id.clone();
        if self.duplicate(&id, &source) {
            return;
        }
        let partition = source.partition;
        let p = self.entry(&id);
        p.sources.push(source);
        if p.result.is_some() {
            return; // a re-delivered result (at-least-once serving): the first one counts
        }
        p.result = Some(result);
        p.result_partition = partition;
        self.answered(&id, wall_ms);
        self.schedule(&id);
    }

    /// Feedback joins its pending request; for a list already written it is late.
    pub fn feedback(&mut self, feedback: Feedback, source: Source, wall_ms: i64) {
        self.clocks
            .feedback
            .event(source.partition, feedback.timestamp_ms, wall_ms);
        let id = feedback.request_id.clone();
        if self.written.ids.contains(&id) && !self.pending.contains_key(&id) {
            self.stats.late_feedback += 1;
            self.ready
                .unjoined
                .push(unjoined(&id, UnjoinedReason::LateFeedback, &feedback));
            self.ready.sources.push(source);
            return;
        }
        let p = self.entry(&id);
        p.sources.push(source);
        let item = feedback.item_id.0.clone();
        match p.feedback.entry(item) {
            std::collections::btree_map::Entry::Occupied(_) => self.stats.duplicate_feedback += 1,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(feedback);
            }
        }
        self.schedule(&id);
    }

    /// Closes every request whose wait is over by the clocks at wall time `wall_ms`,
    /// with what came in since the last call (late feedback, duplicates).
    pub fn close_due(&mut self, wall_ms: i64) -> Closed {
        let mut out = std::mem::take(&mut self.ready);
        for wait in WAITS {
            let now = self.clocks.now(wait, wall_ms);
            while let Some((deadline, id)) = self.queues[wait as usize].first().cloned() {
                if deadline > now {
                    break;
                }
                self.queues[wait as usize].remove(&(deadline, id.clone()));
                if let Some(p) = self.pending.remove(&id) {
                    self.close(id, p, &mut out);
                }
            }
        }
        out
    }

    fn close(&mut self, id: String, p: Pending, out: &mut Closed) {
        out.sources.extend(p.sources);
        match (p.request, p.result) {
            (Some(request), Some(result)) if served_from_pool(&request, &result) => {
                // Feedback timed after the window is late, however early it arrived:
                // the list is the same whenever the logger reads it.
                let until = result.timestamp_ms.saturating_add(self.settings.window_ms);
                let (timely, late): (BTreeMap<_, _>, BTreeMap<_, _>) = p
                    .feedback
                    .into_iter()
                    .partition(|(_, f)| f.timestamp_ms <= until);
                for f in late.values() {
                    self.stats.late_feedback += 1;
                    out.unjoined
                        .push(unjoined(&id, UnjoinedReason::LateFeedback, f));
                }
                out.lists.push(joined(request, &result, &timely));
                self.stats.lists += 1;
                self.written.insert(id);
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
            (Some(request), None) => {
                self.stats.requests_without_result += 1;
                out.unjoined.push(unjoined(
                    &id,
                    UnjoinedReason::RequestWithoutResult,
                    &request,
                ));
                self.orphans(&id, p.feedback, out);
            }
            (None, None) => self.orphans(&id, p.feedback, out),
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
        exploration: result.source == ServedSource::Exploration,
        logging_policy: result.exploration.as_ref().map(|d| match d.temperature {
            Some(t) => format!("{}@{t}", d.policy.name()),
            None => d.policy.name().to_owned(),
        }),
        propensities: result
            .exploration
            .as_ref()
            .map(|d| d.propensities.clone())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
