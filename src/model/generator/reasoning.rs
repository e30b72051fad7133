//! The latent reasoning tokens of every variant (spec §4 step 3): the decoder output as
//! it is or refined by STREAM-Rec's residual MLP, ReaRec's reasoning-position embedding,
//! LatentR3's exploration noise while sampling; and ReaRec's progressive loss term.
//! (The context-aware token `sum_j softmax(a / tau_r)_j h_j` is built with the item
//! tokens in `decode`, as one batched product.)

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use rand_chacha::ChaCha8Rng;

use super::super::config::{ReasoningPolicy, ReasoningToken};
use super::super::layers::Mlp;

/// The parameters reasoning tokens add to the decoder.
#[derive(Debug, Clone)]
pub(super) struct ReasoningTokens {
    /// STREAM-Rec's refinement `r = o + MLP(o)`.
    refine: Option<Mlp>,
    /// ReaRec's reasoning position embeddings `[K_pre, d]`.
    positions: Option<Tensor>,
    /// LatentR3's `sigma`.
    latent_noise: f64,
}

impl ReasoningTokens {
    pub fn new(policy: &ReasoningPolicy, d: usize, vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            refine: (policy.token == ReasoningToken::Residual && policy.max_steps > 0)
                .then(|| Mlp::new(d, d, d, vb.pp("reasoning.refine")))
                .transpose()?,
            positions: (policy.reasoning_positions && policy.max_steps > 0)
                .then(|| {
                    vb.get_with_hints(
                        (policy.max_steps, d),
                        "reasoning.positions.table",
                        candle_nn::Init::Randn {
                            mean: 0.0,
                            stdev: 1.0,
                        },
                    )
                })
                .transpose()?,
            latent_noise: policy.latent_noise,
        })
    }

    /// Whether a token needs building here beyond the context-aware product.
    pub fn has_positions(&self) -> bool {
        self.positions.is_some()
    }

    /// The reasoning token built from the decoder output `o` (plain or residual), with
    /// ReaRec's position embedding of reasoning step `steps[r]` added, and LatentR3's
    /// exploration noise while sampling; with noise, also each row's log-density of its
    /// sampled token ([`Self::explore`]).
    pub fn latent_token(
        &self,
        o: &Tensor,
        steps: &[u32],
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mut r = match &self.refine {
            Some(refine) => (o + refine.forward(o)?)?,
            None => o.clone(),
        };
        if let Some(table) = &self.positions {
            let last = table.dim(0)?.saturating_sub(1) as u32;
            let idx: Vec<u32> = steps.iter().map(|&k| k.min(last)).collect();
            let idx = Tensor::from_vec(idx, steps.len(), o.device())?;
            r = (r + table.index_select(&idx, 0)?)?;
        }
        self.explore(&r, rng)
    }

    /// LatentR3's exploration while sampling: the latent token is an action drawn from
    /// `N(mu, sigma^2 I)` around the token `mu` the model builds. The decode continues
    /// from the sample as a fixed value, and its log-density `-|r - mu|^2 / (2
    /// sigma^2)` (constants dropped) `[b]` is returned, so RL credits the token's mean
    /// through the Gaussian's score as the paper's modified GRPO does, not through the
    /// items decoded after it.
    fn explore(
        &self,
        mu: &Tensor,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let sigma = self.latent_noise;
        match rng {
            Some(rng) if sigma > 0.0 => {
                let noise: Vec<f32> = (0..mu.elem_count())
                    .map(|_| (sigma * crate::random::normal(rng)) as f32)
                    .collect();
                let r = (mu + Tensor::from_vec(noise, mu.shape(), mu.device())?)?.detach();
                let density = ((&r - mu)?.sqr()?.sum(D::Minus1)? / (-2.0 * sigma * sigma))?;
                Ok((r, Some(density)))
            }
            _ => Ok((mu.clone(), None)),
        }
    }
}

/// ReaRec's progressive loss term: at reasoning step `k` of each reasoning row, the log
/// probability of the row's next target under `softmax(a / (tau_0 decay^(k+1)))` — the
/// temperature falls as reasoning goes on, so later steps are pushed to be sharper.
pub(super) fn progressive_log_prob(
    masked: &Tensor,
    step: &[u32],
    reasoning: &[u8],
    target: impl Fn(usize) -> Option<usize>,
    tau0: f64,
    decay: f64,
) -> Result<Tensor> {
    let b = step.len();
    let mut inv_tau = vec![1f32; b];
    let mut index = vec![0u32; b];
    let mut weight = vec![0f32; b];
    for row in 0..b {
        if let (1, Some(j)) = (reasoning[row], target(row)) {
            inv_tau[row] = (1.0 / (tau0 * decay.powi(step[row] as i32 + 1))) as f32;
            index[row] = j as u32;
            weight[row] = 1.0;
        }
    }
    let device = masked.device();
    let scaled = masked.broadcast_mul(&Tensor::from_vec(inv_tau, (b, 1), device)?)?;
    let lp = candle_nn::ops::log_softmax(&scaled, D::Minus1)?
        .gather(&Tensor::from_vec(index, (b, 1), device)?, 1)?
        .squeeze(1)?;
    lp * Tensor::from_vec(weight, b, device)?
}
