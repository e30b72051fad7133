//! Writing simulated traffic as a data set: Parquet logs plus summary statistics.

use serde::Serialize;

use super::click_model::least_squares;
use super::traffic::{Impression, Traffic};
use super::world::World;
use crate::list_log::{LogError, LogWriter, LoggedList};

/// What a simulated log contains.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LogStats {
    pub lists: u64,
    pub exploration_lists: u64,
    pub clicks: u64,
    /// Click rate at each position of the served lists.
    pub ctr_by_position: Vec<f64>,
    clicks_by_position: Vec<u64>,
}

impl LogStats {
    fn add(&mut self, row: &LoggedList) {
        self.lists += 1;
        self.exploration_lists += u64::from(row.exploration);
        if self.clicks_by_position.len() < row.clicks.len() {
            self.clicks_by_position.resize(row.clicks.len(), 0);
        }
        for (t, &c) in row.clicks.iter().enumerate() {
            self.clicks += u64::from(c);
            self.clicks_by_position[t] += u64::from(c);
        }
    }

    fn finish(&mut self) {
        let n = self.lists.max(1) as f64;
        self.ctr_by_position = self
            .clicks_by_position
            .iter()
            .map(|&c| c as f64 / n)
            .collect();
    }

    pub fn clicks_per_list(&self) -> f64 {
        self.clicks as f64 / self.lists.max(1) as f64
    }
}

/// Writes impressions `0..lists` of `traffic` through `writer`, in chunks of `chunk`
/// rows; `progress` is called after each chunk with the number of lists written.
pub fn write_logs(
    traffic: &Traffic<'_>,
    lists: u64,
    chunk: usize,
    writer: &mut LogWriter,
    mut progress: impl FnMut(u64),
) -> Result<LogStats, LogError> {
    let mut stats = LogStats::default();
    let mut rows = Vec::with_capacity(chunk);
    let mut start = 0u64;
    while start < lists {
        let end = (start + chunk.max(1) as u64).min(lists);
        rows.clear();
        rows.extend((start..end).map(|k| traffic.logged_list(&traffic.impression(k))));
        rows.iter().for_each(|r| stats.add(r));
        writer.write(&rows)?;
        progress(end);
        start = end;
    }
    stats.finish();
    Ok(stats)
}

/// Mean oracle score (true expected clicks per list) of the ways to order the same
/// pools: how much room a list-wise re-ranker has.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Headroom {
    pub lists: u64,
    /// The lists as logged (upstream order, or random for exploration traffic).
    pub logged: f64,
    /// The upstream ranker's order.
    pub initial: f64,
    /// Sorted by the true point-wise relevance (the best point-wise re-ranker).
    pub pointwise_sort: f64,
    /// Greedy + swap search with the true list-wise model.
    pub listwise_search: f64,
    /// The same search over observable inputs only: the point-wise logit estimated from
    /// the upstream score by a least-squares line (`a + b * upstream_score`, fitted on
    /// these pools), category and kind seen, the world's list effects.
    pub observable_search: f64,
}

/// Least-squares line from the upstream score to the true point-wise logit over the
/// pools of `impressions`: the best a model that sees only the upstream score could
/// know of each item's relevance, to first order.
pub fn upstream_calibration(world: &World, impressions: &[Impression]) -> (f64, f64) {
    let pairs: Vec<(f64, f64)> = impressions
        .iter()
        .flat_map(|imp| {
            imp.pool
                .iter()
                .zip(&imp.upstream_scores)
                .map(|(&i, &x)| (x, world.pointwise_logit(imp.user, i)))
        })
        .collect();
    least_squares(&pairs)
}

/// The lists of every headroom reference for one impression, in [`Headroom`]'s order
/// after `logged`: initial, true point-wise sort, true list-wise search, observable search.
pub fn reference_lists(
    world: &World,
    imp: &Impression,
    calibration: (f64, f64),
) -> [Vec<usize>; 4] {
    let len = world.list_len;
    let logits: Vec<f64> = imp
        .upstream_scores
        .iter()
        .map(|x| calibration.0 + calibration.1 * x)
        .collect();
    [
        imp.pool.iter().copied().take(len).collect(),
        world.pointwise_sort(imp.user, &imp.pool, len),
        world.listwise_search(imp.user, &imp.pool, len),
        world.observable_search(&imp.pool, &logits, len),
    ]
}

/// [`Headroom`] over impressions `0..lists`.
pub fn headroom(traffic: &Traffic<'_>, lists: u64) -> Headroom {
    let world = traffic.world();
    let impressions: Vec<Impression> = (0..lists).map(|k| traffic.impression(k)).collect();
    let calibration = upstream_calibration(world, &impressions);
    let mut sums = [0.0f64; 5];
    for imp in &impressions {
        sums[0] += world.expected_clicks(imp.user, &imp.served);
        for (sum, list) in sums[1..]
            .iter_mut()
            .zip(reference_lists(world, imp, calibration))
        {
            *sum += world.expected_clicks(imp.user, &list);
        }
    }
    let n = lists.max(1) as f64;
    Headroom {
        lists,
        logged: sums[0] / n,
        initial: sums[1] / n,
        pointwise_sort: sums[2] / n,
        listwise_search: sums[3] / n,
        observable_search: sums[4] / n,
    }
}
