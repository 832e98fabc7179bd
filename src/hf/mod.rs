//! Hugging Face interop: a checkpoint exported as a Llama or Mixtral folder that
//! `transformers` loads (`export`), and such a folder read back to evaluate or train
//! further (`import`, `hf:DIR`). `config` translates the two configurations, refusing by
//! name whatever one side cannot represent; `layout` says where each tensor lies;
//! `tokenizer_json` writes the run's tokenizer in Hugging Face's format.

pub mod config;
pub mod export;
pub mod import;
pub mod layout;
pub mod tokenizer_json;

pub use config::{Architecture, HfConfig};
pub use export::{export, Exported, WeightType};
pub use import::{hf_folder, HfModel};

/// The model's configuration in a Hugging Face folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights, in one file.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The list of weight shards, for a model in several files.
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
pub use crate::data::folder::HF_TOKENIZER_FILE;
