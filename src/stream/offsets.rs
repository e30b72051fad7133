//! At-least-once offset bookkeeping.
//!
//! Messages of a partition finish out of order (batches mix partitions, deliveries are
//! acknowledged asynchronously). An offset may be committed only when it and every
//! offset before it have finished, so the tracker stores, per partition, the offsets
//! taken in and the ones finished, and reports the highest contiguous finished offset.
//! Kafka's committed offset is the *next* offset to read, hence `+ 1`.

use std::collections::{BTreeSet, HashMap};

use rdkafka::consumer::{Consumer, ConsumerContext};

/// Topic and partition.
pub type Partition = (String, i32);

#[derive(Debug, Default)]
struct PartitionState {
    /// Offsets taken in and not yet finished.
    in_flight: BTreeSet<i64>,
    /// Lowest and highest offsets taken in so far.
    lowest_seen: Option<i64>,
    highest_seen: Option<i64>,
    /// The next offset to commit (everything below it is finished).
    committable: Option<i64>,
    /// `committable` already handed out by [`OffsetTracker::take_commits`].
    reported: Option<i64>,
}

/// Per-partition in-flight offsets.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<Partition, PartitionState>,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A message was taken in. Returns how many offsets the consumer jumped over
    /// since the highest one taken in of this partition (0 when none): a broker that
    /// leaves records out of a fetch shows here. Transaction markers and compaction
    /// leave such gaps legitimately, so the callers count and log them, nothing more.
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) -> i64 {
        let state = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_default();
        let skipped = state.highest_seen.map_or(0, |h| (offset - h - 1).max(0));
        state.in_flight.insert(offset);
        state.highest_seen = Some(state.highest_seen.map_or(offset, |h| h.max(offset)));
        state.lowest_seen = Some(state.lowest_seen.map_or(offset, |l| l.min(offset)));
        skipped
    }

    /// A message finished (its result or dead letter was acknowledged).
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) {
        let Some(state) = self.partitions.get_mut(&(topic.to_owned(), partition)) else {
            return; // revoked meanwhile: nothing to commit for it here
        };
        state.in_flight.remove(&offset);
        // Everything below the oldest unfinished offset is finished.
        let next = match state.in_flight.first() {
            Some(&oldest) => oldest,
            None => state.highest_seen.map_or(0, |h| h + 1),
        };
        // Committing the first offset taken in would say nothing new.
        let progressed = state.lowest_seen.is_some_and(|l| next > l);
        if progressed && state.committable.is_none_or(|c| next > c) {
            state.committable = Some(next);
        }
    }

    /// Offsets to commit that changed since the last call: `(topic, partition, next)`.
    pub fn take_commits(&mut self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for ((topic, partition), state) in &mut self.partitions {
            if let Some(c) = state.committable {
                if state.reported != Some(c) {
                    state.reported = Some(c);
                    out.push((topic.clone(), *partition, c));
                }
            }
        }
        out.sort();
        out
    }

    /// Stores in `consumer` every offset that became committable (the consumer's
    /// auto-commit sends them). An offset of a partition revoked meanwhile is not
    /// stored: its new owner re-reads from the last commit.
    pub fn store_commits<C: Consumer<X>, X: ConsumerContext>(&mut self, consumer: &C) {
        for (topic, partition, next) in self.take_commits() {
            if let Err(e) = consumer.store_offset(&topic, partition, next - 1) {
                tracing::debug!(%topic, partition, error = %e, "offset not stored (partition revoked?)");
            }
        }
    }

    /// Messages of `partition` still in flight.
    pub fn in_flight(&self, topic: &str, partition: i32) -> usize {
        self.partitions
            .get(&(topic.to_owned(), partition))
            .map_or(0, |s| s.in_flight.len())
    }

    /// All messages in flight.
    pub fn total_in_flight(&self) -> usize {
        self.partitions.values().map(|s| s.in_flight.len()).sum()
    }

    /// Forgets a partition (after a revoke has been handled).
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_owned(), partition));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_contiguous_finished_offsets() {
        let mut t = OffsetTracker::new();
        for o in 10..15 {
            t.start("r", 0, o);
        }
        t.start("r", 1, 3);
        t.finish("r", 0, 12);
        t.finish("r", 0, 11);
        assert!(
            t.take_commits().is_empty(),
            "10 is unfinished: nothing may be committed"
        );
        t.finish("r", 0, 10);
        assert_eq!(t.take_commits(), vec![("r".into(), 0, 13)]);
        assert!(t.take_commits().is_empty(), "reported once");
        t.finish("r", 1, 3);
        t.finish("r", 0, 14);
        // Partition 0 still waits for 13; partition 1 moves on.
        assert_eq!(t.take_commits(), vec![("r".into(), 1, 4)]);
        assert_eq!(t.in_flight("r", 0), 1);
        t.finish("r", 0, 13);
        assert_eq!(t.take_commits(), vec![("r".into(), 0, 15)]);
        assert_eq!(t.total_in_flight(), 0);
    }

    #[test]
    fn reports_offsets_jumped_over_but_not_rereads() {
        let mut t = OffsetTracker::new();
        assert_eq!(t.start("r", 0, 7), 0, "nothing to compare the first with");
        assert_eq!(t.start("r", 0, 8), 0);
        assert_eq!(t.start("r", 0, 12), 3, "9, 10 and 11 never came");
        assert_eq!(t.start("r", 0, 9), 0, "a re-read after a seek back");
        assert_eq!(t.start("r", 1, 100), 0, "partitions are apart");
    }

    #[test]
    fn finishing_a_forgotten_partition_is_harmless() {
        let mut t = OffsetTracker::new();
        t.start("r", 0, 1);
        t.forget("r", 0);
        t.finish("r", 0, 1);
        assert!(t.take_commits().is_empty());
    }
}
