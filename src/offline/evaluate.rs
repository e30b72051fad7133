//! Offline evaluation of a bundle on logged lists (spec §6-7): the re-ranked lists and
//! the initial (upstream) order, scored against the logged clicks, by the bundle's
//! evaluator and, on simulated data, by the simulator's oracle.

use std::time::Instant;

use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::encoded::{is_cold_item, pool_tensors, Example};
use crate::model::{
    beam_search, is_upstream_order, upstream_lists, Bundle, DecodeOptions, Decoded, Pick,
    PoolTensors, PositionTrace, SearchObjective,
};
use crate::model::{rewards, Reward};
use crate::ranking_metrics::{ListScore, MetricAccumulator, MetricSummary};
use crate::sim::World;

/// Options of an evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub batch: usize,
    pub list_len: usize,
    /// Pass@N (spec §6): keep the best of the greedy list and `N - 1` sampled lists by
    /// the evaluator. 1 = greedy only.
    pub pass_at_n: usize,
    pub seed: u64,
    /// Width of the beam search over the model's evaluator reported beside the model
    /// ([`crate::model::beam_search`]); 0 leaves the row out.
    pub beam_width: usize,
}

/// Mean entropy and reasoning at one list position.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PositionStats {
    pub position: usize,
    pub entropy_before: f64,
    pub entropy_after: f64,
    pub reasoning_steps: f64,
}

/// Metrics of one ordering plus its inference time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrderingReport {
    #[serde(flatten)]
    pub metrics: MetricSummary,
    pub ms_per_list: f64,
    /// Share of its lists that are the initial order's first `L` candidates as they
    /// stand: a re-ranker that only copies what it was given (GR2's reward hacking) is
    /// worth nothing, whatever its scores.
    pub copies_initial_order: f64,
    /// Share of its list slots holding an item the model never saw in training
    /// (`training.cold_item_share`; none without a hold-out): how far it serves new items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_items: Option<f64>,
}

/// The report of `eglr eval`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalReport {
    pub model_version: String,
    pub variant: String,
    pub lists: usize,
    pub pass_at_n: usize,
    pub model: OrderingReport,
    pub initial: OrderingReport,
    /// The pool sorted by the evaluator's point-wise click probabilities (scored in the
    /// initial order): what a point-wise re-ranker with this evaluator would serve.
    pub evaluator_sort: OrderingReport,
    /// Beam search over the model's own evaluator (by expected clicks): the ceiling that
    /// evaluator allows a generator, when `beam_width > 0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beam: Option<OrderingReport>,
    /// The ensemble the beam searched with, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beam_ensemble: Option<EnsembleSummary>,
    /// The order the list was actually shown in, as logged (differs from the initial
    /// order for exploration traffic and for lists a model served).
    pub logged: OrderingReport,
    pub by_position: Vec<PositionStats>,
    /// Share of lists where generator-evaluator selection served the upstream order.
    pub upstream_share: f64,
    /// How the bundle's evaluator orders lists against the oracle (simulated data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<crate::offline::fidelity::Fidelity>,
}

/// What scores the orderings besides the model's own evaluator: an independent judge
/// (a bundle whose evaluator the model was not trained against, with the same feature
/// encoding) and, on simulated data, the world's oracle.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scorers<'a> {
    pub judge: Option<&'a Bundle>,
    /// The evaluated lists encoded by the judge's own encoder, where its feature spec
    /// differs from the model's (a judge with hashed ids of a model with semantic ids):
    /// the evaluation's n-th list is its n-th. `None`: the model's encoding serves both.
    pub judge_lists: Option<&'a [Example]>,
    pub world: Option<&'a World>,
    /// Evaluators the beam row searches with beside the model's own, when given.
    pub beam_ensemble: Option<BeamEnsemble<'a>>,
}

/// How the beam row's ensemble ranked lists.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnsembleSummary {
    /// Evaluators, the model's own included.
    pub members: usize,
    pub disagreement_penalty: f32,
}

/// Extra evaluators for the beam row, with the model's own making an ensemble that ranks
/// lists by its lower bound ([`SearchObjective::ensemble`]): bundles of the model's
/// feature encoding, say evaluators trained on the same lists with other seeds.
#[derive(Debug, Clone, Copy)]
pub struct BeamEnsemble<'a> {
    pub members: &'a [Bundle],
    /// Standard deviations of the members' rewards taken off their mean.
    pub disagreement_penalty: f32,
}

/// Runs the bundle's generator over every example and scores every ordering.
pub fn evaluate(
    bundle: &Bundle,
    examples: &[Example],
    scorers: Scorers<'_>,
    opts: &EvalOptions,
    device: &Device,
) -> candle_core::Result<EvalReport> {
    let mut evaluation = Evaluation::new(bundle, scorers, opts);
    for chunk in examples.chunks(opts.batch.max(1)) {
        evaluation.add(chunk, device)?;
    }
    Ok(evaluation.finish())
}

/// An evaluation fed one chunk of examples at a time, so logs larger than memory can
/// be evaluated as a stream (`eglr replay`).
#[derive(Debug)]
pub struct Evaluation<'a> {
    bundle: &'a Bundle,
    scorers: Scorers<'a>,
    opts: EvalOptions,
    model: MetricAccumulator,
    initial: MetricAccumulator,
    sorted: MetricAccumulator,
    logged: MetricAccumulator,
    beam: MetricAccumulator,
    beam_seconds: f64,
    beam_copies: usize,
    positions: Vec<PositionStats>,
    counts: Vec<usize>,
    decode_seconds: f64,
    lists: usize,
    upstream_served: usize,
    /// Lists that copy the initial order: the model's, the evaluator sort's, the logged.
    copies: [usize; 3],
    /// (Slots holding a cold item, slots) of the model's, initial, sorted and logged lists.
    cold: [(usize, usize); 4],
    rng: ChaCha8Rng,
}

/// The model's list for one example, with the evaluator's score of it.
#[derive(Debug, Clone)]
pub struct RankedList {
    pub list: Vec<PositionTrace>,
    pub evaluator_score: f32,
}

impl<'a> Evaluation<'a> {
    pub fn new(bundle: &'a Bundle, scorers: Scorers<'a>, opts: &EvalOptions) -> Self {
        Self {
            bundle,
            scorers,
            opts: opts.clone(),
            model: MetricAccumulator::default(),
            initial: MetricAccumulator::default(),
            sorted: MetricAccumulator::default(),
            logged: MetricAccumulator::default(),
            beam: MetricAccumulator::default(),
            beam_seconds: 0.0,
            beam_copies: 0,
            positions: Vec::new(),
            counts: Vec::new(),
            decode_seconds: 0.0,
            lists: 0,
            upstream_served: 0,
            copies: [0; 3],
            cold: [(0, 0); 4],
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
        }
    }

    /// Re-ranks and scores one chunk (one decode batch); returns the model's lists.
    /// Each ordering of every pool (the model's, the initial, the evaluator's sort, the
    /// logged, and with `beam_width` a beam search) is scored by the bundle's evaluator
    /// and the judge, and added to its accumulator.
    pub fn add(
        &mut self,
        chunk: &[Example],
        device: &Device,
    ) -> candle_core::Result<Vec<RankedList>> {
        let (bundle, scorers, list_len) = (self.bundle, self.scorers, self.opts.list_len);
        let refs: Vec<&Example> = chunk.iter().collect();
        let pools = pool_tensors(&refs, &bundle.encoder, device)?;
        let lens = vec![list_len; chunk.len()];
        let (best_lists, best_scores) = self.model_lists(&pools, &lens)?;
        let score = |d: &Decoded| rewards(&bundle.evaluator, &pools, d, Reward::Dcg);
        let initial = upstream_lists(&pools, &lens);
        let sorted = evaluator_sort(bundle, &pools, chunk, list_len)?;
        let logged = Decoded::from_orders(
            chunk
                .iter()
                .map(|e| e.served.iter().copied().take(list_len).collect()),
        );
        let (initial_scores, sorted_scores, logged_scores) =
            (score(&initial)?, score(&sorted)?, score(&logged)?);
        let beam = self.beam_lists(&pools, &lens)?;
        let best = Decoded::from_orders(
            best_lists
                .iter()
                .map(|l| l.iter().map(|p| p.item).collect()),
        );
        let judge_pools = self.judge_pools(chunk, device)?;
        let judge_pools = judge_pools.as_ref().unwrap_or(&pools);
        let judged = |d: &Decoded| judge_scores(scorers.judge, judge_pools, d, chunk.len());
        let (best_judged, initial_judged, sorted_judged, logged_judged) = (
            judged(&best)?,
            judged(&initial)?,
            judged(&sorted)?,
            judged(&logged)?,
        );
        if let Some((lists, scores)) = &beam {
            self.add_beam(chunk, lists, scores, &judged(lists)?);
        }
        let world = scorers.world;
        for (r, e) in chunk.iter().enumerate() {
            self.tally(
                e,
                [
                    &best_lists[r],
                    &initial.lists[r],
                    &sorted.lists[r],
                    &logged.lists[r],
                ],
            );
            let scored = [
                (
                    &mut self.model,
                    &best_lists[r],
                    best_scores[r],
                    best_judged[r],
                ),
                (
                    &mut self.initial,
                    &initial.lists[r],
                    initial_scores[r],
                    initial_judged[r],
                ),
                (
                    &mut self.sorted,
                    &sorted.lists[r],
                    sorted_scores[r],
                    sorted_judged[r],
                ),
                (
                    &mut self.logged,
                    &logged.lists[r],
                    logged_scores[r],
                    logged_judged[r],
                ),
            ];
            for (accumulator, list, evaluator, judge) in scored {
                add(accumulator, e, list, (evaluator, judge), world);
            }
            self.record_positions(&best_lists[r]);
        }
        self.lists += chunk.len();
        Ok(best_lists
            .into_iter()
            .zip(best_scores)
            .map(|(list, evaluator_score)| RankedList {
                list,
                evaluator_score,
            })
            .collect())
    }

    /// Adds the beam search's lists: their scores and copies of the initial order.
    fn add_beam(
        &mut self,
        chunk: &[Example],
        lists: &Decoded,
        scores: &[f32],
        judged: &[Option<f32>],
    ) {
        for (r, e) in chunk.iter().enumerate() {
            let list = &lists.lists[r];
            self.beam_copies += usize::from(is_upstream_order(list.iter().map(|p| p.item)));
            add(
                &mut self.beam,
                e,
                list,
                (scores[r], judged[r]),
                self.scorers.world,
            );
        }
    }

    /// The model's lists and their evaluator scores: the ranker's (greedy) lists, or
    /// with Pass@N the best by the evaluator of those and N - 1 samples. A scorer has
    /// nothing to sample (its Pass@N is its one list).
    fn model_lists(
        &mut self,
        pools: &PoolTensors,
        lens: &[usize],
    ) -> candle_core::Result<(Vec<Vec<PositionTrace>>, Vec<f32>)> {
        let bundle = self.bundle;
        let started = Instant::now();
        let greedy = bundle.ranker.rank(pools, lens, &bundle.evaluator)?;
        self.upstream_served += greedy.upstream.iter().filter(|&&u| u).count();
        let mut best_lists = greedy.lists.clone();
        let mut best_scores = rewards(&bundle.evaluator, pools, &greedy, Reward::Dcg)?;
        if let Some(g) = bundle
            .ranker
            .generator()
            .filter(|_| self.opts.pass_at_n > 1)
        {
            let encoded = g.encode(pools)?;
            for _ in 1..self.opts.pass_at_n {
                let sampled = g.decode(
                    &encoded,
                    lens,
                    DecodeOptions {
                        pick: Pick::Sample(&mut self.rng),
                        track_log_prob: false,
                        use_cache: true,
                    },
                )?;
                let scores = rewards(&bundle.evaluator, pools, &sampled, Reward::Dcg)?;
                for (r, s) in scores.iter().enumerate() {
                    if *s > best_scores[r] {
                        best_scores[r] = *s;
                        best_lists[r] = sampled.lists[r].clone();
                    }
                }
            }
        }
        self.decode_seconds += started.elapsed().as_secs_f64();
        Ok((best_lists, best_scores))
    }

    /// With `beam_width`, the beam search's lists over the evaluator (by expected
    /// clicks) and their evaluator scores.
    fn beam_lists(
        &mut self,
        pools: &PoolTensors,
        lens: &[usize],
    ) -> candle_core::Result<Option<(Decoded, Vec<f32>)>> {
        if self.opts.beam_width == 0 {
            return Ok(None);
        }
        let evaluator = &self.bundle.evaluator;
        let objective = match self.scorers.beam_ensemble {
            None => SearchObjective::single(evaluator, Reward::Clicks),
            Some(e) => SearchObjective::ensemble(
                std::iter::once(evaluator)
                    .chain(e.members.iter().map(|b| &b.evaluator))
                    .collect(),
                Reward::Clicks,
                e.disagreement_penalty,
            ),
        };
        let started = Instant::now();
        let lists = beam_search(&objective, pools, lens, self.opts.beam_width)?;
        self.beam_seconds += started.elapsed().as_secs_f64();
        let scores = rewards(evaluator, pools, &lists, Reward::Dcg)?;
        Ok(Some((lists, scores)))
    }

    /// The judge's own encoding of this chunk's pools, when it has its own lists (a
    /// judge with another feature encoder); `None`: it reads the bundle's.
    fn judge_pools(
        &self,
        chunk: &[Example],
        device: &Device,
    ) -> candle_core::Result<Option<PoolTensors>> {
        let (Some(judge), Some(lists)) = (self.scorers.judge, self.scorers.judge_lists) else {
            return Ok(None);
        };
        let at = self.lists..self.lists + chunk.len();
        let refs: Vec<&Example> = lists
            .get(at.clone())
            .ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "the judge's lists hold {}, the evaluation is at {at:?}",
                    lists.len()
                ))
            })?
            .iter()
            .collect();
        Ok(Some(pool_tensors(&refs, &judge.encoder, device)?))
    }

    /// Counts the cold-item slots of the four orderings (model, initial, sorted,
    /// logged) and which of them copy the initial order.
    fn tally(&mut self, e: &Example, orderings: [&Vec<PositionTrace>; 4]) {
        let cold_share = self.bundle.meta.training.cold_item_share;
        for ((cold, slots), list) in self.cold.iter_mut().zip(orderings) {
            *slots += list.len();
            *cold += list
                .iter()
                .filter(|p| {
                    e.item_ids
                        .get(p.item)
                        .is_some_and(|id| is_cold_item(id, cold_share))
                })
                .count();
        }
        let [model, _, sorted, logged] = orderings;
        for (count, list) in self.copies.iter_mut().zip([model, sorted, logged]) {
            *count += usize::from(is_upstream_order(list.iter().map(|p| p.item)));
        }
    }

    /// Adds the model's list's entropy and reasoning steps to their position's sums.
    fn record_positions(&mut self, list: &[PositionTrace]) {
        for (t, p) in list.iter().enumerate() {
            if self.positions.len() <= t {
                self.positions.push(PositionStats {
                    position: t + 1,
                    ..Default::default()
                });
                self.counts.push(0);
            }
            let at = &mut self.positions[t];
            at.entropy_before += f64::from(p.entropy_before);
            at.entropy_after += f64::from(p.entropy_after);
            at.reasoning_steps += f64::from(p.reasoning_steps);
            self.counts[t] += 1;
        }
    }

    pub fn finish(mut self) -> EvalReport {
        for (p, &c) in self.positions.iter_mut().zip(&self.counts) {
            let c = c.max(1) as f64;
            p.entropy_before /= c;
            p.entropy_after /= c;
            p.reasoning_steps /= c;
        }
        let n = self.lists.max(1) as f64;
        let held_out = self.bundle.meta.training.cold_item_share > 0.0;
        let cold = |k: usize| {
            let (c, slots) = self.cold[k];
            held_out.then(|| c as f64 / slots.max(1) as f64)
        };
        EvalReport {
            model_version: self.bundle.meta.version.clone(),
            variant: self.bundle.meta.generator.variant.name().to_owned(),
            lists: self.lists,
            pass_at_n: self.opts.pass_at_n.max(1),
            model: OrderingReport {
                metrics: self.model.summary(),
                ms_per_list: 1000.0 * self.decode_seconds / n,
                copies_initial_order: self.copies[0] as f64 / n,
                cold_items: cold(0),
            },
            initial: OrderingReport {
                metrics: self.initial.summary(),
                ms_per_list: 0.0,
                copies_initial_order: 1.0,
                cold_items: cold(1),
            },
            evaluator_sort: OrderingReport {
                metrics: self.sorted.summary(),
                ms_per_list: 0.0,
                copies_initial_order: self.copies[1] as f64 / n,
                cold_items: cold(2),
            },
            logged: OrderingReport {
                metrics: self.logged.summary(),
                ms_per_list: 0.0,
                copies_initial_order: self.copies[2] as f64 / n,
                cold_items: cold(3),
            },
            beam: (self.opts.beam_width > 0).then(|| OrderingReport {
                metrics: self.beam.summary(),
                ms_per_list: 1000.0 * self.beam_seconds / n,
                copies_initial_order: self.beam_copies as f64 / n,
                cold_items: None,
            }),
            beam_ensemble: self
                .scorers
                .beam_ensemble
                .filter(|_| self.opts.beam_width > 0)
                .map(|e| EnsembleSummary {
                    members: 1 + e.members.len(),
                    disagreement_penalty: e.disagreement_penalty,
                }),
            by_position: self.positions,
            upstream_share: self.upstream_served as f64 / n,
            fidelity: None,
        }
    }
}

/// Each pool sorted by the evaluator's point-wise click logits
/// ([`crate::model::Evaluator::pointwise_logits`]).
fn evaluator_sort(
    bundle: &Bundle,
    pools: &PoolTensors,
    examples: &[Example],
    len: usize,
) -> candle_core::Result<Decoded> {
    let logits: Vec<Vec<f32>> = bundle.evaluator.pointwise_logits(pools)?.to_vec2()?;
    Ok(Decoded::from_orders(examples.iter().zip(logits).map(
        |(e, z)| {
            let mut order: Vec<usize> = (0..e.pool.lens[0]).collect();
            order.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
            order.truncate(len);
            order
        },
    )))
}

/// True expected clicks of the list `order` (indices into `e`'s pool) under `world`;
/// `None` when the example's user or items are not the world's.
pub fn oracle_clicks(world: &World, e: &Example, order: &[usize]) -> Option<f64> {
    let user = world.user_index(&e.user_id)?;
    let items: Option<Vec<usize>> = order
        .iter()
        .map(|&j| world.item_index(&e.item_ids[j]))
        .collect();
    Some(world.expected_clicks(user, &items?))
}

/// The judge's expected clicks of each list (`None` per list without a judge).
fn judge_scores(
    judge: Option<&Bundle>,
    pools: &PoolTensors,
    lists: &Decoded,
    n: usize,
) -> candle_core::Result<Vec<Option<f32>>> {
    Ok(match judge {
        None => vec![None; n],
        Some(j) => rewards(&j.evaluator, pools, lists, Reward::Clicks)?
            .into_iter()
            .map(Some)
            .collect(),
    })
}

fn add(
    acc: &mut MetricAccumulator,
    e: &Example,
    list: &[PositionTrace],
    (evaluator_score, judge): (f32, Option<f32>),
    world: Option<&World>,
) {
    let labels = e.pool_labels();
    let ranked: Vec<f64> = list.iter().map(|p| labels[p.item]).collect();
    let order: Vec<usize> = list.iter().map(|p| p.item).collect();
    let oracle = world.and_then(|w| oracle_clicks(w, e, &order));
    let steps = list.iter().map(|p| p.reasoning_steps).sum();
    let score = ListScore {
        evaluator: f64::from(evaluator_score),
        judge: judge.map(f64::from),
        oracle,
    };
    acc.add(&ranked, &labels, score, steps);
}
