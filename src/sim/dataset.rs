//! Writing simulated traffic as a data set: Parquet logs plus summary statistics.

use serde::Serialize;

use super::traffic::Traffic;
use crate::logs::{LogError, LogWriter, LoggedList};

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

/// Mean oracle score (true expected clicks per list) of four ways to order the same
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
}

/// [`Headroom`] over impressions `0..lists`.
pub fn headroom(traffic: &Traffic<'_>, lists: u64) -> Headroom {
    let world = traffic.world();
    let len = world.list_len;
    let mut sums = [0.0f64; 4];
    for k in 0..lists {
        let imp = traffic.impression(k);
        let initial: Vec<usize> = imp.pool.iter().copied().take(len).collect();
        sums[0] += world.expected_clicks(imp.user, &imp.served);
        sums[1] += world.expected_clicks(imp.user, &initial);
        sums[2] += world.expected_clicks(imp.user, &world.pointwise_sort(imp.user, &imp.pool, len));
        sums[3] +=
            world.expected_clicks(imp.user, &world.listwise_search(imp.user, &imp.pool, len));
    }
    let n = lists.max(1) as f64;
    Headroom {
        lists,
        logged: sums[0] / n,
        initial: sums[1] / n,
        pointwise_sort: sums[2] / n,
        listwise_search: sums[3] / n,
    }
}
