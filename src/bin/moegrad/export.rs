//! `moegrad export`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use moegrad::hf::{export, WeightType};
use moegrad::train::checkpoint::Checkpoint;

/// The formats a checkpoint can be exported in.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// A Hugging Face folder: Llama (dense SwiGLU) or Mixtral (TopK SwiGLU experts).
    Hf,
}

/// Write a checkpoint in another framework's format, e.g. for `transformers`.
#[derive(Args)]
pub struct ExportArgs {
    /// The checkpoint to export (a run's checkpoint.safetensors or best.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// A new or empty folder to write.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum)]
    format: Format,
    /// The weights' type.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: WeightType,
}

impl ExportArgs {
    pub fn run(self) -> Result<()> {
        let ExportArgs { checkpoint, out, format: Format::Hf, dtype } = self;
        let ckpt = Checkpoint::load(&checkpoint)?;
        if let Some(w) = ckpt.warning() {
            eprintln!("{w}: {}", checkpoint.display());
        }
        let done = export(&ckpt, &out, dtype)?;
        let names: Vec<String> = done.files.iter().filter_map(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
        println!(
            "wrote a {} model (step {}, {} weights) in {}: {}",
            done.architecture.model_type(),
            ckpt.meta.step,
            format!("{dtype:?}").to_lowercase(),
            out.display(),
            names.join(", ")
        );
        if let Some(why) = &done.no_tokenizer_json {
            println!("no tokenizer.json: {why}");
        }
        println!("load it with:  AutoModelForCausalLM.from_pretrained({:?})", out.display().to_string());
        println!("or score it:   moegrad eval --checkpoint hf:{}", out.display());
        Ok(())
    }
}
