//! What the logger's endpoint shows: its counts at the last tick (a snapshot the
//! logger refreshes, read at scrape time), its consumer's statistics, and whether its
//! output still becomes durable.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::super::http::Exposition;
use super::super::kafka::ConsumerGauges;
use super::super::prometheus::{encode_const, ConsumerCollector, Metrics, POISONED};
use super::state::Logger;
use super::LogSummary;

/// What the endpoint shows of the logger, refreshed every tick.
#[derive(Debug, Default)]
pub(super) struct LogState {
    pub(super) summary: LogSummary,
    /// Requests waiting in the join.
    pub(super) pending: usize,
    /// Streams paused because the join is at its bound.
    pub(super) paused: usize,
}

/// The logger's state as its endpoint shows it, refreshed every tick.
#[derive(Debug)]
pub(super) struct LogMetrics {
    /// Messages behind the high watermarks (librdkafka statistics).
    pub(super) consumer: Arc<ConsumerGauges>,
    pub(super) state: Arc<Mutex<LogState>>,
    /// When the output of every message taken so far was last durable.
    pub(super) last_durable: Mutex<Instant>,
    pub(super) publish_every: Duration,
    pub(super) metrics: Metrics,
}

impl LogMetrics {
    pub(super) fn new(consumer: Arc<ConsumerGauges>, publish_every: Duration) -> Self {
        let state = Arc::new(Mutex::new(LogState::default()));
        let mut metrics = Metrics::default();
        metrics.register_collector(StateCollector(state.clone()));
        metrics.register_collector(ConsumerCollector {
            gauges: consumer.clone(),
            prefix: "eglr_log",
            per_partition: false,
        });
        Self {
            consumer,
            state,
            last_durable: Mutex::new(Instant::now()),
            publish_every,
            metrics: metrics.with_build_info(),
        }
    }

    pub(super) fn update(&self, logger: &Logger) {
        let mut summary = logger.summary.clone();
        summary.join = logger.joiner.stats().clone();
        if let Ok(mut s) = self.state.lock() {
            *s = LogState {
                summary,
                pending: logger.joiner.pending(),
                paused: logger.paused.len(),
            };
        }
        if logger.awaiting.is_empty() {
            if let Ok(mut t) = self.last_durable.lock() {
                *t = Instant::now();
            }
        }
    }
}

/// The logger's counts at its last tick, read at scrape time: the logger owns them on
/// its own task, the endpoint sees the snapshot.
#[derive(Debug)]
struct StateCollector(Arc<Mutex<LogState>>);

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Ok(state) = self.0.lock() else {
            return Ok(());
        };
        let s = &state.summary;
        let j = &s.join;
        let counters: [(&str, &str, u64); 13] = [
            ("eglr_log_messages", "Messages consumed (requests, results, feedback).", s.messages),
            ("eglr_log_unknown_field_events", "Events with fields their schema does not list (ignored; limits.strict_fields refuses them).", s.unknown_field_events),
            ("eglr_log_skipped_offsets", "Offsets the consumer jumped over within a partition (transaction markers, compaction, or records a broker left out of a fetch).", s.skipped_offsets),
            ("eglr_log_malformed", "Messages that did not decode or validate.", s.malformed),
            ("eglr_log_lists", "Joined lists written.", j.lists),
            ("eglr_log_duplicate_feedback", "Feedback events repeating a (request, item).", j.duplicate_feedback),
            ("eglr_log_orphan_feedback", "Feedback for requests that got no result in the window.", j.orphan_feedback),
            ("eglr_log_late_feedback", "Feedback arriving after its list was written.", j.late_feedback),
            ("eglr_log_results_without_request", "Results whose request was not seen or not matched.", j.results_without_request),
            ("eglr_log_files_published", "Parquet files published.", s.files_published),
            ("eglr_log_set_aside_events", "Events written to the side file (_unjoined/) because the join could not place them in a list; over eglr_log_messages_total, the share the logs lose to the join.", s.set_aside),
            ("eglr_log_requests_without_result", "Requests that got no result while younger requests did.", j.requests_without_result),
            ("eglr_log_duplicate_events", "Requests and results re-delivered after their list was written.", j.duplicate_events),
        ];
        for (name, help, v) in counters {
            encode_const(&mut encoder, name, help, ConstCounter::new(v))?;
        }
        encode_const(
            &mut encoder,
            "eglr_log_pending_lists",
            "Requests waiting in the join (for their window, request or result).",
            ConstGauge::new(state.pending as i64),
        )?;
        encode_const(
            &mut encoder,
            "eglr_log_intake_paused",
            "Streams whose intake is paused because the join is at logs.max_pending.",
            ConstGauge::new(state.paused as i64),
        )
    }
}

impl Exposition for LogMetrics {
    fn render(&self) -> String {
        self.metrics.render()
    }

    /// Not live when written output has not become durable for `stall` beyond the
    /// publish interval (offsets are then not committed either): a full or failing
    /// disk. With nothing taken in (a broker outage) there is nothing to make durable.
    fn liveness(&self, stall: Duration) -> Result<(), String> {
        let since = self
            .last_durable
            .lock()
            .map_err(|_| POISONED.to_owned())?
            .elapsed();
        if since > self.publish_every + stall {
            return Err(format!(
                "nothing published for {:.0} s",
                since.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// Ready once a broker connection is up.
    fn readiness(&self) -> Result<String, String> {
        self.consumer.reachable().map(|()| "ready".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that panicked holding the durability clock's lock is a bug: `/livez`
    /// asks for a restart.
    #[test]
    fn a_poisoned_durability_clock_fails_liveness() {
        let m = LogMetrics::new(Arc::default(), Duration::from_secs(1));
        super::super::super::prometheus::poison(&m.last_durable);
        let why = m.liveness(Duration::from_secs(3600)).expect_err("not live");
        assert_eq!(why, POISONED);
    }

    #[test]
    fn endpoint_shows_the_join_counts_and_a_stalled_publish() {
        let mut summary = LogSummary {
            messages: 12,
            set_aside: 5,
            ..LogSummary::default()
        };
        summary.join.lists = 3;
        summary.join.late_feedback = 1;
        let m = LogMetrics::new(Arc::default(), Duration::from_secs(1));
        if let Ok(mut s) = m.state.lock() {
            *s = LogState {
                summary,
                pending: 2,
                paused: 0,
            };
        }
        let text = m.render();
        for line in [
            "eglr_log_messages_total 12",
            "eglr_log_lists_total 3",
            "eglr_log_set_aside_events_total 5",
            "eglr_log_late_feedback_total 1",
            "eglr_log_pending_lists 2",
            "eglr_log_consumer_lag 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(m.liveness(Duration::from_secs(60)).is_ok());
        assert!(m.readiness().is_err(), "no broker connection up");
        std::thread::sleep(Duration::from_millis(20));
        let m = LogMetrics {
            publish_every: Duration::ZERO,
            ..m
        };
        assert!(m.liveness(Duration::from_millis(10)).is_err());
    }

    #[test]
    fn the_library_exposition_shows_what_the_hand_written_one_did() {
        let m = LogMetrics::new(Arc::default(), Duration::from_secs(1));
        super::super::super::prometheus::parsed::assert_same_series(
            include_str!("../../../tests/fixtures/metrics/log.prom"),
            &m.render(),
        );
    }
}
