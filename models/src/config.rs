//! The model's configuration (the `[model]` table of a run's TOML file), with validation
//! that names the offending key.

use serde::{Deserialize, Serialize};

/// The feed-forward block of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FfnKind {
    /// One MLP for every token.
    Dense,
    /// Mixture of experts: each token runs its top-k experts, weighted by the router.
    Topk,
    /// TopK plus, for the experts a token skipped, their running default outputs, so the
    /// router gets a gradient for every expert (Default MoE).
    Default,
    /// Every expert runs on every token: the output is TopK's, and the router's gradient
    /// comes from all experts' true outputs (a straight-through estimator, DenseMixer).
    /// The exact-gradient reference the Default MoE approximates, at dense cost.
    Densemixer,
}

impl FfnKind {
    pub fn name(self) -> &'static str {
        match self {
            FfnKind::Dense => "dense",
            FfnKind::Topk => "topk",
            FfnKind::Default => "default",
            FfnKind::Densemixer => "densemixer",
        }
    }

    pub fn is_moe(self) -> bool {
        self != FfnKind::Dense
    }
}

impl std::str::FromStr for FfnKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dense" => Ok(FfnKind::Dense),
            "topk" => Ok(FfnKind::Topk),
            "default" => Ok(FfnKind::Default),
            "densemixer" => Ok(FfnKind::Densemixer),
            other => Err(format!("unknown feed-forward kind {other:?} (expected dense, topk, default or densemixer)")),
        }
    }
}

/// Nonlinearity of MLPs and experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FfnActivation {
    Gelu,
    /// `silu(x W_gate) * (x W_up)`: the input projection is twice as wide.
    Swiglu,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenseConfig {
    /// Hidden width; 0 means 4 x d_model.
    pub hidden: usize,
    pub activation: FfnActivation,
}

impl Default for DenseConfig {
    fn default() -> Self {
        DenseConfig { hidden: 0, activation: FfnActivation::Swiglu }
    }
}

/// How the router scores experts (`model.moe.score`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouterScore {
    /// Softmax probabilities (Switch, Mixtral).
    #[default]
    Softmax,
    /// Each expert's sigmoid, the chosen k renormalised to sum to 1 (DeepSeek-V3).
    Sigmoid,
}

/// How expert loads are kept even (`model.moe.balance`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// The Switch load-balancing loss, weighted by `aux_loss_coef`.
    #[default]
    Aux,
    /// DeepSeek-V3's auxiliary-loss-free balancing: a per-expert bias added to the scores
    /// to choose experts (not to weigh them), moved after every step by
    /// `bias_rate * sign(mean load - load_e)`. Model state: saved, not trained.
    Bias,
    /// Nothing.
    None,
}

/// What stands in for the experts a token skipped in a Default MoE
/// (`model.moe.default_estimator`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultEstimator {
    /// An EMA (decay `beta`) of each expert's mean routed output: the Default MoE paper's.
    #[default]
    Ema,
    /// The current micro-batch's mean routed output of each expert (the authors' earlier
    /// code); an expert that got no tokens keeps its last mean.
    BatchMean,
    /// An EMA of each expert's routed outputs weighted by their router probabilities,
    /// which makes beta matter less (the paper's variant).
    ProbWeightedEma,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MoeConfig {
    pub experts: usize,
    pub top_k: usize,
    /// Each expert's hidden width; 0 means d_model.
    pub expert_hidden: usize,
    pub activation: FfnActivation,
    /// Weights = router probabilities renormalised over the chosen k (TopK only).
    pub renormalize: bool,
    /// EMA decay of the Default MoE's default vectors.
    pub beta: f32,
    /// Default MoE: add the default terms in the backward pass only (forward as TopK).
    pub default_backward_only: bool,
    /// Switch load-balancing loss weight (0 disables).
    pub aux_loss_coef: f32,
    /// Router z-loss weight (0 disables).
    pub z_loss_coef: f32,
    // The keys below are left out of a written config while they hold their defaults, so
    // that runs from before they existed keep their identity (and can be resumed).
    /// Experts every token runs, added to the routed output (DeepSeek-MoE).
    #[serde(skip_serializing_if = "is_default")]
    pub shared_experts: usize,
    /// Each shared expert's hidden width; 0 means the routed experts' width.
    #[serde(skip_serializing_if = "is_default")]
    pub shared_hidden: usize,
    #[serde(skip_serializing_if = "is_default")]
    pub score: RouterScore,
    #[serde(skip_serializing_if = "is_default")]
    pub balance: Balance,
    /// Step of the `bias` balancing's update.
    #[serde(skip_serializing_if = "is_default_bias_rate")]
    pub bias_rate: f32,
    /// Room per expert as a multiple of a balanced load, `ceil(factor * T * k / E)` slots;
    /// the lowest-scored slots beyond it are dropped (pass through the residual). Absent:
    /// dropless.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_factor: Option<f32>,
    #[serde(skip_serializing_if = "is_default")]
    pub default_estimator: DefaultEstimator,
}

/// DeepSeek-V3's update speed for the first 14.3T tokens.
pub const DEFAULT_BIAS_RATE: f32 = 0.001;

fn is_default_bias_rate(v: &f32) -> bool {
    *v == DEFAULT_BIAS_RATE
}

impl Default for MoeConfig {
    fn default() -> Self {
        MoeConfig {
            experts: 8,
            top_k: 2,
            expert_hidden: 0,
            activation: FfnActivation::Gelu,
            renormalize: false,
            beta: 0.9,
            default_backward_only: false,
            aux_loss_coef: 0.01,
            z_loss_coef: 0.001,
            shared_experts: 0,
            shared_hidden: 0,
            score: RouterScore::Softmax,
            balance: Balance::Aux,
            bias_rate: DEFAULT_BIAS_RATE,
            capacity_factor: None,
            default_estimator: DefaultEstimator::Ema,
        }
    }
}

/// The largest vocabulary a model may have (Llama 3's is 128,256).
pub const MAX_VOCAB: usize = 1 << 22;
/// The longest context a model may have. Limits like this one bound what a config read
/// from a file (or a damaged checkpoint) can make the model allocate before any check of
/// its tensors: the rotary table alone is `context x head_dim` floats.
pub const MAX_CONTEXT: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Token vocabulary; 0 means "whatever the tokenizer has".
    pub vocab_size: usize,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    /// Width of each head; 0 means d_model / heads.
    pub head_dim: usize,
    /// Longest sequence (positions of the rotary table).
    pub context: usize,
    pub tied_embeddings: bool,
    pub norm_eps: f32,
    pub rope_base: f64,
    /// Feed-forward kind of every layer, unless `ffn_layers` lists one per layer.
    pub ffn: FfnKind,
    pub ffn_layers: Vec<FfnKind>,
    pub dense: DenseConfig,
    pub moe: MoeConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            vocab_size: 0,
            d_model: 64,
            layers: 2,
            heads: 4,
            head_dim: 0,
            context: 64,
            tied_embeddings: true,
            norm_eps: 1e-5,
            rope_base: 10_000.0,
            ffn: FfnKind::Dense,
            ffn_layers: Vec::new(),
            dense: DenseConfig::default(),
            moe: MoeConfig::default(),
        }
    }
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        if self.head_dim == 0 {
            self.d_model / self.heads.max(1)
        } else {
            self.head_dim
        }
    }

    pub fn dense_hidden(&self) -> usize {
        if self.dense.hidden == 0 {
            4 * self.d_model
        } else {
            self.dense.hidden
        }
    }

    pub fn expert_hidden(&self) -> usize {
        if self.moe.expert_hidden == 0 {
            self.d_model
        } else {
            self.moe.expert_hidden
        }
    }

    /// Each shared expert's hidden width.
    pub fn shared_hidden(&self) -> usize {
        if self.moe.shared_hidden == 0 {
            self.expert_hidden()
        } else {
            self.moe.shared_hidden
        }
    }

    /// The feed-forward kind of each layer.
    pub fn layer_kinds(&self) -> Vec<FfnKind> {
        if self.ffn_layers.is_empty() {
            vec![self.ffn; self.layers]
        } else {
            self.ffn_layers.clone()
        }
    }

    pub fn has_moe(&self) -> bool {
        self.layer_kinds().iter().any(|k| k.is_moe())
    }

    /// Keys set away from their defaults that this model never reads (a `bias_rate`
    /// without `balance = "bias"`, a `default_estimator` without a Default MoE layer, MoE
    /// keys without an MoE layer), each with why: a setting that silently does nothing
    /// misleads whoever reads the config.
    pub fn unused_settings(&self) -> Vec<String> {
        let (moe, defaults) = (&self.moe, MoeConfig::default());
        let kinds = self.layer_kinds();
        let mut unused = Vec::new();
        if !self.has_moe() {
            if *moe != defaults {
                unused.push("model.moe.* is set, but no layer is a mixture of experts (model.ffn = \"dense\")".to_string());
            }
            return unused;
        }
        if !kinds.contains(&FfnKind::Dense) && self.dense != DenseConfig::default() {
            unused.push("model.dense.* is set, but no layer is dense".to_string());
        }
        if moe.balance != Balance::Bias && moe.bias_rate != defaults.bias_rate {
            unused.push(format!("model.moe.bias_rate = {} is read only with model.moe.balance = \"bias\"", moe.bias_rate));
        }
        if moe.balance != Balance::Aux && moe.aux_loss_coef != defaults.aux_loss_coef {
            unused.push(format!("model.moe.aux_loss_coef = {} is read only with model.moe.balance = \"aux\"", moe.aux_loss_coef));
        }
        if !kinds.contains(&FfnKind::Default) {
            for (key, set) in [
                ("default_estimator", moe.default_estimator != defaults.default_estimator),
                ("beta", moe.beta != defaults.beta),
                ("default_backward_only", moe.default_backward_only != defaults.default_backward_only),
            ] {
                if set {
                    unused.push(format!("model.moe.{key} is read only by the Default MoE (model.ffn = \"default\")"));
                }
            }
        }
        if moe.shared_experts == 0 && moe.shared_hidden != 0 {
            unused.push("model.moe.shared_hidden is read only with model.moe.shared_experts above 0".to_string());
        }
        unused
    }

    /// Checks every constraint, naming the key that breaks one.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("model.d_model", self.d_model),
            ("model.layers", self.layers),
            ("model.heads", self.heads),
            ("model.context", self.context),
            ("model.vocab_size", self.vocab_size),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(format!("{key} must be positive"));
            }
        }
        for (key, v, most) in [
            ("model.vocab_size", self.vocab_size, MAX_VOCAB),
            ("model.d_model", self.d_model, 1 << 16),
            ("model.layers", self.layers, 1 << 12),
            ("model.heads", self.heads, 1 << 12),
            ("model.head_dim", self.head_dim, 1 << 12),
            ("model.context", self.context, MAX_CONTEXT),
            ("model.dense.hidden", self.dense.hidden, 1 << 18),
            ("model.moe.expert_hidden", self.moe.expert_hidden, 1 << 18),
            ("model.moe.shared_experts", self.moe.shared_experts, 64),
            ("model.moe.shared_hidden", self.moe.shared_hidden, 1 << 18),
        ] {
            if v > most {
                return Err(format!("{key} = {v} exceeds {most}, the most moegrad accepts"));
            }
        }
        if !(self.rope_base > 1.0 && self.rope_base.is_finite()) {
            return Err(format!("model.rope_base = {} must be finite and above 1", self.rope_base));
        }
        if self.head_dim == 0 && !self.d_model.is_multiple_of(self.heads) {
            return Err(format!("model.heads = {} does not divide model.d_model = {} (set model.head_dim, or change either)", self.heads, self.d_model));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!("model.head_dim = {} must be even for rotary positions", self.head_dim()));
        }
        if !self.ffn_layers.is_empty() && self.ffn_layers.len() != self.layers {
            return Err(format!("model.ffn_layers lists {} kinds for model.layers = {}", self.ffn_layers.len(), self.layers));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return Err(format!("model.norm_eps = {} must be positive", self.norm_eps));
        }
        if self.has_moe() {
            let m = &self.moe;
            if m.experts == 0 || m.experts > 256 {
                return Err(format!("model.moe.experts = {} must be in 1..=256", m.experts));
            }
            if m.top_k == 0 || m.top_k > m.experts || m.top_k > 8 {
                return Err(format!("model.moe.top_k = {} must be in 1..={} (at most model.moe.experts = {} and 8)", m.top_k, m.experts.min(8), m.experts));
            }
            if !(0.0..1.0).contains(&m.beta) {
                return Err(format!("model.moe.beta = {} must be in [0, 1)", m.beta));
            }
            for (key, v) in [("model.moe.aux_loss_coef", m.aux_loss_coef), ("model.moe.z_loss_coef", m.z_loss_coef)] {
                if !(v >= 0.0 && v.is_finite()) {
                    return Err(format!("{key} = {v} must be finite and at least 0"));
                }
            }
            let has_default = self.layer_kinds().contains(&FfnKind::Default);
            if m.renormalize && has_default {
                return Err("model.moe.renormalize must be false when a layer's ffn is \"default\" (its weights are the router probabilities)".into());
            }
            if m.score == RouterScore::Sigmoid && has_default {
                return Err("model.moe.score = \"sigmoid\" renormalises the chosen weights, which a layer whose ffn is \"default\" cannot (its weights are the router probabilities); use \"softmax\"".into());
            }
            if !(m.bias_rate >= 0.0 && m.bias_rate.is_finite()) {
                return Err(format!("model.moe.bias_rate = {} must be finite and at least 0", m.bias_rate));
            }
            if let Some(f) = m.capacity_factor {
                if !(f > 0.0 && f.is_finite()) {
                    return Err(format!("model.moe.capacity_factor = {f} must be positive (leave it out for dropless routing)"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_the_model_never_reads_are_named() {
        let moe = |ffn, moe: MoeConfig| ModelConfig { ffn, moe, ..ModelConfig::default() };
        assert!(moe(FfnKind::Topk, MoeConfig::default()).unused_settings().is_empty());
        let bias_with_aux = moe(FfnKind::Topk, MoeConfig { bias_rate: 0.01, ..MoeConfig::default() });
        assert_eq!(bias_with_aux.unused_settings(), ["model.moe.bias_rate = 0.01 is read only with model.moe.balance = \"bias\""]);
        let estimator_on_topk = moe(FfnKind::Topk, MoeConfig { default_estimator: DefaultEstimator::BatchMean, ..MoeConfig::default() });
        assert!(estimator_on_topk.unused_settings()[0].contains("model.moe.default_estimator"));
        assert!(moe(FfnKind::Default, MoeConfig { default_estimator: DefaultEstimator::BatchMean, ..MoeConfig::default() }).unused_settings().is_empty());
        let bias_used = MoeConfig { balance: Balance::Bias, bias_rate: 0.01, ..MoeConfig::default() };
        assert!(moe(FfnKind::Topk, bias_used.clone()).unused_settings().is_empty());
        assert!(moe(FfnKind::Dense, bias_used).unused_settings()[0].contains("no layer is a mixture of experts"));
    }
}
