//! The greedy decode of a frozen generator on the CPU (spec §4, steps 1-4), fused: the
//! decoder step runs in [`HostDecoder`] over preallocated buffers, the pointer scores
//! and the next tokens are computed next to it, and the gate and the choice are the
//! same [`Step::decide`] the candle path uses. Nothing leaves host memory between
//! steps, so a step costs its arithmetic and no allocation.

use candle_core::Result;

use super::super::config::ReasoningToken;
use super::super::host::{axpy, dot, PACKED_FROM_ROWS};
use super::decoder::{HostDecoder, HostState};
use super::step::{RowState, Step};
use super::{Decoded, Generator, Pick, PoolEncoding};

/// The working set (KV caches and item embeddings) a tile of rows may take. Every
/// step reads each row's cache and items, so a batch of 256 rows streams megabytes per
/// step out of the core's caches; measured per list, 64-row batches decoded about 1.2x
/// faster than 256-row ones and 32-row ones no faster (`eglr bench --batches
/// 16,32,64,128,256`, docs/performance.md). 2 MiB is about 64 rows at the bench's sizes.
const TILE_BYTES: usize = 2 << 20;

impl Generator {
    /// What [`Generator::decode`] returns for greedy options with the KV cache. Rows
    /// decode independently, so the batch runs tile by tile, each small enough to stay
    /// in cache ([`TILE_BYTES`]).
    pub(super) fn decode_on_host(
        &self,
        host: &HostDecoder,
        pool: &PoolEncoding,
        list_lens: &[usize],
    ) -> Result<Decoded> {
        let (b, n, d) = pool.h.dims3()?;
        let (mut rows, mut available, max_steps) = self.plan(pool, list_lens)?;
        let h: Vec<f32> = pool.h.flatten_all()?.to_vec1()?;
        let mut x: Vec<f32> = pool.s0.flatten_all()?.to_vec1()?;
        let max_len = max_steps + 1;
        let per_row = host.bytes_per_row(max_len) + n * d * std::mem::size_of::<f32>();
        let tile = (TILE_BYTES / per_row.max(1))
            .max(PACKED_FROM_ROWS)
            .min(b.max(1));
        let arch = pulp::Arch::new();
        let mut state = None;
        let mut steps = 0;
        for start in (0..b).step_by(tile) {
            let end = (start + tile).min(b);
            let rows_here = end - start;
            let state = match state.take() {
                Some((r, s)) if r == rows_here => state.insert((r, s)),
                _ => state.insert((rows_here, host.new_state(rows_here, max_len))),
            };
            let tile = Tile {
                h: &h[start * n * d..end * n * d],
                x: &mut x[start * d..end * d],
                rows: &mut rows[start..end],
                available: &mut available[start * n..end * n],
            };
            let tile_steps = arch.dispatch(TileDecode {
                generator: self,
                host,
                tile,
                dims: (n, d, max_steps),
                state: &mut state.1,
            })?;
            steps = steps.max(tile_steps);
        }
        Ok(Decoded {
            upstream: vec![false; rows.len()],
            lists: rows.into_iter().map(|r| r.list).collect(),
            log_prob: None,
            item_log_probs: None,
            steps,
        })
    }

    /// Decodes the rows of one tile to the end; returns the decoder steps it took.
    #[inline(always)]
    fn decode_tile(
        &self,
        host: &HostDecoder,
        tile: Tile<'_>,
        (n, d, max_steps): (usize, usize, usize),
        state: &mut HostState,
    ) -> Result<usize> {
        let Tile {
            h,
            x,
            rows,
            available,
        } = tile;
        let b = rows.len();
        let mut o = vec![0f32; b * d];
        let mut scores = vec![0f32; b * n];
        let scale = self.score_scale as f32;
        let plain = self.policy.token == ReasoningToken::Plain;
        let mut t = 0;
        while rows.iter().any(|r| !r.done()) && t < max_steps {
            host.step(x, t, state, &mut o)?;
            // Step 1: pointer scores `a_j = <o, h_j> / sqrt(d)` (eq. 11).
            for ((a, o), items) in scores
                .chunks_exact_mut(n)
                .zip(o.chunks_exact(d))
                .zip(h.chunks_exact(n * d))
            {
                for (a, h_j) in a.iter_mut().zip(items.chunks_exact(d)) {
                    *a = dot(o, h_j) * scale;
                }
            }
            // Steps 2-4: entropy, gate, choice.
            let step = Step::decide(&scores, n, rows, available, &self.policy, &mut Pick::Greedy);
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
        Ok(t)
    }
}

/// The decode of one tile as an operation [`pulp::Arch::dispatch`] runs: its loops, all
/// inlined into `with_simd`, are compiled for the widest vector unit the CPU has (AVX2
/// and FMA on x86-64 v3), chosen at run time: 8 lanes where the baseline build has 4.
struct TileDecode<'a, 't> {
    generator: &'a Generator,
    host: &'a HostDecoder,
    tile: Tile<'t>,
    dims: (usize, usize, usize),
    state: &'a mut HostState,
}

impl pulp::WithSimd for TileDecode<'_, '_> {
    type Output = Result<usize>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Result<usize> {
        self.generator
            .decode_tile(self.host, self.tile, self.dims, self.state)
    }
}

/// One tile's slices of the batch.
struct Tile<'a> {
    h: &'a [f32],
    x: &'a mut [f32],
    rows: &'a mut [RowState],
    available: &'a mut [f32],
}
