//! Stage metrics in the Prometheus text format, and the health verdict.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// A counter with one label (`kind`, `reason`, ...).
#[derive(Debug, Default)]
pub struct LabelledCounter(Mutex<BTreeMap<String, u64>>);

impl LabelledCounter {
    pub fn add(&self, label: &str) {
        self.add_n(label, 1);
    }

    pub fn add_n(&self, label: &str, n: u64) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(label.to_owned()).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.lock().map_or(0, |m| m.values().sum())
    }

    fn render(&self, name: &str, label: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        if let Ok(m) = self.0.lock() {
            for (value, n) in m.iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
            }
        }
    }
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
    /// Records the stage gave up producing, by topic: their offsets stay unfinished.
    pub undelivered: LabelledCounter,
    /// Offsets the consumer jumped over, by topic (see [`super::offsets::OffsetTracker::start`]).
    pub skipped_offsets: LabelledCounter,
    pub batch_size: Histogram,
    pub batch_latency_ms: Histogram,
    pub reasoning_steps: Histogram,
    pub entropy: Histogram,
    pub consumer_lag: AtomicI64,
    pub assigned_partitions: AtomicUsize,
    pub paused: AtomicUsize,
    /// Times the intake paused for backpressure.
    pub pauses: AtomicU64,
    model_version: Mutex<String>,
    /// Why the stage can no longer make progress, once it cannot.
    failure: Mutex<Option<String>>,
    last_progress: Mutex<Instant>,
    started: Instant,
}

impl Default for ServeMetrics {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            results: AtomicU64::new(0),
            dead_letters: LabelledCounter::default(),
            upstream_fallbacks: LabelledCounter::default(),
            undelivered: LabelledCounter::default(),
            skipped_offsets: LabelledCounter::default(),
            batch_size: Histogram::new(&[1.0, 4.0, 16.0, 64.0, 128.0, 256.0, 512.0]),
            batch_latency_ms: Histogram::new(&[
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 1000.0,
            ]),
            reasoning_steps: Histogram::new(&[0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0]),
            entropy: Histogram::new(&[0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0]),
            consumer_lag: AtomicI64::new(0),
            assigned_partitions: AtomicUsize::new(0),
            paused: AtomicUsize::new(0),
            pauses: AtomicU64::new(0),
            model_version: Mutex::new(String::new()),
            failure: Mutex::new(None),
            last_progress: Mutex::new(Instant::now()),
            started: Instant::now(),
        }
    }
}

impl ServeMetrics {
    pub fn dead_letter(&self, kind: &str) {
        self.dead_letters.add(kind);
    }

    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.total()
    }

    pub fn set_model_version(&self, v: &str) {
        if let Ok(mut m) = self.model_version.lock() {
            *m = v.to_owned();
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
    /// Healthy unless the stage lost its partitions or stalled with work waiting:
    /// a consumer that silently left its group has no assignment and makes no progress.
    fn health(&self, stall: Duration) -> Result<(), String> {
        if let Some(why) = self.failure() {
            return Err(why);
        }
        let since = self
            .last_progress
            .lock()
            .map(|p| p.elapsed())
            .unwrap_or_default();
        if self.assigned_partitions.load(Ordering::Relaxed) == 0 && self.started.elapsed() > stall {
            return Err("no partitions assigned".into());
        }
        if self.consumer_lag.load(Ordering::Relaxed) > 0 && since > stall {
            return Err(format!(
                "consumer lag but no progress for {:.0} s",
                since.as_secs_f64()
            ));
        }
        Ok(())
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
        self.undelivered.render(
            "eglr_undelivered_total",
            "topic",
            "Records given up after their delivery attempts; their offsets stay unfinished until a restart.",
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
        self.batch_latency_ms
            .render("eglr_batch_latency_ms", "Model time per batch.", &mut out);
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
            self.consumer_lag.load(Ordering::Relaxed).to_string(),
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
        let _ = writeln!(out, "# HELP eglr_model_info The model version serving.\n# TYPE eglr_model_info gauge\neglr_model_info{{version=\"{}\"}} 1", self.model_version());
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
        m.set_model_version("v7");
        let text = m.render();
        assert!(text.contains("eglr_requests_total 3"));
        assert!(text.contains("eglr_dead_letters_total{kind=\"malformed_json\"} 1"));
        assert!(text.contains("eglr_batch_size_bucket{le=\"4\"} 1"));
        assert!(text.contains("eglr_batch_size_bucket{le=\"1\"} 0"));
        assert!(text.contains("eglr_model_info{version=\"v7\"} 1"));
    }

    #[test]
    fn health_needs_partitions_and_progress() {
        let m = ServeMetrics::default();
        assert!(
            m.health(Duration::from_secs(60)).is_ok(),
            "grace period after start"
        );
        assert!(m.health(Duration::ZERO).is_err(), "no assignment");
        m.assigned_partitions.store(2, Ordering::Relaxed);
        assert!(m.health(Duration::ZERO).is_ok(), "no lag: idle is healthy");
        m.consumer_lag.store(10, Ordering::Relaxed);
        assert!(m.health(Duration::ZERO).is_err(), "lag without progress");
    }
}
