//! Reading a Hugging Face Llama or Mixtral folder (`hf:DIR` wherever moegrad takes a
//! checkpoint to start from or evaluate): `config.json`, the weights in one
//! `model.safetensors` or shards listed by `model.safetensors.index.json`, in f32, f16 or
//! bf16, and the tokenizer. Every tensor is checked by name and shape against the layout
//! (`layout::pieces`); a missing, misshapen or unexpected one is refused by its name.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use moegrad_core::Module;
use moegrad_models::{ModelConfig, Transformer};
use safetensors::{Dtype, SafeTensors};

use crate::hf::config::{differing_keys, Architecture, HfConfig};
use crate::hf::layout::pieces;
use crate::hf::{CONFIG_FILE, HF_TOKENIZER_FILE, WEIGHTS_FILE, WEIGHTS_INDEX_FILE};
use crate::train::checkpoint::CheckpointMeta;
use crate::train::config::RunConfig;
use crate::train::tokenizer::{HuggingFace, Tokenizer, TOKENIZER_FILE};

/// `hf:DIR` names a Hugging Face folder: DIR.
pub fn hf_folder(spec: &str) -> Option<&Path> {
    spec.strip_prefix("hf:").map(Path::new)
}

/// A Hugging Face model read from its folder, its weights on the host.
pub struct HfModel {
    pub dir: PathBuf,
    pub architecture: Architecture,
    /// The moegrad model `config.json` describes.
    pub config: ModelConfig,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

/// The values of a tensor stored as f32, f16 or bf16.
fn to_f32(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let values: Vec<f32> = match dtype {
        Dtype::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(bytes),
        Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(bytes).into_iter().map(f32::from).collect(),
        Dtype::BF16 => bytemuck::pod_collect_to_vec::<u8, half::bf16>(bytes).into_iter().map(f32::from).collect(),
        other => bail!("tensor {name} is {other:?}; moegrad reads F32, F16 and BF16"),
    };
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        bail!("tensor {name} holds {bad}");
    }
    Ok(values)
}

/// The safetensors files of a folder: one, or the shards an index lists.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(WEIGHTS_INDEX_FILE);
    if index.exists() {
        let text = std::fs::read_to_string(&index).with_context(|| format!("cannot read {}", index.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", index.display()))?;
        let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| anyhow!("{} has no weight_map", index.display()))?;
        let files: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join(WEIGHTS_FILE);
    if !single.exists() {
        bail!("{} has neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE}", dir.display());
    }
    Ok(vec![single])
}

impl HfModel {
    /// Reads the folder `dir`, refusing a config moegrad cannot honour by its key.
    pub fn open(dir: &Path) -> Result<HfModel> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("cannot read {} (is {} a Hugging Face model folder?)", config_path.display(), dir.display()))?;
        let hf = HfConfig::parse(&text).map_err(|e| anyhow!("{}: {e}", config_path.display()))?;
        let architecture = hf.architecture().map_err(|e| anyhow!("{}: {e}", config_path.display()))?;
        let config = hf.to_model().map_err(|e| anyhow!("{}: {e}", config_path.display()))?;
        let mut tensors = HashMap::new();
        for path in weight_files(dir)? {
            let file = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            // Safety: the file is only read, and nothing in this process writes it.
            let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| anyhow!("{}: corrupt or not a safetensors file ({e})", path.display()))?;
            for (name, view) in st.tensors() {
                let values = to_f32(&name, view.dtype(), view.data()).map_err(|e| anyhow!("{}: {e}", path.display()))?;
                tensors.insert(name, (view.shape().to_vec(), values));
            }
        }
        Ok(HfModel { dir: dir.to_path_buf(), architecture, config, tensors })
    }

    /// The folder's tokenizer: its `tokenizer.json`, or the `moegrad-tokenizer.json` a
    /// moegrad export wrote for a tokenizer Hugging Face has no form for.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let (hf, ours) = (self.dir.join(HF_TOKENIZER_FILE), self.dir.join(TOKENIZER_FILE));
        if hf.exists() {
            return Ok(Tokenizer::HuggingFace(HuggingFace::from_file(&hf)?));
        }
        if ours.exists() {
            let text = std::fs::read_to_string(&ours).with_context(|| format!("cannot read {}", ours.display()))?;
            return serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", ours.display()));
        }
        bail!("{} has no {HF_TOKENIZER_FILE} (nor {TOKENIZER_FILE}): text cannot be tokenized for this model", self.dir.display())
    }

    /// Run state for evaluating or sampling the model: its config and tokenizer, step 0.
    pub fn meta(&self) -> Result<CheckpointMeta> {
        let config = RunConfig { model: self.config.clone(), ..RunConfig::default() };
        let tokenizer = self.tokenizer()?;
        if tokenizer.vocab_size() > self.config.vocab_size {
            bail!("{}: the tokenizer has {} tokens but config.json's vocab_size is {}", self.dir.display(), tokenizer.vocab_size(), self.config.vocab_size);
        }
        Ok(CheckpointMeta::new(config, tokenizer))
    }

    /// Copies the weights into `model`, which must be the model `config.json` describes
    /// (keys that differ are named); every tensor is checked by name and shape, and a
    /// tensor the layout has no place for is refused.
    pub fn load_into(&self, model: &Transformer) -> Result<()> {
        let here = self.dir.display();
        let differ = differing_keys(&model.config, &self.config);
        if !differ.is_empty() {
            let list: Vec<String> = differ.iter().map(|(key, ours, theirs)| format!("{key} is {ours} here and {theirs} in {here}")).collect();
            bail!("hf:{here} is another model: {}", list.join("; "));
        }
        let layout = pieces(&self.config, self.architecture)?;
        let mut used = BTreeSet::new();
        for (name, p) in model.named_parameters() {
            let mut values = vec![0.0; p.numel()];
            for piece in layout.iter().filter(|piece| piece.ours == name) {
                let want = piece.hf_shape(p.shape());
                let (have, data) = self.tensors.get(&piece.hf).ok_or_else(|| anyhow!("hf:{here} lacks tensor {} (shape {want:?})", piece.hf))?;
                if *have != want {
                    bail!("tensor {} in hf:{here} has shape {have:?}, the model expects {want:?}", piece.hf);
                }
                piece.scatter(p.shape(), &mut values, data);
                used.insert(piece.hf.as_str());
            }
            p.write(&values)?;
        }
        // transformers ties lm_head to the embedding whatever a file holds, and older
        // exports kept the rotary frequencies, a buffer derived from the config.
        let ignored = |n: &str| n.ends_with("rotary_emb.inv_freq") || (self.config.tied_embeddings && n == "lm_head.weight");
        let mut stray: Vec<&String> = self.tensors.keys().filter(|n| !used.contains(n.as_str()) && !ignored(n)).collect();
        stray.sort();
        if let Some(first) = stray.first() {
            bail!("hf:{here} holds tensor {first} (and {} more), which a {} model has no place for", stray.len() - 1, self.architecture.model_type());
        }
        Ok(())
    }
}
