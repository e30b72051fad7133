//! Stage metrics in the Prometheus text format, and the health verdict.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::kafka::ConsumerGauges;
use crate::exploration::ExplorationConfig;

/// A histogram with fixed upper bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    state: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            state: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Ok(mut s) = self.state.lock() {
            for (count, &bound) in s.0.iter_mut().zip(&self.bounds) {
                if value <= bound {
                    *count += 1;
                }
            }
            s.1 += value;
            s.2 += 1;
        }
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let Ok(s) = self.state.lock() else { return };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (count, bound) in s.0.iter().zip(&self.bounds) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            s.2, s.1, s.2
        );
    }
}

/// A counter with one label (`kind`, `reason`, ...). Its values may be fractional (a
/// sum of estimates); counts stay exact up to 2^53.
#[derive(Debug, Default)]
pub struct LabelledCounter(Mutex<BTreeMap<String, f64>>);

impl LabelledCounter {
    /// A counter that shows `labels` at 0 before their first event, so that rates
    /// and ratios over them exist from the first scrape (the Prometheus advice for
    /// label values known in advance).
    pub fn with_labels(labels: &[&str]) -> Self {
        Self(Mutex::new(
            labels.iter().map(|l| ((*l).to_owned(), 0.0)).collect(),
        ))
    }

    pub fn add(&self, label: &str) {
        self.add_value(label, 1.0);
    }

    pub fn add_n(&self, label: &str, n: u64) {
        self.add_value(label, n as f64);
    }

    pub fn add_value(&self, label: &str, v: f64) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(label.to_owned()).or_default() += v;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.lock().map_or(0, |m| m.values().sum::<f64>() as u64)
    }

    pub(super) fn render(&self, name: &str, label: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        if let Ok(m) = self.0.lock() {
            for (value, n) in m.iter() {
                let value = escape_label(value);
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
            }
        }
    }
}

/// A label value as the text format wants it: backslash, double quote and line feed
/// escaped. Label values come from outside (topic names, a model version).
pub(super) fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Liveness of a stage whose progress clock's lock was poisoned: a thread panicked
/// holding it, a bug; the clock can no longer be trusted, so a restart is asked for.
pub(super) const POISONED: &str =
    "a bug: a thread panicked while holding the progress clock's lock";

/// Why a valid request was answered with the upstream order
/// (`eglr_upstream_fallbacks_total{reason}`).
pub const FALLBACK_REASONS: [&str; 5] = [
    "model_error",
    "model_panic",
    "non_finite_output",
    "model_limit",
    "deadline",
];

/// Bounds of the latency histograms, in seconds (Prometheus' base unit).
const LATENCY_BOUNDS_S: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// `eglr_build_info`: the running release, as a gauge of 1 (the Prometheus idiom).
pub(super) fn build_info(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP eglr_build_info The eglr release running.\n# TYPE eglr_build_info gauge\neglr_build_info{{version=\"{}\"}} 1",
        escape_label(env!("CARGO_PKG_VERSION"))
    );
}

/// Writes one Prometheus counter.
pub(super) fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

/// Writes one Prometheus gauge.
pub(super) fn gauge(out: &mut String, name: &str, help: &str, v: String) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// Everything the serve stage counts.
#[derive(Debug)]
pub struct ServeMetrics {
    pub requests: AtomicU64,
    pub results: AtomicU64,
    dead_letters: LabelledCounter,
    /// Valid requests answered with the upstream order, by reason.
    pub upstream_fallbacks: LabelledCounter,
    /// Lists served by the exploration logging policy, by policy.
    pub exploration_lists: LabelledCounter,
    /// `exploration.share`: what the exploration share should be.
    exploration_target: f64,
    /// The serving evaluator's expected clicks given up by exploration (the model's
    /// list minus the exploration list), summed over exploration lists, by policy.
    pub exploration_cost: LabelledCounter,
    /// Results whose list is the upstream order (the model's copies, selection and
    /// fallbacks alike).
    pub upstream_order_lists: AtomicU64,
    /// Lists the serving evaluator assessed (every `batching.quality_every`-th batch).
    pub assessed_lists: AtomicU64,
    /// The serving evaluator's expected clicks of the assessed lists: `served` (what
    /// went out) and `upstream` (the order upstream sent).
    pub expected_clicks: LabelledCounter,
    /// Records the stage gave up producing, by topic: their offsets stay unfinished.
    pub undelivered: LabelledCounter,
    /// Valid events that carried fields their schema does not list (ignored), by event.
    pub unknown_field_events: LabelledCounter,
    /// Offsets the consumer jumped over, by topic (see [`super::offsets::OffsetTracker::start`]).
    pub skipped_offsets: LabelledCounter,
    pub batch_size: Histogram,
    /// A request's time, split so that a p99 can be attributed: waiting for its batch
    /// (taken in until a worker opens its batch), batch assembly (until the batch
    /// closes at `max_batch` or `max_wait_ms`), the model's time per batch, and producing
    /// (result ready until acknowledged); and end to end, from the request's own
    /// `timestamp_ms` to its acknowledged result (includes upstream's produce and the
    /// consumer's fetch).
    pub queue_wait: Histogram,
    pub batch_assembly: Histogram,
    pub batch_duration: Histogram,
    pub produce: Histogram,
    pub end_to_end: Histogram,
    /// Requests taken in and not yet acknowledged (queued, at the model, or producing).
    pub in_flight: AtomicUsize,
    /// Times the serving model changed version without a restart.
    pub model_swaps: AtomicU64,
    pub reasoning_steps: Histogram,
    pub entropy: Histogram,
    /// The consumer's lag and broker connections (librdkafka statistics).
    pub consumer: ConsumerGauges,
    pub assigned_partitions: AtomicUsize,
    pub paused: AtomicUsize,
    /// Times the intake paused for backpressure.
    pub pauses: AtomicU64,
    model_version: Mutex<String>,
    /// When the serving model was trained (its bundle's `created_unix_ms`).
    model_created_ms: std::sync::atomic::AtomicI64,
    /// Why the stage can no longer make progress, once it cannot.
    failure: Mutex<Option<String>>,
    last_progress: Mutex<Instant>,
}

impl Default for ServeMetrics {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            results: AtomicU64::new(0),
            dead_letters: LabelledCounter::default(),
            upstream_fallbacks: LabelledCounter::with_labels(&FALLBACK_REASONS),
            exploration_lists: LabelledCounter::default(),
            exploration_target: 0.0,
            exploration_cost: LabelledCounter::default(),
            upstream_order_lists: AtomicU64::new(0),
            assessed_lists: AtomicU64::new(0),
            expected_clicks: LabelledCounter::with_labels(&["served", "upstream"]),
            undelivered: LabelledCounter::default(),
            skipped_offsets: LabelledCounter::default(),
            unknown_field_events: LabelledCounter::default(),
            batch_size: Histogram::new(&[1.0, 4.0, 16.0, 64.0, 128.0, 256.0, 512.0]),
            queue_wait: Histogram::new(&LATENCY_BOUNDS_S),
            batch_assembly: Histogram::new(&LATENCY_BOUNDS_S),
            batch_duration: Histogram::new(&LATENCY_BOUNDS_S),
            produce: Histogram::new(&LATENCY_BOUNDS_S),
            end_to_end: Histogram::new(&LATENCY_BOUNDS_S),
            in_flight: AtomicUsize::new(0),
            model_swaps: AtomicU64::new(0),
            reasoning_steps: Histogram::new(&[0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0]),
            entropy: Histogram::new(&[0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0]),
            consumer: ConsumerGauges::default(),
            assigned_partitions: AtomicUsize::new(0),
            paused: AtomicUsize::new(0),
            pauses: AtomicU64::new(0),
            model_version: Mutex::new(String::new()),
            model_created_ms: std::sync::atomic::AtomicI64::new(0),
            failure: Mutex::new(None),
            last_progress: Mutex::new(Instant::now()),
        }
    }
}

impl ServeMetrics {
    /// The metrics of a stage serving `exploration`: its target share, and its policy's
    /// counters at 0 until its first list.
    pub fn new(exploration: &ExplorationConfig) -> Self {
        let mut m = Self::default();
        if exploration.share > 0.0 {
            let policy = [exploration.policy.name()];
            m.exploration_target = exploration.share;
            m.exploration_lists = LabelledCounter::with_labels(&policy);
            m.exploration_cost = LabelledCounter::with_labels(&policy);
        }
        m
    }

    pub fn dead_letter(&self, kind: &str) {
        self.dead_letters.add(kind);
    }

    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.total()
    }

    /// The version serving now and when it was trained; a change after the first
    /// counts as a swap.
    pub fn set_model_version(&self, v: &str, created_unix_ms: i64) {
        self.model_created_ms
            .store(created_unix_ms, Ordering::Relaxed);
        if let Ok(mut m) = self.model_version.lock() {
            if *m != v {
                if !m.is_empty() {
                    self.model_swaps.fetch_add(1, Ordering::Relaxed);
                }
                *m = v.to_owned();
            }
        }
    }

    pub fn model_version(&self) -> String {
        self.model_version
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// The stage cannot make progress: it reports unhealthy and stops.
    pub fn fail(&self, why: String) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(why);
        }
    }

    /// Why the stage failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Something was consumed or produced.
    pub fn progress(&self) {
        if let Ok(mut p) = self.last_progress.lock() {
            *p = Instant::now();
        }
    }
}

impl super::http::Exposition for ServeMetrics {
    /// Live unless the stage failed or stalled: requests wait (lag) and the brokers are
    /// reachable, yet nothing was taken for `stall`. A standby member without
    /// partitions and a stage cut off by a broker outage are alive: restarting them
    /// would not help.
    fn liveness(&self, stall: Duration) -> Result<(), String> {
        if let Some(why) = self.failure() {
            return Err(why);
        }
        let since = self
            .last_progress
            .lock()
            .map_err(|_| POISONED.to_owned())?
            .elapsed();
        let waiting = self.consumer.lag.load(Ordering::Relaxed) > 0;
        if waiting && since > stall && self.consumer.reachable().is_ok() {
            return Err(format!(
                "consumer lag but no progress for {:.0} s with the brokers reachable",
                since.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// Ready once a broker connection is up, unless the stage failed.
    fn readiness(&self) -> Result<String, String> {
        if let Some(why) = self.failure() {
            return Err(why);
        }
        self.consumer.reachable()?;
        let partitions = self.assigned_partitions.load(Ordering::Relaxed);
        Ok(format!("ready: {partitions} partitions assigned"))
    }

    fn render(&self) -> String {
        let mut out = String::new();
        counter(
            &mut out,
            "eglr_requests_total",
            "Requests consumed.",
            self.requests.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "eglr_intake_pauses_total",
            "Times the intake paused for backpressure.",
            self.pauses.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "eglr_results_total",
            "Results acknowledged by the broker.",
            self.results.load(Ordering::Relaxed),
        );
        self.dead_letters.render(
            "eglr_dead_letters_total",
            "kind",
            "Events sent to the dead-letter topic.",
            &mut out,
        );
        self.upstream_fallbacks.render(
            "eglr_upstream_fallbacks_total",
            "reason",
            "Valid requests the model could not rank, answered with the upstream order.",
            &mut out,
        );
        self.exploration_lists.render(
            "eglr_exploration_lists_total",
            "policy",
            "Lists served by the exploration logging policy ([exploration]) instead of the model's; divide by eglr_results_total for the share.",
            &mut out,
        );
        gauge(
            &mut out,
            "eglr_exploration_target_share",
            "exploration.share: the share of requests the logging policy should serve (0: off).",
            self.exploration_target.to_string(),
        );
        self.exploration_cost.render(
            "eglr_exploration_cost_clicks_total",
            "policy",
            "The serving evaluator's expected clicks given up by exploration (the model's list minus the exploration list), summed over exploration lists; an estimate (true clicks lost are not observable).",
            &mut out,
        );
        counter(
            &mut out,
            "eglr_upstream_order_lists_total",
            "Results whose list is the upstream order (the model's copies, selection and fallbacks); divide by eglr_results_total for the copy share.",
            self.upstream_order_lists.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "eglr_quality_assessed_lists_total",
            "Lists the serving evaluator assessed against the upstream order (every batching.quality_every-th batch).",
            self.assessed_lists.load(Ordering::Relaxed),
        );
        self.expected_clicks.render(
            "eglr_quality_expected_clicks_total",
            "list",
            "The serving evaluator's expected clicks of the assessed lists: served (what went out) and upstream (the order upstream sent); divide by eglr_quality_assessed_lists_total for clicks per list.",
            &mut out,
        );
        self.undelivered.render(
            "eglr_undelivered_total",
            "topic",
            "Records given up after their delivery attempts; their offsets stay unfinished until a restart.",
            &mut out,
        );
        self.unknown_field_events.render(
            "eglr_unknown_field_events_total",
            "event",
            "Events taken in with fields their schema does not list (ignored; limits.strict_fields refuses them).",
            &mut out,
        );
        self.skipped_offsets.render(
            "eglr_skipped_offsets_total",
            "topic",
            "Offsets the consumer jumped over within a partition (transaction markers, compaction, or records a broker left out of a fetch).",
            &mut out,
        );
        self.batch_size
            .render("eglr_batch_size", "Requests per model batch.", &mut out);
        self.queue_wait.render(
            "eglr_queue_wait_seconds",
            "Time from taking a request in until a worker opened the batch it went into (waiting in the queue).",
            &mut out,
        );
        self.batch_assembly.render(
            "eglr_batch_assembly_seconds",
            "Time from a request joining its batch (or the batch opening) until the batch closed and ran.",
            &mut out,
        );
        self.batch_duration.render(
            "eglr_batch_duration_seconds",
            "Model time per batch.",
            &mut out,
        );
        self.produce.render(
            "eglr_produce_seconds",
            "Time from a result being ready until the broker acknowledged it.",
            &mut out,
        );
        self.end_to_end.render(
            "eglr_end_to_end_latency_seconds",
            "Time from a request's timestamp_ms until its result was acknowledged.",
            &mut out,
        );
        gauge(
            &mut out,
            "eglr_in_flight_requests",
            "Requests taken in and not yet acknowledged (queued, at the model, or producing).",
            self.in_flight.load(Ordering::Relaxed).to_string(),
        );
        counter(
            &mut out,
            "eglr_model_swaps_total",
            "Times the serving model changed version without a restart.",
            self.model_swaps.load(Ordering::Relaxed),
        );
        self.reasoning_steps.render(
            "eglr_reasoning_steps",
            "Reasoning tokens per list.",
            &mut out,
        );
        self.entropy.render(
            "eglr_selection_entropy",
            "Selection entropy at each chosen position.",
            &mut out,
        );
        gauge(
            &mut out,
            "eglr_consumer_lag",
            "Messages behind the high watermark (librdkafka statistics).",
            self.consumer.lag.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "eglr_brokers_up",
            "Broker connections that are up (librdkafka statistics).",
            self.consumer.brokers_up.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "eglr_assigned_partitions",
            "Partitions assigned to this instance.",
            self.assigned_partitions.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "eglr_paused",
            "1 while intake is paused by backpressure.",
            self.paused.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "eglr_model_created_timestamp_seconds",
            "When the serving model was trained (its bundle's created_unix_ms), in Unix seconds.",
            (self.model_created_ms.load(Ordering::Relaxed) as f64 / 1000.0).to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP eglr_topic_partitions Partitions of each subscribed topic (librdkafka metadata); compare with eglr_assigned_partitions summed over the group.\n# TYPE eglr_topic_partitions gauge"
        );
        for (topic, n) in self.consumer.partitions() {
            let topic = escape_label(&topic);
            let _ = writeln!(out, "eglr_topic_partitions{{topic=\"{topic}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP eglr_partition_consumer_lag Messages behind the high watermark in each partition this instance fetches (librdkafka statistics).\n# TYPE eglr_partition_consumer_lag gauge"
        );
        for (topic, partition, lag) in self.consumer.partition_lags() {
            let topic = escape_label(&topic);
            let _ = writeln!(
                out,
                "eglr_partition_consumer_lag{{topic=\"{topic}\",partition=\"{partition}\"}} {lag}"
            );
        }
        let version = escape_label(&self.model_version());
        let _ = writeln!(out, "# HELP eglr_model_info The model version serving.\n# TYPE eglr_model_info gauge\neglr_model_info{{version=\"{version}\"}} 1");
        build_info(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::http::Exposition;

    #[test]
    fn renders_prometheus_text() {
        let m = ServeMetrics::default();
        m.requests.fetch_add(3, Ordering::Relaxed);
        m.dead_letter("malformed_json");
        m.batch_size.observe(3.0);
        m.set_model_version("v7", 1_700_000_000_000);
        let text = m.render();
        assert!(text.contains("eglr_requests_total 3"));
        assert!(text.contains("eglr_dead_letters_total{kind=\"malformed_json\"} 1"));
        assert!(text.contains("eglr_batch_size_bucket{le=\"4\"} 1"));
        assert!(text.contains("eglr_batch_size_bucket{le=\"1\"} 0"));
        assert!(text.contains("eglr_model_info{version=\"v7\"} 1"));
        assert!(text.contains("eglr_build_info{version=\""));
        let samples = text.lines().filter(|l| !l.starts_with('#'));
        assert!(
            samples.clone().all(|l| !l.contains("_ms")),
            "base units only:\n{text}"
        );
        assert!(samples
            .clone()
            .any(|l| l.starts_with("eglr_end_to_end_latency_seconds_bucket")));
    }

    #[test]
    fn label_values_are_escaped_and_swaps_counted() {
        let m = ServeMetrics::default();
        m.set_model_version("v1", 0);
        m.set_model_version("v1", 0);
        m.set_model_version("a\"b\\c\nd", 0);
        m.dead_letter("x\"y");
        let text = m.render();
        assert!(
            text.contains(r#"eglr_model_info{version="a\"b\\c\nd"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"eglr_dead_letters_total{kind="x\"y"} 1"#),
            "{text}"
        );
        assert!(text.contains("eglr_model_swaps_total 1"), "{text}");
    }

    #[test]
    fn a_stage_is_live_unless_it_stalls_with_the_brokers_reachable() {
        let m = ServeMetrics::default();
        // A standby: no partitions, no lag, no broker statistics yet.
        assert!(m.liveness(Duration::ZERO).is_ok(), "a standby is alive");
        assert!(m.readiness().is_err(), "not ready before a broker is up");
        m.consumer.lag.store(10, Ordering::Relaxed);
        assert!(
            m.liveness(Duration::ZERO).is_ok(),
            "lag during an outage is not a stall"
        );
        m.consumer.brokers_up.store(1, Ordering::Relaxed);
        assert!(m.readiness().is_ok());
        assert!(m.liveness(Duration::ZERO).is_err(), "lag without progress");
        assert!(
            m.liveness(Duration::from_secs(60)).is_ok(),
            "within the bound"
        );
        m.fail("delivery given up".into());
        assert!(m.liveness(Duration::from_secs(60)).is_err());
        assert!(m.readiness().is_err());
    }
}
