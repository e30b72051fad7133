//! The serve stage's offset ledger: every offset taken in, finished when its result or
//! dead letter is acknowledged, and stored for commit once it and all before it are
//! finished ([`OffsetTracker`]). Intake, sink and the rebalance callbacks share it;
//! it keeps `eglr_in_flight_requests` and `eglr_skipped_offsets_total` with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::producer::FutureProducer;

use super::super::offsets::{OffsetTracker, Partition};
use super::super::prometheus::ServeMetrics;

/// The offsets in flight, behind a lock the stage's tasks and the consumer's callbacks
/// share.
pub(super) struct OffsetLedger {
    tracker: Mutex<OffsetTracker>,
    metrics: Arc<ServeMetrics>,
}

impl OffsetLedger {
    pub fn new(metrics: Arc<ServeMetrics>) -> Self {
        Self {
            tracker: Mutex::new(OffsetTracker::new()),
            metrics,
        }
    }

    /// A message was taken in.
    pub fn start(&self, topic: &str, partition: i32, offset: i64) {
        let skipped = self.tracker.lock().map_or(0, |mut t| {
            let skipped = t.start(topic, partition, offset);
            self.metrics.in_flight.set(t.total_in_flight() as i64);
            skipped
        });
        if skipped > 0 {
            tracing::warn!(topic, partition, offset, skipped, "offsets jumped over");
            self.metrics.skipped_offsets.add_n(topic, skipped as u64);
        }
    }

    /// A message's result or dead letter was acknowledged.
    pub fn finish(&self, topic: &str, partition: i32, offset: i64) {
        if let Ok(mut t) = self.tracker.lock() {
            t.finish(topic, partition, offset);
            self.metrics.in_flight.set(t.total_in_flight() as i64);
        }
        self.metrics.progress();
    }

    /// Stores every offset that became committable.
    pub fn store<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C) {
        if let Ok(mut t) = self.tracker.lock() {
            t.store_commits(consumer);
        }
    }

    /// Flushes the producer, stores the offsets that finished and commits them (at
    /// shutdown).
    pub fn commit_what_finished<C: Consumer<X>, X: ConsumerContext>(
        &self,
        producer: &FutureProducer,
        consumer: &C,
    ) {
        let _ = rdkafka::producer::Producer::flush(producer, Duration::from_secs(5));
        self.store(consumer);
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit");
        }
    }

    /// Messages of `parts` in flight, less the `withdrawn` ones.
    pub fn in_flight(&self, parts: &[Partition], withdrawn: &HashMap<Partition, usize>) -> usize {
        self.tracker
            .lock()
            .map(|t| {
                parts
                    .iter()
                    .map(|key| {
                        let gone = withdrawn.get(key).copied().unwrap_or(0);
                        t.in_flight(&key.0, key.1).saturating_sub(gone)
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Whether in-flight requests (an upper bound on the queue's length) fill at most
    /// half of `capacity`.
    pub fn below_half(&self, capacity: usize) -> bool {
        self.tracker
            .lock()
            .map_or(true, |t| t.total_in_flight() <= capacity / 2)
    }

    /// Forgets revoked partitions: their next owner commits them.
    pub fn forget(&self, parts: &[Partition]) {
        if let Ok(mut t) = self.tracker.lock() {
            for (topic, p) in parts {
                t.forget(topic, *p);
            }
        }
    }

    /// Offsets that became committable since the last call (for tests).
    #[cfg(test)]
    pub fn take_commits(&self) -> Vec<(String, i32, i64)> {
        self.tracker
            .lock()
            .map(|mut t| t.take_commits())
            .unwrap_or_default()
    }
}
