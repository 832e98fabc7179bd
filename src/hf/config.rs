//! `config.json` of a Hugging Face Llama or Mixtral model, and its translation to and from
//! moegrad's `[model]` table. Each direction refuses, by the key's name, whatever the other
//! side cannot represent, so a model is never exported or imported wrong: moegrad has no
//! grouped-query attention, biases or scaled rotary positions; Llama's MLP is SwiGLU;
//! Mixtral's layers are all MoE, softmax-routed with the top-k weights renormalised,
//! dropless, with SwiGLU experts and no shared ones.

use anyhow::{anyhow, bail, Result};
use moegrad_models::{Balance, FfnActivation, FfnKind, ModelConfig, MoeConfig, RouterScore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The two architectures moegrad reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Dense SwiGLU layers (`LlamaForCausalLM`).
    Llama,
    /// Every layer a top-k mixture of SwiGLU experts (`MixtralForCausalLM`).
    Mixtral,
}

impl Architecture {
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mixtral => "mixtral",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mixtral => "MixtralForCausalLM",
        }
    }
}

/// The keys of `config.json` that decide the weights and the function. Unknown keys (token
/// ids, dtype, generation settings) are ignored; the ones that would change the function
/// and that moegrad cannot honour are read so that they can be refused.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct HfConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "silu")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// transformers 5 keeps the rotary settings here (`rope_theta`, `rope_type`).
    #[serde(default)]
    pub rope_parameters: Option<Value>,
    #[serde(default)]
    pub rope_scaling: Option<Value>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub num_local_experts: Option<usize>,
    #[serde(default)]
    pub num_experts_per_tok: Option<usize>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
}

/// An f32 as the f64 of its shortest decimal form (1e-5, not 9.99999974e-6).
fn shortest(v: f32) -> f64 {
    v.to_string().parse().expect("an f32's decimal form parses")
}

fn silu() -> String {
    "silu".into()
}

/// A key of moegrad's config whose value no Hugging Face architecture represents.
fn unexportable(key: &str, value: impl std::fmt::Display, why: &str) -> anyhow::Error {
    anyhow!("cannot export {key} = {value} to Hugging Face: {why}")
}

impl HfConfig {
    /// The architecture that represents `model`, or a refusal naming the key that no
    /// architecture represents.
    pub fn architecture_of(model: &ModelConfig) -> Result<Architecture> {
        let kinds = model.layer_kinds();
        if kinds.iter().all(|k| *k == FfnKind::Dense) {
            if model.dense.activation != FfnActivation::Swiglu {
                return Err(unexportable(
                    "model.dense.activation",
                    "\"gelu\"",
                    "Llama's MLP is SwiGLU, and no transformers architecture has RMSNorm, rotary positions and an ungated GELU MLP",
                ));
            }
            return Ok(Architecture::Llama);
        }
        if kinds.contains(&FfnKind::Dense) {
            return Err(unexportable("model.ffn_layers", format!("{:?}", kinds.iter().map(|k| k.name()).collect::<Vec<_>>()), "Mixtral's layers are all MoE"));
        }
        if kinds.contains(&FfnKind::Default) {
            return Err(unexportable(
                "model.ffn",
                "\"default\"",
                "a Default MoE adds each skipped expert's default vector (model state) to the forward pass, which no transformers architecture computes; train a TopK model (or DenseMixer, whose forward pass is TopK's) to export it",
            ));
        }
        let m = &model.moe;
        if m.activation != FfnActivation::Swiglu {
            return Err(unexportable("model.moe.activation", "\"gelu\"", "Mixtral's experts are SwiGLU"));
        }
        if m.score != RouterScore::Softmax {
            return Err(unexportable("model.moe.score", "\"sigmoid\"", "Mixtral routes by softmax"));
        }
        if !m.renormalize {
            return Err(unexportable("model.moe.renormalize", false, "Mixtral renormalises the chosen top-k probabilities to sum to 1"));
        }
        if m.balance == Balance::Bias {
            return Err(unexportable("model.moe.balance", "\"bias\"", "the selection bias changes which experts a token runs, and Mixtral has none"));
        }
        if let Some(f) = m.capacity_factor {
            return Err(unexportable("model.moe.capacity_factor", f, "Mixtral is dropless"));
        }
        if m.shared_experts > 0 {
            return Err(unexportable("model.moe.shared_experts", m.shared_experts, "Mixtral has no shared experts"));
        }
        Ok(Architecture::Mixtral)
    }

    /// The `config.json` for `model` (refused as `architecture_of` refuses), `dtype` its
    /// weights' type (`"float32"`, `"float16"`).
    pub fn json_for(model: &ModelConfig, dtype: &str) -> Result<Value> {
        let arch = Self::architecture_of(model)?;
        let mut config = json!({
            "architectures": [arch.class()],
            "model_type": arch.model_type(),
            "vocab_size": model.vocab_size,
            "hidden_size": model.d_model,
            "intermediate_size": match arch { Architecture::Llama => model.dense_hidden(), Architecture::Mixtral => model.expert_hidden() },
            "num_hidden_layers": model.layers,
            "num_attention_heads": model.heads,
            "num_key_value_heads": model.heads,
            "head_dim": model.head_dim(),
            "hidden_act": "silu",
            "max_position_embeddings": model.context,
            "rms_norm_eps": shortest(model.norm_eps),
            "rope_theta": model.rope_base,
            "rope_parameters": {"rope_type": "default", "rope_theta": model.rope_base},
            "tie_word_embeddings": model.tied_embeddings,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "use_cache": true,
            "torch_dtype": dtype,
            "dtype": dtype,
        });
        if arch == Architecture::Llama {
            config["mlp_bias"] = json!(false);
        } else {
            config["num_local_experts"] = json!(model.moe.experts);
            config["num_experts_per_tok"] = json!(model.moe.top_k);
            config["router_aux_loss_coef"] = json!(shortest(model.moe.aux_loss_coef));
            config["router_jitter_noise"] = json!(0.0);
            config["output_router_logits"] = json!(false);
            config["sliding_window"] = Value::Null;
        }
        Ok(config)
    }

    /// Reads `config.json`'s text.
    pub fn parse(text: &str) -> Result<HfConfig> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| anyhow!("{e}"))
    }

    pub fn architecture(&self) -> Result<Architecture> {
        match self.model_type.as_str() {
            "llama" => Ok(Architecture::Llama),
            "mixtral" => Ok(Architecture::Mixtral),
            other => bail!("model_type = {other:?}: moegrad reads \"llama\" and \"mixtral\""),
        }
    }

    /// The rotary base, wherever this transformers version keeps it.
    fn rope_base(&self) -> Result<f64> {
        let nested = self.rope_parameters.as_ref().and_then(|p| p.get("rope_theta")).and_then(Value::as_f64);
        let base = nested.or(self.rope_theta).unwrap_or(10_000.0);
        let kind = self.rope_parameters.as_ref().and_then(|p| p.get("rope_type")).and_then(Value::as_str).unwrap_or("default");
        if kind != "default" || self.rope_scaling.as_ref().is_some_and(|s| !s.is_null()) {
            bail!("rope_type = {kind:?} / rope_scaling = {}: moegrad has plain rotary positions only", self.rope_scaling.clone().unwrap_or(Value::Null));
        }
        Ok(base)
    }

    /// The moegrad model this config describes, or a refusal naming the key moegrad
    /// cannot honour. `MoeConfig`'s training-only keys (losses' weights) keep their
    /// defaults; the routing is Mixtral's.
    pub fn to_model(&self) -> Result<ModelConfig> {
        let arch = self.architecture()?;
        let heads = self.num_attention_heads;
        if let Some(kv) = self.num_key_value_heads.filter(|&kv| kv != heads) {
            bail!("num_key_value_heads = {kv} with num_attention_heads = {heads}: grouped-query attention, which moegrad lacks");
        }
        if self.hidden_act != "silu" {
            bail!("hidden_act = {:?}: moegrad's gated MLP is SwiGLU (silu)", self.hidden_act);
        }
        for (key, on) in [("attention_bias", self.attention_bias), ("mlp_bias", self.mlp_bias)] {
            if on {
                bail!("{key} = true: moegrad's projections have no biases");
            }
        }
        if let Some(w) = self.sliding_window.filter(|&w| w < self.max_position_embeddings) {
            bail!("sliding_window = {w} (below max_position_embeddings = {}): moegrad's attention is over the whole context", self.max_position_embeddings);
        }
        let mut model = ModelConfig {
            vocab_size: self.vocab_size,
            d_model: self.hidden_size,
            layers: self.num_hidden_layers,
            heads,
            head_dim: self.head_dim.unwrap_or(0),
            context: self.max_position_embeddings,
            tied_embeddings: self.tie_word_embeddings,
            norm_eps: self.rms_norm_eps as f32,
            rope_base: self.rope_base()?,
            ..ModelConfig::default()
        };
        match arch {
            Architecture::Llama => {
                model.ffn = FfnKind::Dense;
                model.dense.hidden = self.intermediate_size;
                model.dense.activation = FfnActivation::Swiglu;
            }
            Architecture::Mixtral => {
                let experts = self.num_local_experts.ok_or_else(|| anyhow!("a mixtral config needs num_local_experts"))?;
                let top_k = self.num_experts_per_tok.ok_or_else(|| anyhow!("a mixtral config needs num_experts_per_tok"))?;
                model.ffn = FfnKind::Topk;
                model.moe = MoeConfig {
                    experts,
                    top_k,
                    expert_hidden: self.intermediate_size,
                    activation: FfnActivation::Swiglu,
                    renormalize: true,
                    ..MoeConfig::default()
                };
            }
        }
        model.validate().map_err(|e| anyhow!("it makes an invalid moegrad model: {e}"))?;
        Ok(model)
    }
}

/// The keys that decide a model's weights and function, as moegrad names them, with their
/// values in `a` and `b` where the two differ (for refusals that name the key).
pub fn differing_keys(a: &ModelConfig, b: &ModelConfig) -> Vec<(String, String, String)> {
    let show = |c: &ModelConfig| {
        let m = &c.moe;
        vec![
            ("model.vocab_size", c.vocab_size.to_string()),
            ("model.d_model", c.d_model.to_string()),
            ("model.layers", c.layers.to_string()),
            ("model.heads", c.heads.to_string()),
            ("model.head_dim", c.head_dim().to_string()),
            ("model.tied_embeddings", c.tied_embeddings.to_string()),
            ("model.norm_eps", c.norm_eps.to_string()),
            ("model.rope_base", c.rope_base.to_string()),
            ("model.ffn_layers", format!("{:?}", c.layer_kinds().iter().map(|k| k.name()).collect::<Vec<_>>())),
            ("model.dense.hidden", if c.has_moe() { "-".into() } else { c.dense_hidden().to_string() }),
            ("model.dense.activation", if c.has_moe() { "-".into() } else { format!("{:?}", c.dense.activation) }),
            ("model.moe.experts", if c.has_moe() { m.experts.to_string() } else { "-".into() }),
            ("model.moe.top_k", if c.has_moe() { m.top_k.to_string() } else { "-".into() }),
            ("model.moe.expert_hidden", if c.has_moe() { c.expert_hidden().to_string() } else { "-".into() }),
            ("model.moe.activation", if c.has_moe() { format!("{:?}", m.activation) } else { "-".into() }),
            ("model.moe.renormalize", if c.has_moe() { m.renormalize.to_string() } else { "-".into() }),
        ]
    };
    show(a).into_iter().zip(show(b)).filter(|((_, x), (_, y))| x != y).map(|((key, x), (_, y))| (key.to_string(), x, y)).collect()
}
