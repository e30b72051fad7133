//! Beam search over the evaluator: a non-learned reference generator. Each step extends
//! every kept prefix by every unused candidate, scores the extensions with the evaluator
//! and keeps the `width` best per pool. It shows the ceiling a given evaluator allows:
//! a generator trained against that evaluator should reach most of its gain.
//!
//! With a causal evaluator (`evaluator.kind = "cascade"`) a prefix's value never
//! changes as items are appended, so the search ranks extensions exactly by the value of
//! the list they start; with the paper's bidirectional evaluator, a prefix is scored as
//! if it were the whole list (a heuristic).

use candle_core::Result;

use super::embedding::PoolTensors;
use super::evaluator::Evaluator;
use super::generator::Decoded;
use super::reward::{list_values, Reward};

/// Lists scored per evaluator call: bounds memory whatever the batch.
const LISTS_PER_CALL: usize = 4096;

/// The best list of `list_lens[r]` items of each pool that a beam of `width` finds,
/// by the evaluator's `reward`.
pub fn beam_search(
    evaluator: &Evaluator,
    pools: &PoolTensors,
    list_lens: &[usize],
    width: usize,
    reward: Reward,
) -> Result<Decoded> {
    let embedded = evaluator.embed(pools)?;
    let targets: Vec<usize> = pools
        .lens
        .iter()
        .zip(list_lens)
        .map(|(&n, &l)| n.min(l))
        .collect();
    let mut beams: Vec<Vec<Vec<usize>>> = vec![vec![Vec::new()]; pools.batch()];
    for t in 0..targets.iter().copied().max().unwrap_or(0) {
        let mut extensions: Vec<(usize, Vec<usize>)> = Vec::new();
        for (r, kept) in beams.iter().enumerate() {
            if t >= targets[r] {
                continue;
            }
            for prefix in kept {
                for j in (0..pools.lens[r]).filter(|j| !prefix.contains(j)) {
                    let mut order = prefix.clone();
                    order.push(j);
                    extensions.push((r, order));
                }
            }
        }
        let mut values = Vec::with_capacity(extensions.len());
        for chunk in extensions.chunks(LISTS_PER_CALL) {
            let scores = evaluator.score_lists(&embedded, chunk)?;
            values.extend(list_values(&scores, &vec![t + 1; chunk.len()], reward)?);
        }
        let mut by_pool: Vec<Vec<(f32, Vec<usize>)>> = vec![Vec::new(); pools.batch()];
        for ((r, order), v) in extensions.into_iter().zip(values) {
            by_pool[r].push((v, order));
        }
        for (r, mut scored) in by_pool.into_iter().enumerate() {
            if scored.is_empty() {
                continue;
            }
            // Ties keep the earlier extension (upstream order first): deterministic.
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            scored.truncate(width.max(1));
            beams[r] = scored.into_iter().map(|(_, order)| order).collect();
        }
    }
    Ok(Decoded::from_orders(beams.into_iter().map(|mut kept| {
        if kept.is_empty() {
            Vec::new()
        } else {
            kept.swap_remove(0)
        }
    })))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::beam_search;
    use crate::model::config::EvaluatorKind;
    use crate::model::embedding::PoolTensors;
    use crate::model::generator::Decoded;
    use crate::model::reward::{rewards, Reward};
    use crate::model::tests::{all_lists, encoder, pool, seeded_evaluator_of};

    /// On small pools, a beam as wide as the number of prefixes finds the list brute
    /// force finds (the evaluator's best by expected clicks), and a narrower beam never
    /// beats it.
    #[test]
    fn beam_search_finds_the_best_list_of_a_small_pool() {
        let enc = encoder();
        for kind in [EvaluatorKind::Cascade, EvaluatorKind::Paper] {
            let (evaluator, _vars) = seeded_evaluator_of(kind, &enc, 9);
            let pools = [pool(2, 6), pool(5, 5)];
            let refs: Vec<_> = pools.iter().map(|(u, c)| (u, c.as_slice())).collect();
            let tensors =
                PoolTensors::new(&enc.encode(&refs), &enc, &Device::Cpu).expect("tensors");
            let len = 3;
            let lens = vec![len; pools.len()];
            let exact = beam_search(&evaluator, &tensors, &lens, 6 * 5 * 4, Reward::Clicks)
                .expect("wide beam");
            let greedy =
                beam_search(&evaluator, &tensors, &lens, 1, Reward::Clicks).expect("greedy");
            let found = rewards(&evaluator, &tensors, &exact, Reward::Clicks).expect("found");
            let narrow = rewards(&evaluator, &tensors, &greedy, Reward::Clicks).expect("narrow");
            for (r, &n) in tensors.lens.iter().enumerate() {
                let candidates = all_lists(n, len);
                let one = tensors
                    .select_rows(&vec![r; candidates.len()])
                    .expect("rows");
                let values = rewards(
                    &evaluator,
                    &one,
                    &Decoded::from_orders(candidates.into_iter()),
                    Reward::Clicks,
                )
                .expect("brute force");
                let best = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert!(
                    (found[r] - best).abs() < 1e-5,
                    "{kind:?} pool {r}: beam {} vs brute force {best}",
                    found[r]
                );
                assert!(narrow[r] <= best + 1e-5);
                assert_eq!(exact.lists[r].len(), len);
            }
        }
    }
}
