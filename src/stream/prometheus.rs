//! Stage metrics, exposed by the Prometheus project's client library
//! (`prometheus-client`) in the Prometheus text format, and the health verdict.
//!
//! Counters are registered without their `_total`: the library adds it, as it adds the
//! `.` that ends each help text. Values a stage does not own (librdkafka's statistics)
//! are read at scrape time by a [`Collector`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

use super::kafka::ConsumerGauges;
use crate::exploration::ExplorationConfig;

pub use prometheus_client::metrics::histogram::Histogram;

/// A gauge with a fractional value (a share, a timestamp in seconds).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// One label, by name and value.
type OneLabel = [(&'static str, String); 1];

/// A counter with one label (`kind`, `reason`, ...). Its values may be fractional (a
/// sum of estimates); counts stay exact up to 2^53.
#[derive(Debug, Clone)]
pub struct LabelledCounter {
    label: &'static str,
    family: Family<OneLabel, Counter<f64, AtomicU64>>,
    total: Counter<f64, AtomicU64>,
}

impl LabelledCounter {
    /// A counter labelled `label` that shows the values `known` at 0 before their first
    /// event, so that rates and ratios over them exist from the first scrape (the
    /// Prometheus advice for label values known in advance).
    pub fn new(label: &'static str, known: &[&str]) -> Self {
        let c = Self {
            label,
            family: Family::default(),
            total: Counter::default(),
        };
        for value in known {
            c.add_value(value, 0.0);
        }
        c
    }

    pub fn add(&self, value: &str) {
        self.add_value(value, 1.0);
    }

    pub fn add_n(&self, value: &str, n: u64) {
        self.add_value(value, n as f64);
    }

    pub fn add_value(&self, value: &str, v: f64) {
        self.family
            .get_or_create(&[(self.label, value.to_owned())])
            .inc_by(v);
        self.total.inc_by(v);
    }

    /// The sum over every label value.
    pub fn total(&self) -> u64 {
        self.total.get() as u64
    }
}

/// A stage's metrics as the library registers them.
#[derive(Debug, Default)]
pub struct Metrics(Registry);

impl Metrics {
    /// Registers `metric` as `name` (a counter without its `_total`); `help` is said as
    /// `deploy/README.md` documents it.
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.0
            .register(name, help.strip_suffix('.').unwrap_or(help), metric);
    }

    pub fn register_labelled(&mut self, name: &str, help: &str, counter: &LabelledCounter) {
        self.register(name, help, counter.family.clone());
    }

    pub fn register_collector(&mut self, collector: impl Collector) {
        self.0.register_collector(Box::new(collector));
    }

    /// `eglr_build_info`: the running release, as a gauge of 1 (the Prometheus idiom).
    pub fn with_build_info(mut self) -> Self {
        self.register(
            "eglr_build",
            "The eglr release running.",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        self
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String fails only if a metric's own encoding does: a bug the
        // scrape then shows as a truncated page rather than a dead endpoint.
        if let Err(e) = prometheus_text::encode(&mut out, &self.0) {
            tracing::error!(error = %e, "a bug: a metric did not encode");
        }
        out
    }
}

/// Encodes one metric computed at scrape time.
pub fn encode_const(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> fmt::Result {
    let m = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(m)
}

/// A consumer's librdkafka statistics, read at scrape time: its lag and broker
/// connections under `prefix`, and with `per_partition` (the serve stage's) its
/// topics' partition counts and each fetched partition's lag.
#[derive(Debug)]
pub struct ConsumerCollector {
    pub gauges: Arc<ConsumerGauges>,
    pub prefix: &'static str,
    pub per_partition: bool,
}

impl Collector for ConsumerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let g = &self.gauges;
        encode_const(
            &mut encoder,
            &format!("{}_consumer_lag", self.prefix),
            "Messages behind the high watermark (librdkafka statistics).",
            ConstGauge::new(g.lag.load(Ordering::Relaxed)),
        )?;
        encode_const(
            &mut encoder,
            &format!("{}_brokers_up", self.prefix),
            "Broker connections that are up (librdkafka statistics).",
            ConstGauge::new(g.brokers_up.load(Ordering::Relaxed)),
        )?;
        if !self.per_partition {
            return Ok(());
        }
        let mut m = encoder.encode_descriptor(
            "eglr_topic_partitions",
            "Partitions of each subscribed topic (librdkafka metadata); compare with eglr_assigned_partitions summed over the group.",
            None,
            MetricType::Gauge,
        )?;
        for (topic, n) in g.partitions() {
            let labels = [("topic", topic)];
            ConstGauge::new(n as i64).encode(m.encode_family(&labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "eglr_partition_consumer_lag",
            "Messages behind the high watermark in each partition this instance fetches (librdkafka statistics).",
            None,
            MetricType::Gauge,
        )?;
        for (topic, partition, lag) in g.partition_lags() {
            let labels = [("topic", topic), ("partition", partition.to_string())];
            ConstGauge::new(lag).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
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

fn latency() -> Histogram {
    Histogram::new(LATENCY_BOUNDS_S)
}

/// Everything the serve stage counts.
#[derive(Debug)]
pub struct ServeMetrics {
    pub requests: Counter,
    pub results: Counter,
    dead_letters: LabelledCounter,
    /// Valid requests answered with the upstream order, by reason.
    pub upstream_fallbacks: LabelledCounter,
    /// Lists served by the exploration logging policy, by policy.
    pub exploration_lists: LabelledCounter,
    /// The serving evaluator's expected clicks given up by exploration (the model's
    /// list minus the exploration list), summed over exploration lists, by policy.
    pub exploration_cost: LabelledCounter,
    /// Results whose list is the upstream order (the model's copies, selection and
    /// fallbacks alike).
    pub upstream_order_lists: Counter,
    /// Lists the serving evaluator assessed (every `batching.quality_every`-th batch).
    pub assessed_lists: Counter,
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
    pub in_flight: Gauge,
    /// Times the serving model changed version without a restart.
    pub model_swaps: Counter,
    pub reasoning_steps: Histogram,
    pub entropy: Histogram,
    /// The consumer's lag and broker connections (librdkafka statistics).
    pub consumer: Arc<ConsumerGauges>,
    pub assigned_partitions: Gauge,
    pub paused: Gauge,
    /// Times the intake paused for backpressure.
    pub pauses: Counter,
    /// The version serving now (`eglr_model_info{version}`).
    model_version: Mutex<String>,
    model_info: Family<OneLabel, Gauge>,
    /// When the serving model was trained (its bundle's `created_unix_ms`), in seconds.
    model_created: FloatGauge,
    /// Why the stage can no longer make progress, once it cannot.
    failure: Mutex<Option<String>>,
    last_progress: Mutex<Instant>,
    metrics: Metrics,
}

impl Default for ServeMetrics {
    fn default() -> Self {
        Self::new(&ExplorationConfig::default())
    }
}

impl ServeMetrics {
    /// The metrics of a stage serving `exploration`: its target share, and its policy's
    /// counters at 0 until its first list.
    pub fn new(exploration: &ExplorationConfig) -> Self {
        let policies: &[&str] = if exploration.share > 0.0 {
            &[exploration.policy.name()]
        } else {
            &[]
        };
        let exploration_target = FloatGauge::default();
        exploration_target.set(exploration.share);
        let mut m = Self {
            requests: Counter::default(),
            results: Counter::default(),
            dead_letters: LabelledCounter::new("kind", &[]),
            upstream_fallbacks: LabelledCounter::new("reason", &FALLBACK_REASONS),
            exploration_lists: LabelledCounter::new("policy", policies),
            exploration_cost: LabelledCounter::new("policy", policies),
            upstream_order_lists: Counter::default(),
            assessed_lists: Counter::default(),
            expected_clicks: LabelledCounter::new("list", &["served", "upstream"]),
            undelivered: LabelledCounter::new("topic", &[]),
            unknown_field_events: LabelledCounter::new("event", &[]),
            skipped_offsets: LabelledCounter::new("topic", &[]),
            batch_size: Histogram::new([1.0, 4.0, 16.0, 64.0, 128.0, 256.0, 512.0]),
            queue_wait: latency(),
            batch_assembly: latency(),
            batch_duration: latency(),
            produce: latency(),
            end_to_end: latency(),
            in_flight: Gauge::default(),
            model_swaps: Counter::default(),
            reasoning_steps: Histogram::new([0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0]),
            entropy: Histogram::new([0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0]),
            consumer: Arc::default(),
            assigned_partitions: Gauge::default(),
            paused: Gauge::default(),
            pauses: Counter::default(),
            model_version: Mutex::new(String::new()),
            model_info: Family::default(),
            model_created: FloatGauge::default(),
            failure: Mutex::new(None),
            last_progress: Mutex::new(Instant::now()),
            metrics: Metrics::default(),
        };
        m.metrics = m.registry(exploration_target);
        m
    }

    /// The documented names of what the stage counts (`deploy/README.md#metrics`).
    fn registry(&self, exploration_target: FloatGauge) -> Metrics {
        let mut r = Metrics::default();
        let counters: [(&str, &str, &Counter); 6] = [
            (
                "eglr_requests",
                "Requests consumed.",
                &self.requests,
            ),
            (
                "eglr_intake_pauses",
                "Times the intake paused for backpressure.",
                &self.pauses,
            ),
            (
                "eglr_results",
                "Results acknowledged by the broker.",
                &self.results,
            ),
            (
                "eglr_upstream_order_lists",
                "Results whose list is the upstream order (the model's copies, selection and fallbacks); divide by eglr_results_total for the copy share.",
                &self.upstream_order_lists,
            ),
            (
                "eglr_quality_assessed_lists",
                "Lists the serving evaluator assessed against the upstream order (every batching.quality_every-th batch).",
                &self.assessed_lists,
            ),
            (
                "eglr_model_swaps",
                "Times the serving model changed version without a restart.",
                &self.model_swaps,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        let labelled: [(&str, &str, &LabelledCounter); 8] = [
            (
                "eglr_dead_letters",
                "Events sent to the dead-letter topic.",
                &self.dead_letters,
            ),
            (
                "eglr_upstream_fallbacks",
                "Valid requests the model could not rank, answered with the upstream order.",
                &self.upstream_fallbacks,
            ),
            (
                "eglr_exploration_lists",
                "Lists served by the exploration logging policy ([exploration]) instead of the model's; divide by eglr_results_total for the share.",
                &self.exploration_lists,
            ),
            (
                "eglr_exploration_cost_clicks",
                "The serving evaluator's expected clicks given up by exploration (the model's list minus the exploration list), summed over exploration lists; an estimate (true clicks lost are not observable).",
                &self.exploration_cost,
            ),
            (
                "eglr_quality_expected_clicks",
                "The serving evaluator's expected clicks of the assessed lists: served (what went out) and upstream (the order upstream sent); divide by eglr_quality_assessed_lists_total for clicks per list.",
                &self.expected_clicks,
            ),
            (
                "eglr_undelivered",
                "Records given up after their delivery attempts; their offsets stay unfinished until a restart.",
                &self.undelivered,
            ),
            (
                "eglr_unknown_field_events",
                "Events taken in with fields their schema does not list (ignored; limits.strict_fields refuses them).",
                &self.unknown_field_events,
            ),
            (
                "eglr_skipped_offsets",
                "Offsets the consumer jumped over within a partition (transaction markers, compaction, or records a broker left out of a fetch).",
                &self.skipped_offsets,
            ),
        ];
        for (name, help, c) in labelled {
            r.register_labelled(name, help, c);
        }
        self.register_distributions_and_gauges(&mut r, exploration_target);
        r.register_collector(ConsumerCollector {
            gauges: self.consumer.clone(),
            prefix: "eglr",
            per_partition: true,
        });
        r.with_build_info()
    }

    /// The histograms and the gauges the stage sets.
    fn register_distributions_and_gauges(&self, r: &mut Metrics, exploration_target: FloatGauge) {
        let histograms: [(&str, &str, &Histogram); 8] = [
            (
                "eglr_batch_size",
                "Requests per model batch.",
                &self.batch_size,
            ),
            (
                "eglr_queue_wait_seconds",
                "Time from taking a request in until a worker opened the batch it went into (waiting in the queue).",
                &self.queue_wait,
            ),
            (
                "eglr_batch_assembly_seconds",
                "Time from a request joining its batch (or the batch opening) until the batch closed and ran.",
                &self.batch_assembly,
            ),
            (
                "eglr_batch_duration_seconds",
                "Model time per batch.",
                &self.batch_duration,
            ),
            (
                "eglr_produce_seconds",
                "Time from a result being ready until the broker acknowledged it.",
                &self.produce,
            ),
            (
                "eglr_end_to_end_latency_seconds",
                "Time from a request's timestamp_ms until its result was acknowledged.",
                &self.end_to_end,
            ),
            (
                "eglr_reasoning_steps",
                "Reasoning tokens per list.",
                &self.reasoning_steps,
            ),
            (
                "eglr_selection_entropy",
                "Selection entropy at each chosen position.",
                &self.entropy,
            ),
        ];
        for (name, help, h) in histograms {
            r.register(name, help, h.clone());
        }
        let gauges: [(&str, &str, &Gauge); 3] = [
            (
                "eglr_in_flight_requests",
                "Requests taken in and not yet acknowledged (queued, at the model, or producing).",
                &self.in_flight,
            ),
            (
                "eglr_assigned_partitions",
                "Partitions assigned to this instance.",
                &self.assigned_partitions,
            ),
            (
                "eglr_paused",
                "1 while intake is paused by backpressure.",
                &self.paused,
            ),
        ];
        for (name, help, g) in gauges {
            r.register(name, help, g.clone());
        }
        r.register(
            "eglr_exploration_target_share",
            "exploration.share: the share of requests the logging policy should serve (0: off).",
            exploration_target,
        );
        r.register(
            "eglr_model_created_timestamp_seconds",
            "When the serving model was trained (its bundle's created_unix_ms), in Unix seconds.",
            self.model_created.clone(),
        );
        r.register(
            "eglr_model_info",
            "The model version serving.",
            self.model_info.clone(),
        );
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
        self.model_created.set(created_unix_ms as f64 / 1000.0);
        if let Ok(mut m) = self.model_version.lock() {
            if *m != v {
                if !m.is_empty() {
                    self.model_swaps.inc();
                }
                *m = v.to_owned();
                self.model_info.clear();
                self.model_info
                    .get_or_create(&[("version", m.clone())])
                    .set(1);
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
        let partitions = self.assigned_partitions.get();
        Ok(format!("ready: {partitions} partitions assigned"))
    }

    fn render(&self) -> String {
        self.metrics.render()
    }
}

/// The exposition as a Prometheus text parser reads it, to compare pages by what a
/// scraper sees: each series' name, type and label names (not the values).
#[cfg(test)]
pub(super) mod parsed {
    use std::collections::BTreeSet;

    use prometheus_parse::{Scrape, Value};

    /// (name, type, label names) of every series on the page.
    pub type Series = BTreeSet<(String, &'static str, Vec<String>)>;

    pub fn series(page: &str) -> Series {
        let scrape = Scrape::parse(page.lines().map(|l| Ok(l.to_owned()))).expect("a page");
        scrape
            .samples
            .iter()
            .map(|s| {
                let kind = match s.value {
                    Value::Counter(_) => "counter",
                    Value::Gauge(_) => "gauge",
                    Value::Histogram(_) => "histogram",
                    Value::Summary(_) => "summary",
                    Value::Untyped(_) => "untyped",
                };
                let mut labels: Vec<String> = s.labels.keys().cloned().collect();
                labels.sort();
                (s.metric.clone(), kind, labels)
            })
            .collect()
    }

    /// `after` shows every series `before` showed, with the same type and labels, and
    /// no other.
    pub fn assert_same_series(before: &str, after: &str) {
        let (before, after) = (series(before), series(after));
        let lost: Vec<_> = before.difference(&after).collect();
        let new: Vec<_> = after.difference(&before).collect();
        assert!(
            lost.is_empty() && new.is_empty(),
            "lost {lost:?}, new {new:?}"
        );
    }
}

/// Poisons `lock` the way a bug does: a thread panics while holding it.
#[cfg(test)]
pub(super) fn poison<T: Send>(lock: &Mutex<T>) {
    let panicked = std::thread::scope(|s| {
        s.spawn(|| {
            let _held = lock.lock();
            panic!("a bug while holding the lock");
        })
        .join()
    });
    assert!(panicked.is_err() && lock.is_poisoned());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::http::Exposition;

    /// The serve stage with an event on every labelled series and a consumer's
    /// statistics, as `tests/fixtures/metrics/serve.prom` was rendered by the
    /// exposition written by hand before this library.
    fn busy_serve_stage() -> ServeMetrics {
        let exploration = ExplorationConfig {
            share: 0.1,
            ..ExplorationConfig::default()
        };
        let m = ServeMetrics::new(&exploration);
        m.requests.inc_by(3);
        m.dead_letter("malformed_json");
        m.exploration_lists.add(exploration.policy.name());
        m.undelivered.add("eglr-results");
        m.unknown_field_events.add("request");
        m.skipped_offsets.add("eglr-requests");
        m.batch_size.observe(3.0);
        m.set_model_version("v7", 1_700_000_000_000);
        let mut stats = rdkafka::statistics::Statistics::default();
        let mut topic = rdkafka::statistics::Topic::default();
        let partition = rdkafka::statistics::Partition {
            partition: 0,
            consumer_lag: 3,
            ..Default::default()
        };
        topic.partitions.insert(0, partition);
        stats.topics.insert("eglr-requests".into(), topic);
        m.consumer.record(&stats);
        m
    }

    #[test]
    fn the_library_exposition_shows_what_the_hand_written_one_did() {
        parsed::assert_same_series(
            include_str!("../../tests/fixtures/metrics/serve.prom"),
            &busy_serve_stage().render(),
        );
    }

    /// Every metric `deploy/README.md` documents for `serve` is on the page with the
    /// documented type and labels.
    #[test]
    fn every_documented_serve_metric_is_exposed_as_documented() {
        let page = parsed::series(&busy_serve_stage().render());
        let readme = include_str!("../../deploy/README.md");
        let mut documented = 0;
        for row in readme.lines().filter(|l| l.starts_with("| `eglr_")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let names: Vec<&str> = cells[0].trim_start_matches("| ").split(", ").collect();
            let types: Vec<&str> = cells[1].split(", ").collect();
            for (k, name) in names.iter().enumerate() {
                let name = name.trim_matches('`');
                let (name, labels) = match name.split_once('{') {
                    Some((n, l)) => (n, l.trim_end_matches('}').split(',').collect()),
                    None => (name, Vec::new()),
                };
                let mut labels: Vec<String> = labels.into_iter().map(str::to_owned).collect();
                labels.sort();
                let kind = types[k.min(types.len() - 1)];
                assert!(
                    page.iter()
                        .any(|(n, t, l)| n == name && *t == kind && *l == labels),
                    "{name} {kind} {labels:?} is documented but not exposed so"
                );
                documented += 1;
            }
        }
        assert!(documented >= 30, "the table was read: {documented} metrics");
    }

    #[test]
    fn renders_prometheus_text() {
        let m = ServeMetrics::default();
        m.requests.inc_by(3);
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

    /// A thread that panicked holding the progress clock's lock is a bug: `/livez`
    /// asks for a restart instead of reading the clock as fresh.
    #[test]
    fn a_poisoned_progress_clock_fails_liveness() {
        let m = ServeMetrics::default();
        poison(&m.last_progress);
        let why = m.liveness(Duration::from_secs(3600)).expect_err("not live");
        assert_eq!(why, POISONED);
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
