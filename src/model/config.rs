//! Hyper-parameters of the evaluator and the generator, with the spec's meaning. They
//! are pipeline sections (`[evaluator]`, `[generator]`) and are stored in every bundle.

use serde::{Deserialize, Serialize};

/// The generator variants of the paper's ablation (spec §4 table). Each is a preset of
/// [`ReasoningConfig`]; all run through the one generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// B: no reasoning, temperature tau_0.
    Backbone,
    /// Entropy-gated reasoning with the plain token `r = o`.
    V1,
    /// Entropy-gated reasoning with the context-aware token.
    V2,
    /// v2 plus dynamic temperature (the full method, v3).
    Eglr,
    /// `K_pre` reasoning tokens before the first item, no gate (ReaRec / LatentR3 style).
    ReasonFirst,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Backbone => "backbone",
            Variant::V1 => "v1",
            Variant::V2 => "v2",
            Variant::Eglr => "eglr",
            Variant::ReasonFirst => "reason-first",
        }
    }

    pub const ALL: [Variant; 5] = [
        Variant::Backbone,
        Variant::V1,
        Variant::V2,
        Variant::Eglr,
        Variant::ReasonFirst,
    ];
}

/// When reasoning tokens are inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningMode {
    None,
    /// Spec §4 step 3: reason while `H > theta`, at most `K` tokens per item.
    EntropyGated,
    /// `K_pre` tokens before the first item, then never.
    ReasonFirst,
}

/// What a reasoning token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningToken {
    /// `r = o`: the decoder's own output fed back.
    Plain,
    /// `r = sum_j softmax(a / tau_r)_j h_j`.
    ContextAware,
}

/// The behaviour a [`Variant`] selects, resolved from [`GeneratorConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReasoningPolicy {
    pub mode: ReasoningMode,
    pub token: ReasoningToken,
    /// Entropy threshold `theta` (nats).
    pub theta: f64,
    /// Max reasoning tokens per item `K` (or `K_pre` for reason-first).
    pub max_steps: usize,
    /// Temperature of the context-aware token's weights `tau_r`.
    pub tau_reason: f64,
    /// Temperature of the recommendation `tau_c`.
    pub tau_recommend: f64,
    /// Base temperature of the entropy gate `tau_0`.
    pub tau0: f64,
}

/// Architecture and reasoning hyper-parameters of the generator (spec §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    pub variant: Variant,
    /// Embedding size `e` of every sparse field (and of the dense projection).
    pub embedding_dim: usize,
    pub d_model: usize,
    pub heads: usize,
    /// Decoder layers (1 in the paper).
    pub layers: usize,
    pub ffn_dim: usize,
    /// Entropy threshold `theta` in nats (spec eq. 13-14).
    pub theta: f64,
    /// Max reasoning tokens per item `K`.
    pub max_reasoning_steps: usize,
    /// Reasoning tokens before the first item for `reason-first` (`K_pre`).
    pub reason_first_steps: usize,
    /// `reason-first` uses the context-aware token (else the plain one).
    pub reason_first_context_token: bool,
    /// Base temperature `tau_0`.
    pub tau0: f64,
    /// Dynamic temperature factor `alpha`: `tau_r = alpha tau_0`, `tau_c = tau_0 / alpha`.
    pub alpha: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            variant: Variant::Eglr,
            embedding_dim: 16,
            d_model: 64,
            heads: 4,
            layers: 1,
            ffn_dim: 128,
            theta: 1.0,
            max_reasoning_steps: 3,
            reason_first_steps: 3,
            reason_first_context_token: true,
            tau0: 1.0,
            alpha: 1.5,
        }
    }
}

impl GeneratorConfig {
    /// The reasoning behaviour of the configured variant.
    pub fn policy(&self) -> ReasoningPolicy {
        let base = ReasoningPolicy {
            mode: ReasoningMode::EntropyGated,
            token: ReasoningToken::ContextAware,
            theta: self.theta,
            max_steps: self.max_reasoning_steps,
            tau_reason: self.tau0,
            tau_recommend: self.tau0,
            tau0: self.tau0,
        };
        match self.variant {
            Variant::Backbone => ReasoningPolicy {
                mode: ReasoningMode::None,
                max_steps: 0,
                ..base
            },
            Variant::V1 => ReasoningPolicy {
                token: ReasoningToken::Plain,
                ..base
            },
            Variant::V2 => base,
            Variant::Eglr => ReasoningPolicy {
                tau_reason: self.alpha * self.tau0,
                tau_recommend: self.tau0 / self.alpha,
                ..base
            },
            Variant::ReasonFirst => ReasoningPolicy {
                mode: ReasoningMode::ReasonFirst,
                token: if self.reason_first_context_token {
                    ReasoningToken::ContextAware
                } else {
                    ReasoningToken::Plain
                },
                max_steps: self.reason_first_steps,
                ..base
            },
        }
    }

    /// Longest token sequence for lists of `list_len` (spec §4: `1 + L (K + 1)`).
    pub fn max_sequence(&self, list_len: usize) -> usize {
        let p = self.policy();
        match p.mode {
            ReasoningMode::None => 1 + list_len,
            ReasoningMode::EntropyGated => 1 + list_len * (p.max_steps + 1),
            ReasoningMode::ReasonFirst => 1 + p.max_steps + list_len,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        check_heads("generator", self.d_model, self.heads)?;
        if self.embedding_dim == 0 || self.layers == 0 || self.ffn_dim == 0 {
            return Err(("generator.embedding_dim", "sizes must be at least 1".into()));
        }
        if !(self.tau0 > 0.0 && self.tau0.is_finite() && self.alpha > 0.0 && self.alpha.is_finite())
        {
            return Err((
                "generator.tau0",
                "tau0 and alpha must be finite and > 0".into(),
            ));
        }
        if self.theta.is_nan() {
            return Err((
                "generator.theta",
                "must be a number (inf switches reasoning off)".into(),
            ));
        }
        Ok(())
    }
}

/// The evaluator's architecture and loss weight (spec §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluatorConfig {
    pub embedding_dim: usize,
    pub d_model: usize,
    pub heads: usize,
    /// Encoder layers `N_e`.
    pub layers: usize,
    pub ffn_dim: usize,
    /// Size of the sinusoidal position embedding concatenated to `x_i`.
    pub position_dim: usize,
    /// Weight `lambda` of the WLR term (spec eq. 15-17).
    pub wlr_weight: f64,
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        Self {
            embedding_dim: 16,
            d_model: 64,
            heads: 4,
            layers: 2,
            ffn_dim: 128,
            position_dim: 16,
            wlr_weight: 0.1,
        }
    }
}

impl EvaluatorConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        check_heads("evaluator", self.d_model, self.heads)?;
        if !self.position_dim.is_multiple_of(2) {
            return Err((
                "evaluator.position_dim",
                "must be even (sin/cos pairs)".into(),
            ));
        }
        if !(self.wlr_weight >= 0.0 && self.wlr_weight.is_finite()) {
            return Err(("evaluator.wlr_weight", "must be finite and >= 0".into()));
        }
        Ok(())
    }
}

/// `d_model` must split evenly into `heads` attention heads.
fn check_heads(
    section: &'static str,
    d_model: usize,
    heads: usize,
) -> Result<(), (&'static str, String)> {
    if d_model == 0 || heads == 0 || !d_model.is_multiple_of(heads) {
        let key = if section == "generator" {
            "generator.d_model"
        } else {
            "evaluator.d_model"
        };
        return Err((
            key,
            format!("{d_model} must be a positive multiple of {section}.heads = {heads}"),
        ));
    }
    Ok(())
}
