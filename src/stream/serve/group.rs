//! The consumer group's side of serving: the offset state shared by intake, sink and the
//! rebalance callbacks, and the callbacks themselves (lag from statistics; on revoke,
//! wait for the partitions' in-flight work, bounded, and commit it before they move).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

use super::super::kafka::consumer_lag;
use super::super::offsets::OffsetTracker;
use super::super::prometheus::ServeMetrics;

/// Offsets in flight and the stage's metrics, shared by every part of the stage.
pub(super) struct Shared {
    pub tracker: Mutex<OffsetTracker>,
    pub metrics: Arc<ServeMetrics>,
}

impl Shared {
    pub fn new(metrics: Arc<ServeMetrics>) -> Self {
        Self {
            tracker: Mutex::new(OffsetTracker::new()),
            metrics,
        }
    }

    /// A message was taken in.
    pub fn start(&self, topic: &str, partition: i32, offset: i64) {
        if let Ok(mut t) = self.tracker.lock() {
            t.start(topic, partition, offset);
        }
    }

    /// A message's result or dead letter was acknowledged.
    pub fn finish(&self, topic: &str, partition: i32, offset: i64) {
        if let Ok(mut t) = self.tracker.lock() {
            t.finish(topic, partition, offset);
        }
        self.metrics.progress();
    }

    /// Stores every offset that became committable.
    pub fn store<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C) {
        if let Ok(mut t) = self.tracker.lock() {
            t.store_commits(consumer);
        }
    }

    /// A record could not be delivered: its offset can never finish, so its partition
    /// would stop committing. The stage stops instead (unhealthy at once; the intake
    /// returns an error, the process exits non-zero) and a restart re-reads it.
    pub fn give_up(&self, topic: &str) {
        self.metrics.undelivered.add(topic);
        self.metrics
            .fail(format!("a record for {topic} could not be delivered"));
        tracing::error!(%topic, "giving up on a delivery: the stage stops so that its partition is re-read after a restart");
    }

    /// Whether in-flight requests (an upper bound on the queue's length) fill at most
    /// half of `capacity`.
    pub fn below_half(&self, capacity: usize) -> bool {
        self.tracker
            .lock()
            .map_or(true, |t| t.total_in_flight() <= capacity / 2)
    }
}

/// The consumer's callbacks.
pub(super) struct ServeContext {
    pub shared: Arc<Shared>,
    /// Bound on the wait for a revoked partition's in-flight requests.
    pub revoke_wait: Duration,
}

impl ClientContext for ServeContext {
    fn stats(&self, stats: Statistics) {
        self.shared
            .metrics
            .consumer_lag
            .store(consumer_lag(&stats), Ordering::Relaxed);
    }
}

impl ConsumerContext for ServeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let deadline = Instant::now() + self.revoke_wait;
        loop {
            let left: usize = self
                .shared
                .tracker
                .lock()
                .map(|t| parts.iter().map(|(topic, p)| t.in_flight(topic, *p)).sum())
                .unwrap_or(0);
            if left == 0 || Instant::now() >= deadline {
                if left > 0 {
                    tracing::warn!(
                        left,
                        "revoke: abandoning in-flight requests (they will be re-delivered)"
                    );
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.shared.store(consumer);
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "commit on revoke");
        }
        if let Ok(mut t) = self.shared.tracker.lock() {
            for (topic, p) in &parts {
                t.forget(topic, *p);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Intake pauses the whole assignment when its queue is full; partitions assigned
        // meanwhile would otherwise start fetching past the backpressure.
        if let Rebalance::Assign(tpl) = rebalance {
            if self.shared.metrics.paused.load(Ordering::Relaxed) == 1 {
                if let Err(e) = consumer.pause(tpl) {
                    tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                }
            }
        }
        let n = consumer.assignment().map_or(0, |a| a.count());
        self.shared
            .metrics
            .assigned_partitions
            .store(n, Ordering::Relaxed);
        tracing::info!(partitions = n, "assignment changed");
    }
}
