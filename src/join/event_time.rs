//! Event-time clocks of the join: how far one stream of events has got, by the events'
//! own timestamps, so that a list closes when its feedback window has passed in the
//! events and not on the logger's wall clock (which runs far ahead of the events when
//! the logger catches up a backlog).
//!
//! A stream's clock is the minimum over its partitions of the newest event time seen
//! there: Kafka keeps order within a partition only, so a partition that is behind holds
//! the clock back. A partition that has delivered nothing for `idle_ms` of wall time is
//! caught up (nothing more is coming for now). What that means depends on the stream
//! ([`Idle`]): time passes for users whether or not they click, so a quiet feedback
//! partition counts as at least `wall - idle_ms` (else a list whose feedback stream goes
//! quiet would wait forever). But `serve`'s progress through the requests is only known
//! from its answers, and a quiet results partition is as likely a `serve` that is down,
//! restarting or behind on it as one with nothing to answer: that clock never counts a
//! partition as caught up. (An earlier rule let a quiet results partition stop holding
//! it; the chaos soak showed a restarted `serve` catching up one partition before the
//! others carrying the clock past requests it had not reached, which were then set
//! aside as unanswered.) A paused stream is never idle: its silence is the logger's
//! doing, not the producers'. Nor is a partition the consumer knows to be behind the
//! end of its log ([`StreamClock::behind`]): a partition with a backlog can be silent
//! for `idle_ms` when the logger is starved of CPU or its fetches go to the other
//! partitions, and counting it as caught up set its lists' results aside as
//! `result_without_request` (98 of 20,000 in one whole-suite run).

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy)]
struct Partition {
    /// Newest event time seen on the partition (ms).
    event_ms: i64,
    /// Wall time of the partition's last message, or of its assignment (ms).
    last_message_ms: i64,
}

/// What a caught-up (idle) partition says about the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Idle {
    /// It counts as at least `wall - idle_ms`: event time follows the wall clock.
    FollowsWall,
    /// Nothing: the partition holds the clock back until it delivers.
    Holds,
}

/// The event-time clock of one stream of events.
#[derive(Debug)]
pub(super) struct StreamClock {
    idle: Idle,
    partitions: BTreeMap<i32, Partition>,
    /// Wall time without a message that makes a partition caught up (ms).
    idle_ms: i64,
    /// Wall time since which the stream has had no partition or was resumed (ms).
    since_ms: i64,
    paused: bool,
    /// Partitions with records the logger has not read yet.
    behind: BTreeSet<i32>,
}

impl StreamClock {
    pub(super) fn new(idle: Idle, idle_ms: i64, wall_ms: i64) -> Self {
        Self {
            idle,
            partitions: BTreeMap::new(),
            idle_ms: idle_ms.max(0),
            since_ms: wall_ms,
            paused: false,
            behind: BTreeSet::new(),
        }
    }

    /// The partitions known to have records not read yet (from the consumer's
    /// statistics); none of them is caught up however long it is quiet.
    pub(super) fn behind(&mut self, partitions: &[i32]) {
        self.behind = partitions.iter().copied().collect();
    }

    fn partition(&mut self, partition: i32, wall_ms: i64) -> &mut Partition {
        self.partitions.entry(partition).or_insert(Partition {
            event_ms: i64::MIN,
            last_message_ms: wall_ms,
        })
    }

    /// A message arrived on `partition` (whether or not it moves this clock).
    pub(super) fn message(&mut self, partition: i32, wall_ms: i64) {
        self.partition(partition, wall_ms).last_message_ms = wall_ms;
    }

    /// An event of time `event_ms` was seen on `partition`.
    pub(super) fn advance(&mut self, partition: i32, event_ms: i64, wall_ms: i64) {
        let p = self.partition(partition, wall_ms);
        p.event_ms = p.event_ms.max(event_ms);
    }

    /// A message carrying an event of time `event_ms` arrived on `partition`.
    pub(super) fn event(&mut self, partition: i32, event_ms: i64, wall_ms: i64) {
        self.message(partition, wall_ms);
        self.advance(partition, event_ms, wall_ms);
    }

    /// The partitions this instance reads now: a newly assigned one holds the clock
    /// back until it delivers or goes idle; a revoked one no longer counts.
    pub(super) fn assign(&mut self, partitions: &[i32], wall_ms: i64) {
        self.partitions.retain(|p, _| partitions.contains(p));
        for &p in partitions {
            self.partition(p, wall_ms);
        }
    }

    pub(super) fn pause(&mut self, paused: bool, wall_ms: i64) {
        if self.paused && !paused {
            // Silence while paused was ours: idleness counts again from now.
            for p in self.partitions.values_mut() {
                p.last_message_ms = wall_ms;
            }
            self.since_ms = wall_ms;
        }
        self.paused = paused;
    }

    /// How far the stream has got (ms; `i64::MIN` before anything is known).
    pub(super) fn now(&self, wall_ms: i64) -> i64 {
        let idle_ms = self.idle_ms;
        let idle_floor = wall_ms.saturating_sub(idle_ms);
        let quiet = |last_message_ms: i64| {
            !self.paused && wall_ms.saturating_sub(last_message_ms) >= idle_ms
        };
        match self.idle {
            Idle::FollowsWall => {
                if self.partitions.is_empty() {
                    return if quiet(self.since_ms) {
                        idle_floor
                    } else {
                        i64::MIN
                    };
                }
                self.partitions
                    .iter()
                    .map(|(id, p)| {
                        if quiet(p.last_message_ms) && !self.behind.contains(id) {
                            p.event_ms.max(idle_floor)
                        } else {
                            p.event_ms
                        }
                    })
                    .min()
                    .unwrap_or(i64::MIN)
            }
            Idle::Holds => self
                .partitions
                .values()
                .map(|p| p.event_ms)
                .min()
                .unwrap_or(i64::MIN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_behind_its_end_is_never_caught_up() {
        let mut c = StreamClock::new(Idle::FollowsWall, 1000, 0);
        c.event(0, 100, 0);
        c.event(1, 100, 0);
        c.behind(&[1]);
        assert_eq!(
            c.now(5000),
            100,
            "partition 1 has a backlog: it holds the clock"
        );
        c.behind(&[]);
        assert_eq!(c.now(5000), 4000, "read to its end and quiet: caught up");
    }

    #[test]
    fn the_slowest_partition_holds_the_clock_until_it_goes_idle() {
        let mut c = StreamClock::new(Idle::FollowsWall, 1000, 0);
        c.assign(&[0, 1], 0);
        assert_eq!(c.now(10), i64::MIN, "nothing seen yet");
        c.advance(0, 500, 10);
        c.message(0, 10);
        assert_eq!(c.now(20), i64::MIN, "partition 1 has said nothing");
        c.advance(1, 300, 30);
        c.message(1, 30);
        assert_eq!(c.now(40), 300);
        // Partition 1 stays quiet for the idle time: it counts as wall - idle.
        c.advance(0, 5000, 1500);
        c.message(0, 1500);
        assert_eq!(c.now(1500), 500);
        // Paused, silence is not idleness; resumed, it counts from the resume.
        c.pause(true, 1500);
        assert_eq!(c.now(9000), 300);
        c.pause(false, 9000);
        assert_eq!(c.now(9500), 300);
        assert_eq!(c.now(10_000), 9000);
        // A revoked partition no longer holds it back.
        c.assign(&[0], 9500);
        assert_eq!(c.now(9500), 5000);
    }

    #[test]
    fn a_progress_clock_is_held_by_its_slowest_partition_however_long_it_is_quiet() {
        // serve down: both results partitions quiet; it restarts and catches up
        // partition 0 first. Partition 1 holds the clock until it delivers, however
        // long that takes, and never follows the wall clock.
        let mut c = StreamClock::new(Idle::Holds, 1000, 0);
        c.assign(&[0, 1], 0);
        c.event(0, 500, 0);
        assert_eq!(c.now(10), i64::MIN, "partition 1 has said nothing");
        c.event(1, 300, 900);
        assert_eq!(c.now(900), 300);
        c.event(0, 4000, 5000);
        c.event(0, 4900, 5500);
        assert_eq!(c.now(1_000_000), 300);
        c.event(1, 4800, 1_000_001);
        assert_eq!(c.now(1_000_001), 4800);
        // A revoked partition no longer holds it back.
        c.assign(&[0], 1_000_002);
        assert_eq!(c.now(1_000_002), 4900);
    }
}
