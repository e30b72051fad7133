//! Hyper-parameters of the evaluator and the generator, with the spec's meaning. They
//! are pipeline sections (`[evaluator]`, `[generator]`) and are stored in every bundle.

use serde::{Deserialize, Serialize};

use crate::check::Problem;

impl From<Variant> for String {
    fn from(v: Variant) -> Self {
        v.name()
    }
}

impl TryFrom<String> for Variant {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        <Variant as clap::ValueEnum>::from_str(&name, false).map_err(|_| {
            let names: Vec<String> = <Variant as clap::ValueEnum>::value_variants()
                .iter()
                .map(|v| v.name())
                .collect();
            format!(
                "unknown variant `{name}`, expected one of {}",
                names.join(", ")
            )
        })
    }
}

/// Every re-ranker the crate trains: the generator variants of the paper's ablation
/// (spec §4 table), the paper's baselines (Table 2) and the EGLR module inside three of
/// them (Table 3). Each is a preset of one of two models — the pointer [`Generator`]
/// (architecture, reasoning policy and training recipe are derived below) or the
/// score-and-sort [`Scorer`] — never a copy of either.
///
/// [`Generator`]: super::Generator
/// [`Scorer`]: super::Scorer
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(into = "String", try_from = "String")]
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
    /// PRM (Pei et al., arXiv 1904.06813): a Transformer over the initial list with
    /// learned positions scores every item; sorted by score. The paper adds a
    /// pre-trained personalisation vector per item; ours has the user's features in every
    /// item's input instead.
    Prm,
    /// DLCM (Ai et al., arXiv 1804.05936): a GRU over the initial list encodes its local
    /// context; items are scored against the final state and sorted; attention-rank
    /// loss. Simplified: one GRU layer, the scoring function `w . (o_i * tanh(W s_n))`.
    Dlcm,
    /// Seq2Slate (Bello et al., arXiv 1810.02019): a GRU pointer network trained
    /// supervised, per step toward the clicked items (teacher forcing in pool order).
    /// The original uses an LSTM and also a REINFORCE variant; ours is the supervised one.
    Seq2slate,
    /// EG-Rerank (Huzhang et al., arXiv 2003.11941): a GRU pointer generator trained with
    /// PPO (clipped ratio) against the evaluator. Simplified: the advantage is
    /// group-normalised (G samples per pool) instead of a learned critic, the ratio is
    /// per list, and the paper's discriminator (which keeps exploration near the logged
    /// data) is left out.
    EgRerank,
    /// CMR (Chen et al., arXiv 2306.05118): DeepSets encoder whose weights a hypernetwork
    /// generates from a preference vector, pointer decoder, RL against the evaluator.
    /// Simplified: the hypernetwork generates the DeepSets `phi` layer; the preference is
    /// accuracy-only by default (there is no diversity reward to trade off).
    Cmr,
    /// LAST (Wang et al., arXiv 2406.14004): at inference, a gradient step on the
    /// encoder states along the generator's policy-gradient loss (rewards from the
    /// evaluator, never labels), several step sizes decoded, the evaluator keeps the best.
    /// The paper perturbs the generator's parameters per request; we step the encoder
    /// states (pool embeddings and DeepSets context), with one gradient evaluation per
    /// request and step sizes `test_time_step * 1..=test_time_candidates`.
    Last,
    /// ReaRec PRL (Tang et al., arXiv 2503.22675): the last hidden state fed back `K_pre`
    /// times with learned reasoning position embeddings before the first item; each
    /// reasoning step is trained toward the first clicked item with a progressively
    /// lower temperature. Supervised only, as in the paper.
    Rearec,
    /// LatentR3 (Zhang et al., arXiv 2505.19092): one attention-pooled latent reasoning
    /// token before the list, explored with Gaussian noise during RL; SFT then the
    /// paper's modified GRPO ([`Rl::LatentGrpo`]: batch-level advantages, the sampled
    /// latent token as an action with its Gaussian log-density). Simplified: the
    /// pooling (the paper's LatentRATT layer) is the pointer attention over the pool
    /// (the context-aware token), and the RL reward is the evaluator's continuous
    /// reward of the list, not the paper's likelihood of a target item (a re-ranker's
    /// list has no single target; the supervised stage already trains on the clicks).
    Latentr3,
    /// STREAM-Rec (Zhang et al., arXiv 2504.09627): `K_pre` residual refinement steps
    /// `r = o + MLP(o)` of the decoder state before the list; SFT then GRPO. The paper's
    /// three stages become two (its middle stage distils explicit reasoning traces we do
    /// not have).
    StreamRec,
    /// EG-Rerank's generator with the EGLR module (entropy gate, context-aware token,
    /// dynamic temperature), PPO as EG-Rerank (paper Table 3).
    #[value(name = "eg-rerank+eglr")]
    EgRerankEglr,
    /// CMR's generator with the EGLR module (paper Table 3).
    #[value(name = "cmr+eglr")]
    CmrEglr,
    /// LAST (with its test-time update) with the EGLR module (paper Table 3).
    #[value(name = "last+eglr")]
    LastEglr,
    /// LARES (Liu et al., arXiv 2505.16865): depth-recurrent latent reasoning. One
    /// Transformer block refines every candidate's encoding `generator.recurrent_depth`
    /// times before decoding, `T_i = C(LN(T_{i-1} + H))`, so depth grows without
    /// parameters; trained in two phases: self-supervised pre-training with step-level
    /// and trajectory-level alignment, then RL (GRPO). Simplified: `T_0 = 0` (LARES
    /// draws it from a Gaussian; ours keeps serving deterministic per request, RL
    /// explores through the sampled lists); the alignment objectives are our reading of
    /// the paper for a re-ranker (see `train::supervised`); the decoder is the
    /// backbone's (no reasoning tokens).
    Lares,
    /// LARES's recurrent refinement of the candidates with EGLR's entropy-gated
    /// reasoning in the decoder.
    #[value(name = "lares+eglr")]
    LaresEglr,
}

impl Variant {
    /// Its one name, on the command line, in pipeline files and bundles, and in reports:
    /// clap's kebab-case of the variant, or its `#[value(name)]`.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }

    /// The ablation of spec §4 (`eglr study` default).
    pub const ABLATION: [Variant; 5] = [
        Variant::Backbone,
        Variant::V1,
        Variant::V2,
        Variant::Eglr,
        Variant::ReasonFirst,
    ];

    /// The paper's Tables 2 and 3 (`eglr study --suite paper`): EGLR first (it trains
    /// the evaluator), then the nine baselines, then the transfer variants.
    pub const PAPER: [Variant; 13] = [
        Variant::Eglr,
        Variant::Prm,
        Variant::Dlcm,
        Variant::Seq2slate,
        Variant::EgRerank,
        Variant::Cmr,
        Variant::Last,
        Variant::Rearec,
        Variant::Latentr3,
        Variant::StreamRec,
        Variant::EgRerankEglr,
        Variant::CmrEglr,
        Variant::LastEglr,
    ];

    /// The neighbouring papers' variants (issue 17) beyond the paper's tables: LARES, and
    /// LARES with the EGLR module.
    pub const NEIGHBOURS: [Variant; 2] = [Variant::Lares, Variant::LaresEglr];

    /// The score-and-sort model this variant is, if it is one.
    pub fn scorer(self) -> Option<ScorerKind> {
        match self {
            Variant::Prm => Some(ScorerKind::Prm),
            Variant::Dlcm => Some(ScorerKind::Dlcm),
            _ => None,
        }
    }

    /// The backbone of the generator: decoder, encoder, test-time update.
    pub fn architecture(self) -> Architecture {
        let transformer = Architecture {
            decoder: DecoderKind::Transformer,
            hyper_encoder: false,
            test_time_update: false,
            recurrent_core: false,
        };
        match self {
            Variant::Seq2slate | Variant::EgRerank | Variant::EgRerankEglr => Architecture {
                decoder: DecoderKind::Gru,
                ..transformer
            },
            Variant::Cmr | Variant::CmrEglr => Architecture {
                hyper_encoder: true,
                ..transformer
            },
            Variant::Last | Variant::LastEglr => Architecture {
                test_time_update: true,
                ..transformer
            },
            Variant::Lares | Variant::LaresEglr => Architecture {
                recurrent_core: true,
                ..transformer
            },
            _ => transformer,
        }
    }

    /// How the model is trained after the evaluator.
    pub fn recipe(self) -> Recipe {
        let rl = |rl| Recipe {
            supervised: false,
            rl: Some(rl),
        };
        match self {
            Variant::Prm | Variant::Dlcm | Variant::Seq2slate | Variant::Rearec => Recipe {
                supervised: true,
                rl: None,
            },
            Variant::EgRerank | Variant::EgRerankEglr => rl(Rl::Ppo),
            Variant::Latentr3 => Recipe {
                supervised: true,
                rl: Some(Rl::LatentGrpo),
            },
            // LARES's two phases: the supervised stage is its self-supervised
            // pre-training (with the alignment objectives), then RL.
            Variant::Lares | Variant::LaresEglr => Recipe {
                supervised: true,
                rl: Some(Rl::Grpo),
            },
            Variant::StreamRec => Recipe {
                supervised: true,
                rl: Some(Rl::Grpo),
            },
            _ => rl(Rl::Grpo),
        }
    }
}

/// The two score-and-sort baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScorerKind {
    Prm,
    Dlcm,
}

/// The generator's decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderKind {
    /// Causal Transformer with a KV cache (spec §4).
    Transformer,
    /// A GRU cell: its state is the whole cache (EG-Rerank, Seq2Slate).
    Gru,
}

/// The generator's backbone, derived from the [`Variant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Architecture {
    pub decoder: DecoderKind,
    /// CMR: the DeepSets `phi` weights come from a hypernetwork of the preference.
    pub hyper_encoder: bool,
    /// LAST: a gradient step on the encoder states at inference.
    pub test_time_update: bool,
    /// LARES: the candidates' encodings refined by one recurrent block.
    pub recurrent_core: bool,
}

/// Reinforcement learning against the frozen evaluator (a variant's own, or
/// `training.rl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Rl {
    /// Group-normalised advantages, one on-policy update per batch (spec §5).
    Grpo,
    /// PPO: the sampled lists are re-scored for `ppo_epochs` clipped updates.
    Ppo,
    /// DAPO (Yu et al., arXiv 2503.14476), the RL of GR2 (arXiv 2602.07774):
    /// decoupled clip bounds `[1 - eps_low, 1 + eps_high]` on per-position ratios, a
    /// token-level loss (every recommended position weighs the same, whatever list it
    /// is in), and dynamic sampling: groups whose lists all get the same reward carry no
    /// signal and are dropped, more pools sampled to refill the batch. Simplified: a
    /// bounded number of refill rounds, and the KL penalty kept where the pipeline sets
    /// one (DAPO drops it).
    Dapo,
    /// LatentR3's modified GRPO (Zhang et al., arXiv 2505.19092): advantages normalised
    /// over the whole batch instead of per group (`(R - mean_batch) / std_batch`), so
    /// small groups still carry a baseline; with LatentR3's noisy latent token, that
    /// token is part of the action (its Gaussian log-density joins the list's). The
    /// paper's reward is the target item's likelihood; ours is the evaluator's
    /// continuous reward of the list, as for every RL recipe here.
    #[value(name = "latent-grpo")]
    #[serde(rename = "latent-grpo")]
    LatentGrpo,
}

/// Training after the evaluator: a supervised stage on logged clicks, then RL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    pub supervised: bool,
    pub rl: Option<Rl>,
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
    /// `r = o + MLP(o)`: a residual refinement of the decoder state (STREAM-Rec).
    Residual,
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
    /// Learned reasoning position embeddings are added to reasoning tokens (ReaRec).
    pub reasoning_positions: bool,
    /// Std of the Gaussian noise added to reasoning tokens while sampling (LatentR3).
    pub latent_noise: f64,
    /// Reasoning step `k` is trained toward the first target at temperature
    /// `tau_0 * decay^(k+1)` (ReaRec's progressive loss); `None`: no such term.
    pub progressive_decay: Option<f64>,
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
    /// Gaussian exploration noise on LatentR3's latent token (std).
    pub latent_noise: f64,
    /// ReaRec: temperature factor per reasoning step of the progressive loss (< 1).
    pub progressive_decay: f64,
    /// CMR: the preference vector (accuracy, diversity) its hypernetwork reads.
    pub preference: [f64; 2],
    /// LAST: step size of the test-time update (relative to the encoder states' RMS).
    pub test_time_step: f64,
    /// LAST: step sizes tried (`test_time_step * 1..=n`), besides no step.
    pub test_time_candidates: usize,
    /// LAST: lists sampled per request to estimate the test-time gradient.
    pub test_time_samples: usize,
    /// LARES: applications of the recurrent block to the candidates (reasoning depth;
    /// the parameters do not grow with it).
    pub recurrent_depth: usize,
    /// Generator-evaluator selection at inference (beyond the paper, as production
    /// re-rankers do): the evaluator scores the generated list and the upstream order,
    /// and the model's list is served only when it wins by the margin. Unset: the
    /// generated list is always served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<UpstreamMargin>,
}

/// When the generated list replaces the upstream order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamMargin {
    /// The model's list is served when its evaluator score exceeds the upstream list's
    /// by this share of the upstream score (`s_model > s_upstream * (1 + margin)`);
    /// otherwise the upstream order is.
    pub margin: f64,
    /// The evaluator score both lists are compared by.
    #[serde(default = "clicks")]
    pub reward: super::Reward,
}

fn clicks() -> super::Reward {
    super::Reward::Clicks
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
            latent_noise: 0.1,
            progressive_decay: 0.7,
            preference: [1.0, 0.0],
            test_time_step: 0.05,
            test_time_candidates: 3,
            test_time_samples: 4,
            recurrent_depth: 3,
            selection: None,
        }
    }
}

impl GeneratorConfig {
    /// The reasoning behaviour of the configured variant.
    pub fn policy(&self) -> ReasoningPolicy {
        let gated = ReasoningPolicy {
            mode: ReasoningMode::EntropyGated,
            token: ReasoningToken::ContextAware,
            theta: self.theta,
            max_steps: self.max_reasoning_steps,
            tau_reason: self.tau0,
            tau_recommend: self.tau0,
            tau0: self.tau0,
            reasoning_positions: false,
            latent_noise: 0.0,
            progressive_decay: None,
        };
        let none = ReasoningPolicy {
            mode: ReasoningMode::None,
            max_steps: 0,
            ..gated
        };
        let eglr = ReasoningPolicy {
            tau_reason: self.alpha * self.tau0,
            tau_recommend: self.tau0 / self.alpha,
            ..gated
        };
        let first = ReasoningPolicy {
            mode: ReasoningMode::ReasonFirst,
            max_steps: self.reason_first_steps,
            ..gated
        };
        match self.variant {
            Variant::Backbone
            | Variant::Prm
            | Variant::Dlcm
            | Variant::Seq2slate
            | Variant::EgRerank
            | Variant::Cmr
            | Variant::Last
            | Variant::Lares => none,
            Variant::V1 => ReasoningPolicy {
                token: ReasoningToken::Plain,
                ..gated
            },
            Variant::V2 => gated,
            Variant::Eglr
            | Variant::EgRerankEglr
            | Variant::CmrEglr
            | Variant::LastEglr
            | Variant::LaresEglr => eglr,
            Variant::ReasonFirst => ReasoningPolicy {
                token: if self.reason_first_context_token {
                    ReasoningToken::ContextAware
                } else {
                    ReasoningToken::Plain
                },
                ..first
            },
            Variant::Rearec => ReasoningPolicy {
                token: ReasoningToken::Plain,
                reasoning_positions: true,
                progressive_decay: Some(self.progressive_decay),
                ..first
            },
            Variant::Latentr3 => ReasoningPolicy {
                max_steps: 1,
                latent_noise: self.latent_noise,
                ..first
            },
            Variant::StreamRec => ReasoningPolicy {
                token: ReasoningToken::Residual,
                ..first
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

    pub(crate) fn validate(&self) -> Result<(), Problem> {
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
        if self.variant.architecture().recurrent_core && self.recurrent_depth == 0 {
            return Err((
                "generator.recurrent_depth",
                format!("{} needs at least 1 recurrent step", self.variant.name()),
            ));
        }
        if !(self.latent_noise >= 0.0 && self.latent_noise.is_finite()) {
            return Err(("generator.latent_noise", "must be finite and >= 0".into()));
        }
        if !(self.progressive_decay > 0.0 && self.progressive_decay <= 1.0) {
            return Err(("generator.progressive_decay", "must be in (0, 1]".into()));
        }
        if self.preference.iter().any(|p| !p.is_finite()) {
            return Err(("generator.preference", "must be finite".into()));
        }
        if !(self.test_time_step >= 0.0 && self.test_time_step.is_finite())
            || self.test_time_samples < 2
        {
            return Err((
                "generator.test_time_step",
                "test_time_step must be finite and >= 0 and test_time_samples >= 2".into(),
            ));
        }
        if self
            .selection
            .is_some_and(|s| !(s.margin.is_finite() && s.margin > -1.0))
        {
            return Err((
                "generator.selection.margin",
                "must be finite and > -1 (a share of the upstream score)".into(),
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
    /// Which encoder reads the list: the paper's bidirectional Transformer, the cascade
    /// evaluator that reads it as a user does, or a logistic click model (see
    /// [`EvaluatorKind`]).
    pub kind: EvaluatorKind,
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
    /// Beyond the paper: each position's input also carries the embedding of the item
    /// shown just above it, so adjacency effects (one item priming the next) are one
    /// layer away. Off reproduces spec §3 steps 1-2. The cascade kind always reads it.
    pub previous_item: bool,
    /// What picks the best epoch on the validation split.
    pub selection: EpochCriterion,
}

/// The evaluator's encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum EvaluatorKind {
    /// Spec §3: a bidirectional Transformer over the whole displayed list with
    /// sinusoidal positions, a `cls` token and a point-wise click head.
    #[default]
    Paper,
    /// Beyond the paper: the list read as a user reads it. Each position attends only to
    /// itself and the items above it (the click model of a cascade: a click depends on
    /// what was seen before, never after); its input carries generic list features
    /// derived from the feature spec (for every sparse item field, how many items above
    /// share this item's value, and a bilinear interaction of the previous item's value
    /// with this one); and the click probability factorises as
    /// `examination(position) x attractiveness(item, items above, user)` (PAL), so the
    /// position-relevance confound of logged orders stays in the examination term.
    Cascade,
    /// Beyond the paper: a logistic click model, the hand-featured floor for the
    /// Transformers. Its click logit adds a weight per position, each field's value,
    /// each item field x user field cross, the same-value counts of the items above, and
    /// the previous item's value x this one's (crosses factorised through the
    /// embeddings, as in a field-weighted factorisation machine). Reads only
    /// `embedding_dim` of this section; causal, explainable, fast.
    Logistic,
}

/// How the evaluator's best epoch is chosen on the validation split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochCriterion {
    /// The training loss (spec eq. 15-17), mostly per-item BCE of logged orders.
    Loss,
    /// Click log-loss on the validation split's exploration lists (shown in random
    /// order): the lists where order effects vary, so an evaluator that misreads them
    /// scores worse. Falls back to the loss when the split has no exploration list.
    ExplorationLogloss,
}

impl EvaluatorKind {
    /// The name in pipelines and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            EvaluatorKind::Paper => "paper",
            EvaluatorKind::Cascade => "cascade",
            EvaluatorKind::Logistic => "logistic",
        }
    }
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        Self {
            kind: EvaluatorKind::Paper,
            embedding_dim: 16,
            d_model: 64,
            heads: 4,
            layers: 2,
            ffn_dim: 128,
            position_dim: 16,
            wlr_weight: 0.1,
            previous_item: false,
            selection: EpochCriterion::Loss,
        }
    }
}

impl EvaluatorConfig {
    pub(crate) fn validate(&self) -> Result<(), Problem> {
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
fn check_heads(section: &'static str, d_model: usize, heads: usize) -> Result<(), Problem> {
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
