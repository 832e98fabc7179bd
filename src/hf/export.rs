//! `moegrad export --format hf`: a checkpoint as a folder that `transformers` loads with
//! `AutoModelForCausalLM.from_pretrained(DIR)`: `config.json`, `model.safetensors` (f32,
//! f16 or bf16) and the tokenizer (`tokenizer.json` for a Hugging Face or standard one).
//! The run's own tokenizer always travels too, as `moegrad-tokenizer.json`, so that
//! `moegrad eval --checkpoint hf:DIR` reads any export back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::durable::write_atomic;
use crate::hf::config::{Architecture, HfConfig};
use crate::hf::layout::pieces;
use crate::hf::tokenizer_json::tokenizer_json;
use crate::hf::{CONFIG_FILE, WEIGHTS_FILE};
use crate::train::checkpoint::Checkpoint;
use crate::train::tokenizer::TOKENIZER_FILE;

/// The type the exported weights are stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightType {
    F32,
    F16,
    Bf16,
}

impl WeightType {
    fn torch_name(self) -> &'static str {
        match self {
            WeightType::F32 => "float32",
            WeightType::F16 => "float16",
            WeightType::Bf16 => "bfloat16",
        }
    }

    fn dtype(self) -> Dtype {
        match self {
            WeightType::F32 => Dtype::F32,
            WeightType::F16 => Dtype::F16,
            WeightType::Bf16 => Dtype::BF16,
        }
    }

    /// Little-endian bytes of `values` in this type, refused if f16 cannot hold one.
    fn encode(self, name: &str, values: &[f32]) -> Result<Vec<u8>> {
        Ok(match self {
            WeightType::F32 => bytemuck::cast_slice(values).to_vec(),
            WeightType::F16 => {
                let half: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
                if let Some(i) = half.iter().position(|h| !h.is_finite()) {
                    bail!("tensor {name} holds {} at index {i}, beyond f16's range (export with --dtype bf16 or f32)", values[i]);
                }
                bytemuck::cast_slice(&half).to_vec()
            }
            WeightType::Bf16 => bytemuck::cast_slice(&values.iter().map(|&v| half::bf16::from_f32(v)).collect::<Vec<_>>()).to_vec(),
        })
    }
}

/// What `AutoTokenizer` reads beside `tokenizer.json`: which class to build, and the
/// end-of-text token when the vocabulary has one.
const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

fn tokenizer_config(ckpt: &Checkpoint) -> serde_json::Value {
    let tokenizer = &ckpt.meta.tokenizer;
    let mut config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": ckpt.meta.config.model.context,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(eos) = tokenizer.separator().map(|id| tokenizer.decode(&[id])).filter(|s| !s.is_empty()) {
        config["eos_token"] = eos.into();
    }
    config
}

/// What an export wrote.
#[derive(Debug)]
pub struct Exported {
    pub architecture: Architecture,
    pub files: Vec<PathBuf>,
    /// Why no `tokenizer.json` was written, when none was.
    pub no_tokenizer_json: Option<String>,
}

/// Writes `ckpt` to the new or empty folder `out` in Hugging Face's layout; refused, by
/// the config key's name, for a model no transformers architecture represents.
pub fn export(ckpt: &Checkpoint, out: &Path, weights: WeightType) -> Result<Exported> {
    let model = &ckpt.meta.config.model;
    let architecture = HfConfig::architecture_of(model)?;
    if out.exists() && std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))?.next().is_some() {
        bail!("{} is not empty: an export goes to a new or empty folder, so nothing is overwritten", out.display());
    }
    // Every value is converted before anything is written.
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for piece in pieces(model, architecture)? {
        let key = format!("param.{}", piece.ours);
        let (shape, values) = ckpt.tensor(&key).ok_or_else(|| anyhow!("the checkpoint lacks {key}"))?;
        let values = piece.gather(shape, values);
        tensors.push((piece.hf.clone(), piece.hf_shape(shape), weights.encode(&piece.hf, &values)?));
    }
    let views =
        tensors.iter().map(|(name, shape, bytes)| Ok((name.as_str(), TensorView::new(weights.dtype(), shape.clone(), bytes)?))).collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let safetensors = safetensors::serialize(views, Some(metadata))?;
    let config = serde_json::to_string_pretty(&HfConfig::json_for(model, weights.torch_name())?)?;
    let (hf_tokenizer, no_tokenizer_json) = match tokenizer_json(&ckpt.meta.tokenizer) {
        Ok(json) => (Some(json), None),
        Err(why) => (None, Some(why)),
    };

    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files = Vec::new();
    let mut write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = out.join(name);
        write_atomic(&path, bytes)?;
        files.push(path);
        Ok(())
    };
    write(CONFIG_FILE, config.as_bytes())?;
    write(WEIGHTS_FILE, &safetensors)?;
    if let Some(json) = hf_tokenizer {
        write(crate::hf::HF_TOKENIZER_FILE, json.as_bytes())?;
        write(TOKENIZER_CONFIG_FILE, tokenizer_config(ckpt).to_string().as_bytes())?;
    }
    write(TOKENIZER_FILE, serde_json::to_string(&ckpt.meta.tokenizer)?.as_bytes())?;
    Ok(Exported { architecture, files, no_tokenizer_json })
}
