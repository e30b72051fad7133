//! The greedy decode of a frozen generator on the CPU (spec §4, steps 1-4), fused: the
//! decoder step runs in [`HostDecoder`] over preallocated buffers, the pointer scores
//! and the next tokens are computed next to it, and the gate and the choice are the
//! same [`Step::decide`] the candle path uses. Nothing leaves host memory between
//! steps, so a step costs its arithmetic and no allocation.

use candle_core::Result;

use super::super::config::ReasoningToken;
use super::super::host::{axpy, dot};
use super::decoder::HostDecoder;
use super::step::Step;
use super::{Decoded, EncodedPool, Generator, Selection};

impl Generator {
    /// What [`Generator::decode`] returns for greedy options with the KV cache.
    pub(super) fn decode_on_host(
        &self,
        host: &HostDecoder,
        pool: &EncodedPool,
        list_lens: &[usize],
    ) -> Result<Decoded> {
        let (b, n, d) = pool.h.dims3()?;
        let (mut rows, mut available, max_steps) = self.plan(pool, list_lens)?;
        let h: Vec<f32> = pool.h.flatten_all()?.to_vec1()?;
        let mut x: Vec<f32> = pool.s0.flatten_all()?.to_vec1()?;
        let mut o = vec![0f32; b * d];
        let mut scores = vec![0f32; b * n];
        let mut state = host.new_state(b, max_steps + 1);
        let scale = self.score_scale as f32;
        let plain = self.policy.token == ReasoningToken::Plain;
        let mut t = 0;
        while rows.iter().any(|r| !r.done()) && t < max_steps {
            host.step(&x, t, &mut state, &mut o)?;
            // Step 1: pointer scores `a_j = <o, h_j> / sqrt(d)` (eq. 11).
            for (r, (a, o)) in scores
                .chunks_exact_mut(n)
                .zip(o.chunks_exact(d))
                .enumerate()
            {
                let items = &h[r * n * d..(r + 1) * n * d];
                for (a, h_j) in a.iter_mut().zip(items.chunks_exact(d)) {
                    *a = dot(o, h_j) * scale;
                }
            }
            // Steps 2-4: entropy, gate, choice.
            let step = Step::decide(
                &scores,
                n,
                &mut rows,
                &mut available,
                &self.policy,
                &mut Selection::Greedy,
            );
            // The next token `W h`: the chosen item's embedding, or the context-aware
            // reasoning token `sum_j softmax(a / tau_r)_j h_j` (eq. 15); a plain
            // reasoning token is the output `o` itself.
            for r in 0..b {
                let next = &mut x[r * d..(r + 1) * d];
                if plain && step.reasoning[r] == 1 {
                    next.copy_from_slice(&o[r * d..(r + 1) * d]);
                    continue;
                }
                next.fill(0.0);
                let weights = &step.weights[r * n..(r + 1) * n];
                let items = &h[r * n * d..(r + 1) * n * d];
                for (&w, h_j) in weights.iter().zip(items.chunks_exact(d)) {
                    if w != 0.0 {
                        axpy(w, h_j, next);
                    }
                }
            }
            t += 1;
        }
        Ok(Decoded {
            upstream: vec![false; rows.len()],
            lists: rows.into_iter().map(|r| r.list).collect(),
            log_prob: None,
            steps: t,
        })
    }
}
