//! Hugging Face interop: `moegrad export --format hf` writes the Llama and Mixtral layouts
//! (names, shapes, config.json), an export read back (`hf:DIR`) computes the same logits,
//! whatever no architecture represents is refused by its key, a foreign folder's
//! mismatches are refused by tensor or key name, training continues from a folder, the
//! standard tokenizers become `tokenizer.json` files that give tiktoken's ids, and
//! `transformers` itself computes the loss `moegrad eval` does (when Python has it).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use moegrad::hf::{export, HfModel, WeightType};
use moegrad::models::Transformer;
use moegrad::prelude::*;
use moegrad::train::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use moegrad::train::run_folder::Start;
use moegrad::train::tokenizer::{HuggingFace, Standard, Tokenizer};
use safetensors::SafeTensors;

use crate::common::{config_from_sets, device, rng, scratch, train_quietly};

const BASE: [&str; 9] = [
    "model.d_model=16",
    "model.layers=2",
    "model.heads=2",
    "model.head_dim=6",
    "model.context=16",
    "train.batch_size=4",
    "train.warmup=0",
    "train.steps=2",
    "train.eval_batches=1",
];

const LLAMA: [&str; 4] = ["model.ffn=\"dense\"", "model.dense.hidden=24", "model.dense.activation=\"swiglu\"", "model.tied_embeddings=false"];

const MIXTRAL: [&str; 6] = [
    "model.ffn=\"topk\"",
    "model.moe.experts=3",
    "model.moe.top_k=2",
    "model.moe.expert_hidden=20",
    "model.moe.activation=\"swiglu\"",
    "model.moe.renormalize=true",
];

/// A trained run of `sets` over BASE in `dir`, and its checkpoint.
fn trained(dir: &Path, sets: &[&str]) -> Checkpoint {
    train_quietly(config_from_sets(&BASE, sets), dir, Start::Fresh, None).unwrap();
    Checkpoint::load(&dir.join(CHECKPOINT_FILE)).unwrap()
}

fn model_of(ckpt: &Checkpoint) -> Transformer {
    let model = Transformer::new(&device(), &ckpt.meta.config.model, &mut rng(1)).unwrap();
    ckpt.restore(&model, None).unwrap();
    model
}

fn logits(model: &Transformer) -> Vec<f32> {
    let ids: Vec<u32> = (0..2 * 16).map(|i| (i * 37 % 251) as u32).collect();
    model.forward(&Tensor::from_u32(&device(), &ids, &[2, 16]).unwrap(), false).logits.to_vec().unwrap()
}

/// The imported model of folder `dir`.
fn imported(dir: &Path) -> Transformer {
    let hf = HfModel::open(dir).unwrap();
    let model = Transformer::new(&device(), &hf.config, &mut rng(2)).unwrap();
    hf.load_into(&model).unwrap();
    model
}

/// Name -> shape of every tensor in a safetensors file.
fn stored_shapes(path: &Path) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(path).unwrap();
    SafeTensors::deserialize(&bytes).unwrap().tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec())).collect()
}

#[test]
fn exports_have_the_llama_and_mixtral_names_shapes_and_config() {
    let dir = scratch("hf-layout");
    // Written out from transformers' modeling_llama / modeling_mixtral, not from moegrad.
    let (d, v, inner) = (16, 256, 2 * 6);
    let mut llama: BTreeMap<String, Vec<usize>> = [("model.embed_tokens.weight", vec![v, d]), ("model.norm.weight", vec![d]), ("lm_head.weight", vec![v, d])]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
    let mut mixtral = llama.clone();
    mixtral.remove("lm_head.weight"); // tied
    for i in 0..2 {
        for map in [&mut llama, &mut mixtral] {
            let l = format!("model.layers.{i}");
            map.insert(format!("{l}.input_layernorm.weight"), vec![d]);
            map.insert(format!("{l}.post_attention_layernorm.weight"), vec![d]);
            for p in ["q_proj", "k_proj", "v_proj"] {
                map.insert(format!("{l}.self_attn.{p}.weight"), vec![inner, d]);
            }
            map.insert(format!("{l}.self_attn.o_proj.weight"), vec![d, inner]);
        }
        let l = format!("model.layers.{i}");
        llama.insert(format!("{l}.mlp.gate_proj.weight"), vec![24, d]);
        llama.insert(format!("{l}.mlp.up_proj.weight"), vec![24, d]);
        llama.insert(format!("{l}.mlp.down_proj.weight"), vec![d, 24]);
        mixtral.insert(format!("{l}.block_sparse_moe.gate.weight"), vec![3, d]);
        for e in 0..3 {
            let x = format!("{l}.block_sparse_moe.experts.{e}");
            mixtral.insert(format!("{x}.w1.weight"), vec![20, d]);
            mixtral.insert(format!("{x}.w3.weight"), vec![20, d]);
            mixtral.insert(format!("{x}.w2.weight"), vec![d, 20]);
        }
    }
    for (name, sets, want, class) in [("llama", &LLAMA[..], llama, "LlamaForCausalLM"), ("mixtral", &MIXTRAL[..], mixtral, "MixtralForCausalLM")] {
        let ckpt = trained(&dir.join(name), sets);
        let out = dir.join(format!("{name}-hf"));
        export(&ckpt, &out, WeightType::F32).unwrap();
        assert_eq!(stored_shapes(&out.join("model.safetensors")), want, "{name}: tensor names and shapes");
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["architectures"][0], class);
        assert_eq!(config["model_type"], name);
        assert_eq!((config["hidden_size"].as_u64(), config["head_dim"].as_u64(), config["num_key_value_heads"].as_u64()), (Some(16), Some(6), Some(2)));
        assert_eq!(config["rms_norm_eps"].as_f64(), Some(1e-5));
        if name == "mixtral" {
            assert_eq!(
                (config["num_local_experts"].as_u64(), config["num_experts_per_tok"].as_u64(), config["intermediate_size"].as_u64()),
                (Some(3), Some(2), Some(20))
            );
        }
    }
    // What each piece holds: q_proj is the transpose of wqkv's first columns.
    let ckpt = Checkpoint::load(&dir.join("llama").join(CHECKPOINT_FILE)).unwrap();
    let (shape, wqkv) = ckpt.tensor("param.blocks.1.attn.wqkv").unwrap();
    let bytes = std::fs::read(dir.join("llama-hf").join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let k: Vec<f32> = bytemuck::pod_collect_to_vec(st.tensor("model.layers.1.self_attn.k_proj.weight").unwrap().data());
    let cols = shape[1];
    for (out_row, in_col) in [(0, 0), (5, 3), (11, 15)] {
        assert_eq!(k[out_row * 16 + in_col], wqkv[in_col * cols + inner + out_row], "k_proj[{out_row}, {in_col}]");
    }
    // Mixtral's w1 is the gate (w_in's first half), w3 the up projection, w2 the output.
    let ckpt = Checkpoint::load(&dir.join("mixtral").join(CHECKPOINT_FILE)).unwrap();
    let bytes = std::fs::read(dir.join("mixtral-hf").join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let hf = |name: &str| -> Vec<f32> { bytemuck::pod_collect_to_vec(st.tensor(name).unwrap().data()) };
    let (_, w_in) = ckpt.tensor("param.blocks.0.ffn.w_in").unwrap();
    let (_, w_out) = ckpt.tensor("param.blocks.0.ffn.w_out").unwrap();
    let (_, router) = ckpt.tensor("param.blocks.0.ffn.router").unwrap();
    let x = "model.layers.0.block_sparse_moe";
    let (w1, w3, w2, gate) = (
        hf(&format!("{x}.experts.2.w1.weight")),
        hf(&format!("{x}.experts.2.w3.weight")),
        hf(&format!("{x}.experts.2.w2.weight")),
        hf(&format!("{x}.gate.weight")),
    );
    let (h, e) = (20, 2);
    for (r, c) in [(0, 0), (7, 11), (19, 15)] {
        assert_eq!(w1[r * d + c], w_in[e * d * 2 * h + c * 2 * h + r], "w1[{r}, {c}]");
        assert_eq!(w3[r * d + c], w_in[e * d * 2 * h + c * 2 * h + h + r], "w3[{r}, {c}]");
        assert_eq!(w2[c * h + r], w_out[e * h * d + r * d + c], "w2[{c}, {r}]");
    }
    assert_eq!(gate[2 * d + 5], router[5 * 3 + 2], "gate[2, 5]");
}

#[test]
fn an_export_read_back_computes_the_same_logits() {
    let dir = scratch("hf-round-trip");
    let densemixer: Vec<&str> = MIXTRAL.iter().copied().chain(["model.ffn=\"densemixer\""]).collect();
    for (name, sets) in [("llama", &LLAMA[..]), ("mixtral", &MIXTRAL[..]), ("densemixer", &densemixer[..])] {
        let ckpt = trained(&dir.join(name), sets);
        let want = logits(&model_of(&ckpt));
        for (weights, tol) in [(WeightType::F32, 0.0), (WeightType::F16, 2e-2), (WeightType::Bf16, 1e-1)] {
            let out = dir.join(format!("{name}-{weights:?}"));
            export(&ckpt, &out, weights).unwrap();
            let got = logits(&imported(&out));
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= tol, "{name} {weights:?}: logits differ by {worst} (allowed {tol})");
            if weights == WeightType::F32 {
                assert_eq!(got, want, "{name}: an f32 round trip is exact");
            }
        }
        // An f16 file is read as the f16 values it holds.
        let (_, embed) = ckpt.tensor("param.embed").unwrap();
        let model = imported(&dir.join(format!("{name}-F16")));
        let back = model.embed.to_vec().unwrap();
        assert!(embed.iter().zip(&back).all(|(&a, &b)| half::f16::from_f32(a).to_f32() == b), "{name}: f16 weights read exactly");
    }
}

#[test]
fn models_no_architecture_represents_are_refused_by_key() {
    let dir = scratch("hf-refused");
    let topk: Vec<&str> = MIXTRAL.to_vec();
    let with = |extra: &[&'static str]| -> Vec<&'static str> { topk.iter().copied().chain(extra.iter().copied()).collect() };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["model.ffn=\"dense\"", "model.dense.activation=\"gelu\""], "model.dense.activation"),
        (with(&["model.ffn=\"default\"", "model.moe.renormalize=false"]), "model.ffn = \"default\""),
        (with(&["model.moe.activation=\"gelu\""]), "model.moe.activation"),
        (with(&["model.moe.renormalize=false"]), "model.moe.renormalize"),
        (with(&["model.moe.score=\"sigmoid\""]), "model.moe.score"),
        (with(&["model.moe.capacity_factor=1.25"]), "model.moe.capacity_factor"),
        (with(&["model.moe.shared_experts=1"]), "model.moe.shared_experts"),
        (with(&["model.moe.balance=\"bias\""]), "model.moe.balance"),
        (with(&["model.ffn_layers=[\"dense\", \"topk\"]"]), "model.ffn_layers"),
    ];
    for (i, (sets, key)) in cases.iter().enumerate() {
        let run = dir.join(format!("run{i}"));
        train_quietly(config_from_sets(&BASE, sets), &run, Start::Fresh, Some(0)).unwrap();
        let ckpt = Checkpoint::load(&run.join(CHECKPOINT_FILE)).unwrap();
        let out = dir.join(format!("out{i}"));
        let err = format!("{:#}", export(&ckpt, &out, WeightType::F32).unwrap_err());
        assert!(err.contains(key), "{sets:?}: the refusal must name {key:?}, got: {err}");
        assert!(!out.exists(), "{sets:?}: nothing is written for a refused export");
    }
    // A folder that holds something is never written into.
    let ckpt = trained(&dir.join("llama"), &LLAMA);
    std::fs::create_dir_all(dir.join("full")).unwrap();
    std::fs::write(dir.join("full").join("notes.txt"), "mine").unwrap();
    let err = format!("{:#}", export(&ckpt, &dir.join("full"), WeightType::F32).unwrap_err());
    assert!(err.contains("not empty"), "{err}");
}

/// A safetensors file's tensors: name -> (shape, values).
type Weights = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Rewrites the export in `dir` with `edit` applied to its tensors (name -> (shape, values)).
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut Weights)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let mut tensors: Weights = SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.shape().to_vec(), bytemuck::pod_collect_to_vec(v.data()))))
        .collect();
    edit(&mut tensors);
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors.into_iter().map(|(n, (s, v))| (n, s, bytemuck::cast_slice(&v).to_vec())).collect();
    let views: Vec<(&str, safetensors::tensor::TensorView)> =
        raw.iter().map(|(n, s, b)| (n.as_str(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())).collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
}

fn copy_folder(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to.to_path_buf()
}

fn import_error(dir: &Path) -> String {
    let result = HfModel::open(dir).and_then(|hf| {
        let model = Transformer::new(&device(), &hf.config, &mut rng(3))?;
        hf.load_into(&model)
    });
    format!("{:#}", result.err().unwrap_or_else(|| panic!("{} was accepted", dir.display())))
}

#[test]
fn foreign_folders_are_checked_by_tensor_and_key_name() {
    let dir = scratch("hf-import-checks");
    let ckpt = trained(&dir.join("run"), &MIXTRAL);
    let good = dir.join("good");
    export(&ckpt, &good, WeightType::F32).unwrap();
    let mut n = 0;
    let mut case = |what: &str, config: &dyn Fn(&mut serde_json::Value), weights: &dyn Fn(&mut Weights), named: &str| {
        n += 1;
        let bad = copy_folder(&good, &dir.join(format!("bad{n}")));
        edit_config(&bad, config);
        edit_weights(&bad, weights);
        let err = import_error(&bad);
        assert!(err.contains(named), "{what}: the refusal must name {named:?}, got: {err}");
    };
    let no_change = |_: &mut Weights| {};
    let same = |_: &mut serde_json::Value| {};
    let q = "model.layers.1.self_attn.q_proj.weight";
    case("a missing tensor", &same, &|t| drop(t.remove(q)), q);
    case("a misshapen tensor", &same, &|t| drop(t.insert(q.into(), (vec![12, 15], vec![0.0; 180]))), "has shape [12, 15], the model expects [12, 16]");
    case("a stray tensor", &same, &|t| drop(t.insert("model.layers.0.self_attn.q_norm.weight".into(), (vec![6], vec![1.0; 6]))), "q_norm");
    case("grouped-query attention", &|c| c["num_key_value_heads"] = 1.into(), &no_change, "num_key_value_heads");
    case("attention biases", &|c| c["attention_bias"] = true.into(), &no_change, "attention_bias");
    case("scaled rotary positions", &|c| c["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0}), &no_change, "rope_scaling");
    case("another activation", &|c| c["hidden_act"] = "gelu".into(), &no_change, "hidden_act");
    case("another architecture", &|c| c["model_type"] = "gpt2".into(), &no_change, "model_type");
    case("a sliding window", &|c| c["sliding_window"] = 4.into(), &no_change, "sliding_window");
    // A bf16 file reads as its values: the export itself, and the shards of an index.
    let bf16 = dir.join("bf16");
    export(&ckpt, &bf16, WeightType::Bf16).unwrap();
    let sharded = copy_folder(&good, &dir.join("sharded"));
    let bytes = std::fs::read(sharded.join("model.safetensors")).unwrap();
    let names: Vec<String> = SafeTensors::deserialize(&bytes).unwrap().names().into_iter().map(String::from).collect();
    std::fs::rename(sharded.join("model.safetensors"), sharded.join("model-00001-of-00001.safetensors")).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = names.iter().map(|n| (n.clone(), "model-00001-of-00001.safetensors".into())).collect();
    std::fs::write(sharded.join("model.safetensors.index.json"), serde_json::json!({"metadata": {}, "weight_map": map}).to_string()).unwrap();
    let want = logits(&model_of(&ckpt));
    assert_eq!(logits(&imported(&sharded)), want, "a sharded folder reads as the single file");
    let worst = logits(&imported(&bf16)).iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 0.1, "bf16 logits differ by {worst}");
}

#[test]
fn training_continues_from_a_hugging_face_folder() {
    let dir = scratch("hf-init-from");
    let ckpt = trained(&dir.join("run"), &LLAMA);
    export(&ckpt, &dir.join("hf"), WeightType::F32).unwrap();
    let from = format!("train.init_from={}", toml::Value::String(format!("hf:{}", dir.join("hf").display())));
    let sets: Vec<&str> = LLAMA.iter().copied().chain([from.as_str()]).collect();
    train_quietly(config_from_sets(&BASE, &sets), &dir.join("continued"), Start::Fresh, Some(0)).unwrap();
    let start = Checkpoint::load(&dir.join("continued").join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(logits(&model_of(&start)), logits(&model_of(&ckpt)), "the new run starts from the folder's weights");
    assert_eq!(start.meta.eval_loss, ckpt.meta.eval_loss, "and so from the same eval loss");
    let summary = train_quietly(config_from_sets(&BASE, &sets), &dir.join("continued"), Start::Resume, None).unwrap();
    assert!(summary.final_train_loss.is_finite());
    let other: Vec<&str> = sets.iter().copied().chain(["model.dense.hidden=32"]).collect();
    let err = format!("{:#}", train_quietly(config_from_sets(&BASE, &other), &dir.join("other"), Start::Fresh, None).unwrap_err());
    assert!(err.contains("model.dense.hidden is 32 here and 24 in"), "{err}");
}

#[test]
fn standard_tokenizers_become_tokenizer_json_files_that_give_tiktoken_s_ids() {
    let corpus = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/shakespeare.txt")).unwrap();
    let sample =
        format!("{}\n\n  Numbers 1234567 and 3.14159, CamelCaseWords, don't WON'T it's;\t\ttabs   spaces\r\nnaïve café 東京 😀 —dash—", &corpus[..20_000]);
    for standard in Standard::ALL {
        let tiktoken = Tokenizer::Tiktoken { encoding: standard };
        let json = moegrad::hf::tokenizer_json::tokenizer_json(&tiktoken).unwrap();
        let hf = Tokenizer::HuggingFace(HuggingFace::from_json(&json).unwrap());
        assert_eq!(hf.vocab_size(), standard.vocab_size(), "{standard:?}: the vocabulary with its special tokens");
        let (want, got) = (tiktoken.encode(&sample).unwrap(), hf.encode(&sample).unwrap());
        let first = want.iter().zip(&got).position(|(a, b)| a != b);
        assert!(first.is_none() && want.len() == got.len(), "{standard:?}: ids differ at {first:?} ({} vs {} ids)", want.len(), got.len());
        assert_eq!(hf.decode(&got), tiktoken.decode(&want), "{standard:?}: decoding");
    }
    let err = moegrad::hf::tokenizer_json::tokenizer_json(&Tokenizer::Bytes).unwrap_err();
    assert!(err.contains("no Hugging Face equivalent"), "{err}");
}

/// The Python that has `transformers` and `torch` (`MOEGRAD_PYTHON`, else python3), if any.
fn python_with_transformers() -> Option<String> {
    let python = std::env::var("MOEGRAD_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python).args(["-c", "import transformers, torch"]).output().is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

#[test]
fn transformers_computes_the_loss_moegrad_eval_does() {
    let Some(python) = python_with_transformers() else {
        eprintln!("skipped: no Python with transformers and torch (set MOEGRAD_PYTHON to one)");
        return;
    };
    let dir = scratch("hf-transformers");
    let corpus = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/shakespeare.txt")).unwrap();
    let text = dir.join("text.txt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&text, &corpus[5000..5000 + 6 * 16 + 1]).unwrap(); // six windows of 16
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hf/transformers_loss.py");
    let moegrad = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_moegrad")).args(args).env("NODEVICE_SELECT", "1").output().unwrap();
        assert!(out.status.success(), "moegrad {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    for (name, sets, weights) in [("llama", &LLAMA[..], "f32"), ("mixtral", &MIXTRAL[..], "f32"), ("mixtral16", &MIXTRAL[..], "f16")] {
        // Trained long enough that every projection shapes the loss well beyond 1e-4.
        let run = dir.join(name);
        let longer: Vec<&str> = sets.iter().copied().chain(["train.steps=60", "train.lr=1e-2"]).collect();
        trained(&run, &longer);
        let out = dir.join(format!("{name}-hf"));
        let (ckpt, out_s, text_s) = (run.join(CHECKPOINT_FILE).display().to_string(), out.display().to_string(), text.display().to_string());
        moegrad(&["export", "--checkpoint", &ckpt, "--out", &out_s, "--format", "hf", "--dtype", weights]);
        let source = if weights == "f32" { ckpt.clone() } else { format!("hf:{out_s}") };
        let ours: serde_json::Value = serde_json::from_str(&moegrad(&["eval", "--checkpoint", &source, "--data", &text_s, "--json"])).unwrap();
        let result = Command::new(&python).args([script, &out_s, &text_s, "16"]).output().unwrap();
        assert!(result.status.success(), "{name}: transformers failed: {}", String::from_utf8_lossy(&result.stderr));
        let theirs: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
        let (a, b) = (ours["loss"].as_f64().unwrap(), theirs["loss"].as_f64().unwrap());
        assert_eq!(ours["tokens"], theirs["tokens"], "{name}: the same tokens scored");
        assert!((a - b).abs() <= 1e-4, "{name} ({}): moegrad eval {a}, transformers {b}", theirs["architecture"]);
    }
    // AutoTokenizer reads the exported tokenizer and gives moegrad's ids.
    let sample = "Hello world, naïve café 12345!\n\n  To be, or not to be: that is the question.";
    for standard in ["gpt2", "llama3"] {
        let run = dir.join(standard);
        let tokenizer = format!("data.tokenizer=\"{standard}\"");
        train_quietly(config_from_sets(&BASE, &[LLAMA.as_slice(), &[tokenizer.as_str()]].concat()), &run, Start::Fresh, Some(0)).unwrap();
        let out = dir.join(format!("{standard}-hf"));
        export(&Checkpoint::load(&run.join(CHECKPOINT_FILE)).unwrap(), &out, WeightType::F32).unwrap();
        let code = format!(
            "import json, sys; from transformers import AutoTokenizer; print(json.dumps(AutoTokenizer.from_pretrained({:?}).encode(sys.argv[1])))",
            out.display().to_string()
        );
        let result = Command::new(&python).args(["-c", &code, sample]).output().unwrap();
        assert!(result.status.success(), "{standard}: AutoTokenizer failed: {}", String::from_utf8_lossy(&result.stderr));
        let theirs: Vec<u32> = serde_json::from_slice(&result.stdout).unwrap();
        let ours = Tokenizer::Tiktoken { encoding: Standard::from_name(standard).unwrap() }.encode(sample).unwrap();
        assert_eq!(theirs, ours, "{standard}: AutoTokenizer's ids");
    }
}

#[test]
fn the_command_line_exports_refuses_and_scores_folders() {
    let dir = scratch("hf-cli");
    let moegrad = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_moegrad")).args(args).env("NODEVICE_SELECT", "1").output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    trained(&dir.join("llama"), &LLAMA);
    let default_sets: Vec<&str> = MIXTRAL.iter().copied().chain(["model.ffn=\"default\"", "model.moe.renormalize=false"]).collect();
    train_quietly(config_from_sets(&BASE, &default_sets), &dir.join("default"), Start::Fresh, Some(0)).unwrap();
    let path = |p: PathBuf| p.display().to_string();
    let (llama, default) = (path(dir.join("llama").join(CHECKPOINT_FILE)), path(dir.join("default").join(CHECKPOINT_FILE)));
    let out = path(dir.join("out"));
    let refused = moegrad(&["export", "--checkpoint", &default, "--out", &out, "--format", "hf"]);
    assert!(!refused.status.success() && text(&refused.stderr).contains("model.ffn = \"default\""), "{}", text(&refused.stderr));
    let done = moegrad(&["export", "--checkpoint", &llama, "--out", &out, "--format", "hf", "--dtype", "bf16"]);
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(text(&done.stdout).contains("llama model") && text(&done.stdout).contains("no tokenizer.json"), "{}", text(&done.stdout));
    let scored = moegrad(&["eval", "--checkpoint", &format!("hf:{out}"), "--json", "--batches", "1", "--context", "8"]);
    assert!(scored.status.success(), "{}", text(&scored.stderr));
    let report: serde_json::Value = serde_json::from_slice(&scored.stdout).unwrap();
    assert_eq!(report["context"], 8);
    assert!(report["loss"].as_f64().unwrap().is_finite());
    let missing = moegrad(&["eval", "--checkpoint", &format!("hf:{}", path(dir.join("nowhere")))]);
    assert!(!missing.status.success() && text(&missing.stderr).contains("config.json"), "{}", text(&missing.stderr));
    let too_long = moegrad(&["eval", "--checkpoint", &llama, "--context", "17"]);
    assert!(text(&too_long.stderr).contains("--context 17 exceeds the model's context of 16"), "{}", text(&too_long.stderr));
}
