//! One decode step on the host (spec §4 steps 2-4): the entropy at `tau_0`, the gate
//! that decides between a reasoning token and a recommendation, and the choice of the
//! item. Per step the pointer scores are copied to the host once; none of this needs a
//! gradient.

use candle_core::{Device, Result, Tensor};
use rand::Rng;

use super::super::config::{ReasoningMode, ReasoningPolicy, ReasoningToken};
use super::{Pick, PositionTrace};

/// What every row does at one step, as the rows of `W` in the next token `W h`.
pub(super) struct Step {
    /// `[b * n]`: a one-hot row for a chosen item, the context weights of a
    /// context-aware reasoning token, zeros otherwise.
    pub weights: Vec<f32>,
    /// The item each recommending row chose.
    pub picks: Vec<u32>,
    /// 1 where the row reasons this step.
    pub reasoning: Vec<u8>,
    /// The row's reasoning step since its last item (ReaRec's positions).
    pub reasoning_step: Vec<u32>,
    /// 1.0 where the row recommends this step.
    pub recommend: Vec<f32>,
}

impl Step {
    /// Runs steps 2-4 for every unfinished row on the host scores `a [b * n]`; the
    /// chosen items are taken out of `available`.
    #[inline(always)]
    pub fn decide(
        scores: &[f32],
        n: usize,
        rows: &mut [RowState],
        available: &mut [f32],
        p: &ReasoningPolicy,
        pick: &mut Pick<'_>,
    ) -> Self {
        let b = rows.len();
        let mut step = Step {
            weights: vec![0f32; b * n],
            picks: vec![0u32; b],
            reasoning: vec![0u8; b],
            reasoning_step: vec![0u32; b],
            recommend: vec![0f32; b],
        };
        let mut dist = vec![0f32; n];
        for (row, state) in rows.iter_mut().enumerate() {
            if state.done() {
                continue;
            }
            let a = &scores[row * n..(row + 1) * n];
            let avail = &available[row * n..(row + 1) * n];
            // Step 2: entropy at tau_0 (eq. 13-14).
            let entropy = masked_softmax(a, avail, p.tau0, &mut dist);
            state.observe(entropy);
            let w = &mut step.weights[row * n..(row + 1) * n];
            if state.reasons(p, entropy) {
                // Step 3: a reasoning token.
                if p.token == ReasoningToken::ContextAware {
                    masked_softmax(a, avail, p.tau_reason, w);
                }
                step.reasoning[row] = 1;
                step.reasoning_step[row] = state.since_item as u32;
                state.since_item += 1;
            } else {
                // Step 4: recommend from `softmax(a / tau_c)`.
                masked_softmax(a, avail, p.tau_recommend, &mut dist);
                let at = (row, state.list.len());
                let item = choose(&dist, avail, pick, at);
                w[item] = 1.0;
                step.picks[row] = item as u32;
                step.recommend[row] = 1.0;
                available[row * n + item] = 0.0;
                state.pick(item, dist[item], entropy);
            }
        }
        step
    }

    /// One-hot `[b, n]` of this step's picks (rows that recommended).
    pub fn pick_mask(&self, n: usize, device: &Device) -> Result<Tensor> {
        let b = self.picks.len();
        let mut m = vec![0f32; b * n];
        for (row, (&j, &r)) in self.picks.iter().zip(&self.recommend).enumerate() {
            m[row * n + j as usize] = r;
        }
        Tensor::from_vec(m, (b, n), device)
    }

    /// Whether any row reasons this step.
    pub fn any_reasoning(&self) -> bool {
        self.reasoning.contains(&1)
    }
}

/// `softmax(a / tau)` over the available entries into `out` (0 elsewhere); returns its
/// entropy `-sum p log p` in nats.
#[inline(always)]
fn masked_softmax(a: &[f32], avail: &[f32], tau: f64, out: &mut [f32]) -> f32 {
    let inv = (1.0 / tau) as f32;
    let max = a
        .iter()
        .zip(avail)
        .filter(|(_, &m)| m > 0.0)
        .map(|(&x, _)| x * inv)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for ((o, &x), &m) in out.iter_mut().zip(a).zip(avail) {
        *o = if m > 0.0 { (x * inv - max).exp() } else { 0.0 };
        sum += *o;
    }
    let mut entropy = 0f32;
    for o in out.iter_mut() {
        *o /= sum.max(f32::MIN_POSITIVE);
        if *o > 0.0 {
            entropy -= *o * o.ln();
        }
    }
    entropy
}

/// Decoding state of one row, kept on the host.
#[derive(Debug)]
pub(super) struct RowState {
    target: usize,
    pub list: Vec<PositionTrace>,
    pub since_item: usize,
    entropy_before: Option<f32>,
}

impl RowState {
    pub fn new(target: usize) -> Self {
        Self {
            target,
            list: Vec::with_capacity(target),
            since_item: 0,
            entropy_before: None,
        }
    }

    pub fn done(&self) -> bool {
        self.list.len() >= self.target
    }

    /// Spec §4 step 3 (or the reason-first rule).
    fn reasons(&self, p: &ReasoningPolicy, entropy: f32) -> bool {
        if self.done() {
            return false;
        }
        match p.mode {
            ReasoningMode::None => false,
            ReasoningMode::EntropyGated => {
                f64::from(entropy) > p.theta && self.since_item < p.max_steps
            }
            ReasoningMode::ReasonFirst => self.list.is_empty() && self.since_item < p.max_steps,
        }
    }

    fn observe(&mut self, entropy: f32) {
        if !self.done() && self.entropy_before.is_none() {
            self.entropy_before = Some(entropy);
        }
    }

    fn pick(&mut self, item: usize, prob: f32, entropy: f32) {
        self.list.push(PositionTrace {
            item,
            prob,
            reasoning_steps: self.since_item as u32,
            entropy_before: self.entropy_before.take().unwrap_or(entropy),
            entropy_after: entropy,
        });
        self.since_item = 0;
    }
}

/// Picks an available candidate for row `at.0`, position `at.1`: argmax, a draw from
/// `probs` (renormalised over the available ones, so rounding can never pick a taken or
/// padded slot), or the forced target (greedy if the target is missing or taken).
fn choose(probs: &[f32], available: &[f32], pick: &mut Pick<'_>, at: (usize, usize)) -> usize {
    let candidates = probs
        .iter()
        .zip(available)
        .enumerate()
        .filter(|(_, (_, &a))| a > 0.0);
    let argmax = || {
        candidates
            .clone()
            .max_by(|a, b| a.1 .0.total_cmp(b.1 .0))
            .map_or(0, |(j, _)| j)
    };
    match pick {
        Pick::Greedy => argmax(),
        Pick::Forced(targets) => match targets.get(at.0).and_then(|t| t.get(at.1)) {
            Some(&j) if available.get(j).is_some_and(|&a| a > 0.0) => j,
            _ => argmax(),
        },
        Pick::Sample(rng) => {
            let total: f64 = candidates.clone().map(|(_, (&p, _))| f64::from(p)).sum();
            let mut u = rng.random::<f64>() * total;
            let mut last = 0;
            for (j, (&p, _)) in candidates {
                last = j;
                u -= f64::from(p);
                if u <= 0.0 {
                    return j;
                }
            }
            last
        }
    }
}
