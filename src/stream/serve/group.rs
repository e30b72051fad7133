//! The consumer group's side of serving: what intake, sink and the rebalance callbacks
//! share (the offset ledger, the overflow, the metrics), and the callbacks themselves (lag from statistics; on revoke,
//! wait for the partitions' in-flight work, bounded, and commit it before they move).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

use super::super::inference::Job;
use super::super::prometheus::ServeMetrics;
use super::ledger::OffsetLedger;

/// Offsets in flight and the stage's metrics, shared by every part of the stage.
pub(super) struct Shared {
    pub ledger: OffsetLedger,
    /// Valid jobs the full inference queue could not take yet (the intake's backlog
    /// while it is paused). Shared so that a revoke can take its partitions' jobs out.
    pub overflow: Mutex<VecDeque<Job>>,
    pub metrics: Arc<ServeMetrics>,
}

impl Shared {
    pub fn new(metrics: Arc<ServeMetrics>) -> Self {
        Self {
            ledger: OffsetLedger::new(Arc::clone(&metrics)),
            overflow: Mutex::new(VecDeque::new()),
            metrics,
        }
    }

    /// Takes the overflow's jobs of `parts` out: how many per partition.
    fn withdraw(&self, parts: &[(String, i32)]) -> HashMap<(String, i32), usize> {
        let mut withdrawn = HashMap::new();
        if let Ok(mut overflow) = self.overflow.lock() {
            overflow.retain(|job| {
                let key = (job.topic.clone(), job.partition);
                let revoked = parts.contains(&key);
                if revoked {
                    *withdrawn.entry(key).or_default() += 1;
                }
                !revoked
            });
        }
        withdrawn
    }

    /// Waits, up to `deadline`, until the only in-flight messages of `parts` are the
    /// `withdrawn` ones; returns how many others are left.
    fn wait_for(
        &self,
        parts: &[(String, i32)],
        withdrawn: &HashMap<(String, i32), usize>,
        deadline: Instant,
    ) -> usize {
        loop {
            let left = self.ledger.in_flight(parts, withdrawn);
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(5));
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
}

/// The consumer's callbacks.
pub(super) struct ServeContext {
    pub shared: Arc<Shared>,
    /// Bound on the wait for a revoked partition's in-flight requests.
    pub revoke_wait: Duration,
}

impl ClientContext for ServeContext {
    fn stats(&self, stats: Statistics) {
        self.shared.metrics.consumer.record(&stats);
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
        // Jobs of these partitions still in the overflow would only reach the model
        // through the intake, which this callback holds up (it runs inside the intake's
        // poll): they are withdrawn, not served here. Their offsets stay unfinished, so
        // the commit below stops before the first of them and the partition's next
        // owner re-reads them. What is already queued or at the sink is waited for.
        let withdrawn = self.shared.withdraw(&parts);
        let deadline = Instant::now() + self.revoke_wait;
        // The wait blocks this thread: on tokio's multi-threaded runtime the worker's
        // other tasks (the sink among them) are handed to another thread first.
        let wait = || self.shared.wait_for(&parts, &withdrawn, deadline);
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let left = if multi_thread {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        };
        let withdrawn: usize = withdrawn.values().sum();
        if left > 0 {
            tracing::warn!(
                left,
                "revoke: abandoning in-flight requests (they will be re-delivered)"
            );
        }
        if withdrawn > 0 {
            tracing::info!(
                withdrawn,
                "revoke: queued requests of the revoked partitions left to their next owner"
            );
        }
        self.shared.ledger.store(consumer);
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "commit on revoke");
        }
        self.shared.ledger.forget(&parts);
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Intake pauses the whole assignment when its queue is full; partitions assigned
        // meanwhile would otherwise start fetching past the backpressure.
        if let Rebalance::Assign(tpl) = rebalance {
            if self.shared.metrics.paused.get() == 1 {
                if let Err(e) = consumer.pause(tpl) {
                    tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                }
            }
        }
        let n = consumer.assignment().map_or(0, |a| a.count());
        self.shared.metrics.assigned_partitions.set(n as i64);
        tracing::info!(partitions = n, "assignment changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{RerankRequest, UserFeatures};

    fn job(partition: i32, offset: i64) -> Job {
        Job {
            request: RerankRequest {
                request_id: format!("r{partition}-{offset}"),
                user: UserFeatures {
                    id: crate::schema::Token("u".into()),
                    sparse: Default::default(),
                    dense: Default::default(),
                },
                candidates: Vec::new(),
                list_len: 0,
                timestamp_ms: 0,
                schema_version: None,
            },
            topic: "requests".into(),
            partition,
            offset,
            trace: Default::default(),
            received: Instant::now(),
        }
    }

    /// A revoke does not wait for overflow jobs only the intake it holds up could
    /// send on: they are withdrawn, stay unfinished (the commit stops before them), and
    /// the wait covers what is already queued.
    #[test]
    fn a_revoke_withdraws_its_partitions_overflow_and_waits_only_for_the_queued() {
        let shared = Shared::new(Arc::new(ServeMetrics::default()));
        for (p, o) in [(0, 10), (0, 11), (0, 12), (1, 5)] {
            shared.ledger.start("requests", p, o);
        }
        // Offset 10 went to the inference queue; 11, 12 and partition 1's 5 overflowed.
        if let Ok(mut overflow) = shared.overflow.lock() {
            overflow.extend([job(0, 11), job(0, 12), job(1, 5)]);
        }
        let revoked = [("requests".to_owned(), 0)];
        let withdrawn = shared.withdraw(&revoked);
        assert_eq!(withdrawn.get(&revoked[0]), Some(&2));
        let left_jobs: Vec<i64> = shared
            .overflow
            .lock()
            .map(|o| o.iter().map(|j| j.offset).collect())
            .unwrap_or_default();
        assert_eq!(left_jobs, [5], "the other partition's job stays");
        assert_eq!(shared.wait_for(&revoked, &withdrawn, Instant::now()), 1);
        shared.ledger.finish("requests", 0, 10);
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(shared.wait_for(&revoked, &withdrawn, soon), 0);
        let commits = shared.ledger.take_commits();
        assert!(
            commits.contains(&("requests".to_owned(), 0, 11)),
            "commit stops before the withdrawn: {commits:?}"
        );
    }

    /// Partitions assigned while the intake is paused are paused too: the member
    /// fetches nothing from them until the intake resumes.
    #[test]
    fn partitions_assigned_while_paused_are_paused() {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        use rdkafka::Message;

        let broker = crate::stream::EmbeddedBroker::start().expect("broker");
        broker.create_topics(&[("requests", 2)]).expect("topics");
        let kafka = crate::config::KafkaConfig::default();
        let producer: BaseProducer =
            crate::stream::kafka::producer_config(&kafka, &broker.bootstrap())
                .create()
                .expect("producer");
        for i in 0..10 {
            let key = format!("k{i}");
            producer
                .send(BaseRecord::to("requests").key(&key).payload("x"))
                .expect("queued");
        }
        producer.flush(Duration::from_secs(10)).expect("flushed");
        let shared = Arc::new(Shared::new(Arc::new(ServeMetrics::default())));
        shared.metrics.paused.set(1);
        let context = ServeContext {
            shared: Arc::clone(&shared),
            revoke_wait: Duration::from_secs(1),
        };
        let consumer: BaseConsumer<ServeContext> =
            crate::stream::kafka::consumer_config(&kafka, &broker.bootstrap(), "paused")
                .create_with_context(context)
                .expect("consumer");
        consumer.subscribe(&["requests"]).expect("subscribe");
        let until = Instant::now() + Duration::from_secs(4);
        let mut received = 0;
        while Instant::now() < until {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                received += 1;
            }
        }
        let assigned = consumer.assignment().map_or(0, |a| a.count());
        assert_eq!(assigned, 2, "the member got its partitions");
        assert_eq!(received, 0, "nothing fetched while paused");
        let assignment = consumer.assignment().expect("assignment");
        consumer.resume(&assignment).expect("resume");
        let until = Instant::now() + Duration::from_secs(20);
        while received < 10 && Instant::now() < until {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                assert_eq!(m.payload(), Some(&b"x"[..]));
                received += 1;
            }
        }
        assert_eq!(received, 10, "resumed, it reads them all");
    }
}
