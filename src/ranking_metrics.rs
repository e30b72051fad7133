//! Offline ranking metrics (spec §7, LibRerank definitions) and their averages.

use serde::Serialize;

/// `NDCG@k = DCG@k / IDCG@k` with gain `2^c - 1` and discount `log2(i + 1)` (1-based
/// positions); `ranked` are the labels in the re-ranked order, `ideal_from` all labels
/// of the pool. 0 when the pool has no positive label.
pub fn ndcg_at_k(ranked: &[f64], ideal_from: &[f64], k: usize) -> f64 {
    let dcg = |labels: &mut dyn Iterator<Item = f64>| -> f64 {
        labels
            .take(k)
            .enumerate()
            .map(|(i, c)| (2f64.powf(c) - 1.0) / ((i + 2) as f64).log2())
            .sum()
    };
    let mut ideal = ideal_from.to_vec();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg = dcg(&mut ideal.into_iter());
    if idcg <= 0.0 {
        0.0
    } else {
        dcg(&mut ranked.iter().copied()) / idcg
    }
}

/// LibRerank's `AP@k = (1 / h_k) sum_{i <= k, c_i = 1} hits(i) / i`, `h_k` the hits in
/// the top k; a list without a hit in the top k scores 0 (and still counts in the mean).
pub fn map_at_k(ranked: &[f64], k: usize) -> f64 {
    let mut hits = 0.0;
    let mut sum = 0.0;
    for (i, &c) in ranked.iter().take(k).enumerate() {
        if c > 0.0 {
            hits += 1.0;
            sum += hits / (i + 1) as f64;
        }
    }
    if hits == 0.0 {
        0.0
    } else {
        sum / hits
    }
}

/// The evaluator's DCG reward of a list (spec eq. 18): `sum_t yhat_t / log2(t + 1)`
/// with 1-based `t`.
pub fn dcg_reward(yhat: &[f32]) -> f64 {
    yhat.iter()
        .enumerate()
        .map(|(i, &y)| f64::from(y) / ((i + 2) as f64).log2())
        .sum()
}

/// Running means of the offline metrics of one ordering.
#[derive(Debug, Clone, Default)]
pub struct MetricAccumulator {
    lists: u64,
    map5: f64,
    map10: f64,
    ndcg5: f64,
    ndcg10: f64,
    evaluator_score: f64,
    judge: Option<f64>,
    oracle: Option<f64>,
    reasoning_steps: f64,
}

/// The scores of one list beside its clicks: by the model's own evaluator, by an
/// independent judge evaluator (expected clicks) and by the simulator's oracle (true
/// expected clicks), the last two when known.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListScore {
    pub evaluator: f64,
    pub judge: Option<f64>,
    pub oracle: Option<f64>,
}

/// Averages of [`MetricAccumulator`], in the JSON shape `eglr eval` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricSummary {
    pub lists: u64,
    #[serde(rename = "map@5")]
    pub map5: f64,
    #[serde(rename = "map@10")]
    pub map10: f64,
    #[serde(rename = "ndcg@5")]
    pub ndcg5: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg10: f64,
    /// By the model's own evaluator (spec eq. 18 DCG of its click predictions).
    pub evaluator_score: f64,
    /// Expected clicks by an independent judge evaluator (`eval --judge`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge_score: Option<f64>,
    pub oracle_score: Option<f64>,
    pub reasoning_steps_per_list: f64,
}

impl MetricAccumulator {
    /// Adds one list: its labels in ranked order, all labels of its pool, its scores
    /// and its reasoning steps.
    pub fn add(
        &mut self,
        ranked: &[f64],
        pool_labels: &[f64],
        score: ListScore,
        reasoning_steps: u32,
    ) {
        let ListScore {
            evaluator: evaluator_score,
            judge,
            oracle,
        } = score;
        self.lists += 1;
        self.map5 += map_at_k(ranked, 5);
        self.map10 += map_at_k(ranked, 10);
        self.ndcg5 += ndcg_at_k(ranked, pool_labels, 5);
        self.ndcg10 += ndcg_at_k(ranked, pool_labels, 10);
        self.evaluator_score += evaluator_score;
        if let Some(o) = oracle {
            *self.oracle.get_or_insert(0.0) += o;
        }
        if let Some(j) = judge {
            *self.judge.get_or_insert(0.0) += j;
        }
        self.reasoning_steps += f64::from(reasoning_steps);
    }

    pub fn summary(&self) -> MetricSummary {
        let n = self.lists.max(1) as f64;
        MetricSummary {
            lists: self.lists,
            map5: self.map5 / n,
            map10: self.map10 / n,
            ndcg5: self.ndcg5 / n,
            ndcg10: self.ndcg10 / n,
            evaluator_score: self.evaluator_score / n,
            judge_score: self.judge.map(|j| j / n),
            oracle_score: self.oracle.map(|o| o / n),
            reasoning_steps_per_list: self.reasoning_steps / n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn map_by_hand() {
        // hits at 1 and 3: (1/1 + 2/3) / 2
        assert!(close(
            map_at_k(&[1.0, 0.0, 1.0, 0.0], 5),
            (1.0 + 2.0 / 3.0) / 2.0
        ));
        // only hits within k count, and h_k counts hits in the top k
        assert!(close(map_at_k(&[0.0, 1.0, 0.0, 1.0], 2), 0.5));
        assert_eq!(map_at_k(&[0.0, 0.0, 1.0], 2), 0.0);
        assert_eq!(map_at_k(&[0.0; 10], 10), 0.0);
    }

    #[test]
    fn ndcg_by_hand() {
        let labels = [0.0, 1.0, 1.0];
        // DCG = 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3)
        let expected = (1.0 / 3f64.log2() + 0.5) / (1.0 + 1.0 / 3f64.log2());
        assert!(close(ndcg_at_k(&labels, &labels, 10), expected));
        assert!(close(ndcg_at_k(&[1.0, 1.0, 0.0], &labels, 10), 1.0));
        // cut at k = 1: DCG@1 = 0
        assert_eq!(ndcg_at_k(&labels, &labels, 1), 0.0);
        // no click anywhere: 0, not NaN
        assert_eq!(ndcg_at_k(&[0.0, 0.0], &[0.0, 0.0], 5), 0.0);
    }

    #[test]
    fn dcg_reward_by_hand() {
        assert!(close(
            dcg_reward(&[1.0, 1.0, 1.0]),
            1.0 + 1.0 / 3f64.log2() + 0.5
        ));
    }

    #[test]
    fn accumulator_counts_lists_without_clicks() {
        let mut acc = MetricAccumulator::default();
        let score = |evaluator, oracle| ListScore {
            evaluator,
            judge: None,
            oracle: Some(oracle),
        };
        acc.add(&[1.0, 0.0], &[1.0, 0.0], score(2.0, 1.0), 3);
        acc.add(&[0.0, 0.0], &[0.0, 0.0], score(0.0, 0.0), 1);
        let s = acc.summary();
        assert_eq!((s.lists, s.map5, s.ndcg5), (2, 0.5, 0.5));
        assert_eq!(
            (
                s.evaluator_score,
                s.oracle_score,
                s.reasoning_steps_per_list
            ),
            (1.0, Some(0.5), 2.0)
        );
    }
}
