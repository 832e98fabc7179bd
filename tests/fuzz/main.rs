//! Fuzzing, bounded so that CI runs it on every change: thousands of generated inputs for
//! the readers of untrusted bytes (the config loader, the checkpoint loader, the tokenizer
//! a checkpoint carries, the token shard reader, a shard folder's `meta.json`, and the
//! scaling-law tables `moegrad fit` reads). Each must answer Ok or an error:
//! never panic, never hang, and never make an allocation larger than `LARGEST_ALLOCATION`,
//! which this binary checks with an allocator that notes each thread's largest request.
//!
//! A test binary of its own, so that no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use moegrad::data::shards::Shard;
use moegrad::models::Transformer;
use moegrad::ops::{AdamW, AdamWConfig};
use moegrad::research::accounting::account;
use moegrad::train::checkpoint::{encode, Checkpoint, CheckpointMeta};
use moegrad::train::config::{from_table, RunConfig};
use moegrad::train::tokenizer::Tokenizer;
use proptest::prelude::*;
use rand::SeedableRng;

/// No reader may ask for more than this at once (the inputs are at most kilobytes).
const LARGEST_ALLOCATION: usize = 64 << 20;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

struct NotingLargest;

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for NotingLargest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: NotingLargest = NotingLargest;

/// Runs `read` and checks the largest allocation it made.
fn bounded<R>(what: &str, read: impl FnOnce() -> R) -> R {
    LARGEST.with(|l| l.set(0));
    let result = read();
    let largest = LARGEST.with(Cell::get);
    assert!(largest <= LARGEST_ALLOCATION, "{what}: an allocation of {largest} bytes");
    result
}

fn config(cases: u32) -> ProptestConfig {
    // No regression files written into the source tree; a failure prints its input.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Keys of the run config, and values of every TOML type with extremes among them.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("model.d_model"),
        Just("model.layers"),
        Just("model.heads"),
        Just("model.head_dim"),
        Just("model.context"),
        Just("model.vocab_size"),
        Just("model.ffn"),
        Just("model.ffn_layers"),
        Just("model.moe.experts"),
        Just("model.moe.top_k"),
        Just("model.moe.expert_hidden"),
        Just("model.moe.beta"),
        Just("model.rope_base"),
        Just("model.norm_eps"),
        Just("model.dense.hidden"),
        Just("data.tokenizer"),
        Just("data.bpe_vocab"),
        Just("data.eval_fraction"),
        Just("data.path"),
        Just("train.steps"),
        Just("train.batch_size"),
        Just("train.grad_accum"),
        Just("train.lr"),
        Just("train.min_lr"),
        Just("train.warmup"),
        Just("train.schedule"),
        Just("train.decay_fraction"),
        Just("train.eps"),
        Just("train.clip"),
        Just("train.precision"),
        Just("train.loss_scale"),
        Just("train.keep_checkpoints"),
        Just("train.log_every"),
        Just("model.nope"),
        Just("nope"),
    ]
    .prop_map(str::to_string)
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (0u64..5000).prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("nan".to_string()),
        Just("0".to_string()),
        Just("1e30".to_string()),
        Just("\"topk\"".to_string()),
        Just("\"default\"".to_string()),
        Just("\"bpe\"".to_string()),
        Just("\"f16\"".to_string()),
        Just("[\"dense\", \"topk\"]".to_string()),
        Just("true".to_string()),
        Just("{ a = 1 }".to_string()),
        "[ -~]{0,12}".prop_map(|s| s),
    ]
}

/// BPE merges as a damaged or hostile file may hold them: random pairs (half of the
/// time made to name only tokens that exist), then a chain of merges of the newest token
/// with itself, each doubling its length.
fn merges() -> impl Strategy<Value = Vec<(u32, u32)>> {
    (prop::collection::vec((0u32..700, 0u32..700), 0..300), any::<bool>(), 0usize..48).prop_map(|(raw, existing, doublings)| {
        let mut merges: Vec<(u32, u32)> =
            raw.into_iter().enumerate().map(|(i, (a, b))| if existing { (a % (256 + i as u32), b % (256 + i as u32)) } else { (a, b) }).collect();
        for _ in 0..doublings {
            let newest = 255 + merges.len() as u32;
            merges.push((newest, newest));
        }
        merges
    })
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn the_config_loader_answers_every_table(pairs in prop::collection::vec((key(), value()), 0..12)) {
        let text: String = pairs.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        bounded(&text, || {
            let Ok(table) = toml::from_str::<toml::Table>(&text) else { return };
            let Ok(mut config) = from_table(table, "fuzz") else { return };
            if config.validate().is_ok() {
                config.model.vocab_size = config.model.vocab_size.max(256);
                if config.model.validate().is_ok() {
                    let _ = account(&config.model);
                }
            }
        });
    }

    #[test]
    fn overrides_answer_every_string(sets in prop::collection::vec("[ -~]{0,40}", 0..6), pairs in prop::collection::vec((key(), value()), 0..6)) {
        let mut overrides = sets;
        overrides.extend(pairs.iter().map(|(k, v)| format!("{k}={v}")));
        bounded(&format!("{overrides:?}"), || {
            if let Ok(c) = RunConfig::load(None, &overrides) {
                let _ = c.validate();
            }
        });
    }

    #[test]
    fn tokenizers_from_files_are_checked_before_use(
        merges in merges(),
        ids in prop::collection::vec(0u32..1200, 0..64),
        text in "\\PC{0,64}",
    ) {
        let tokenizer = Tokenizer::Bpe { merges };
        bounded("bpe merges", || {
            if tokenizer.validate().is_ok() {
                let _ = tokenizer.decode(&ids);
                let _ = tokenizer.encode(&text);
            }
        });
    }

    #[test]
    fn shard_files_are_checked_before_a_token_is_read(
        magic in prop_oneof![Just(20240520i32), any::<i32>()],
        version in -1i32..4,
        count in prop_oneof![0i32..40, any::<i32>()],
        body in prop::collection::vec(any::<u8>(), 0..80),
        header_len in prop_oneof![Just(1024usize), 0usize..1100],
    ) {
        let mut header: Vec<u8> = [magic, version, count].iter().flat_map(|i| i.to_le_bytes()).collect();
        header.resize(1024, 0);
        header.truncate(header_len);
        let path = std::env::temp_dir().join(format!("moegrad-fuzz-shard-{}-{:?}.bin", std::process::id(), std::thread::current().id()));
        std::fs::write(&path, [header, body].concat()).unwrap();
        bounded("shard", || {
            if let Ok(shard) = Shard::open(&path) {
                let _ = shard.read(0, shard.len() as usize);
            }
        });
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn tokenizer_json_answers_every_string(json in "\\{\"kind\": ?\"(bytes|bpe)\"(, ?\"merges\": ?\\[(\\[[0-9]{1,6}, ?[0-9]{1,6}\\],? ?){0,8}\\])?\\}|[ -~]{0,60}") {
        bounded(&json, || {
            if let Ok(t) = serde_json::from_str::<Tokenizer>(&json) {
                if t.validate().is_ok() {
                    let _ = t.decode(&[0, 255, 256, 1_000_000]);
                }
            }
        });
    }
}

/// A real checkpoint of a tiny model, the seed every mutation starts from.
fn checkpoint_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let sets: Vec<String> =
            ["model.d_model=8", "model.layers=1", "model.heads=2", "model.context=8", "model.ffn=\"default\"", "model.moe.experts=2", "model.moe.top_k=1"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let mut config = RunConfig::load(None, &sets).unwrap();
        config.model.vocab_size = 256;
        let device = moegrad::Device::new().expect("the fuzzer builds its seed checkpoint on a GPU adapter (lavapipe will do)");
        let model = Transformer::new(&device, &config.model, &mut rand::rngs::StdRng::seed_from_u64(0)).unwrap();
        let opt = AdamW::new(&model, AdamWConfig::default()).unwrap();
        let meta = CheckpointMeta {
            format: 1,
            config,
            tokenizer: Tokenizer::Bytes,
            step: 3,
            tokens_seen: 96,
            eval_loss: Some(5.0),
            wall_seconds: 1.0,
            loss_scaler: None,
            best_eval_loss: Some(5.0),
            config_hash: None,
            world_size: 1,
            evals_without_improvement: 0,
            data: None,
        };
        let bytes = encode(&meta, &model, &opt).unwrap();
        Checkpoint::from_bytes(&bytes).expect("the seed checkpoint loads");
        bytes
    })
}

/// One way of damaging a checkpoint file.
#[derive(Clone, Debug)]
enum Damage {
    Flip {
        at: usize,
        bits: u8,
    },
    Truncate {
        keep: usize,
    },
    Overwrite {
        at: usize,
        bytes: Vec<u8>,
    },
    /// A number in the JSON header replaced by another (a context of 10^9, a huge shape...).
    Number {
        nth: usize,
        value: u64,
    },
    Garbage(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Damage::Flip { at, bits }),
        any::<usize>().prop_map(|keep| Damage::Truncate { keep }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Damage::Overwrite { at, bytes }),
        (any::<usize>(), prop_oneof![Just(0u64), Just(1), Just(1 << 20), Just(1_000_000_000), Just(u32::MAX as u64), Just(u64::MAX), any::<u64>()])
            .prop_map(|(nth, value)| Damage::Number { nth, value }),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Damage::Garbage),
    ]
}

fn apply(good: &[u8], damage: &Damage) -> Vec<u8> {
    let mut bytes = good.to_vec();
    match damage {
        Damage::Flip { at, bits } => bytes[at % good.len()] ^= bits,
        Damage::Truncate { keep } => bytes.truncate(keep % good.len()),
        Damage::Overwrite { at, bytes: with } => {
            let at = at % good.len();
            let end = (at + with.len()).min(good.len());
            bytes[at..end].copy_from_slice(&with[..end - at]);
        }
        Damage::Number { nth, value } => {
            let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
            if header_len > good.len() - 8 {
                return bytes; // an earlier damage broke the length: nothing to edit
            }
            let header = String::from_utf8_lossy(&good[8..8 + header_len]).into_owned();
            let runs = digit_runs(&header);
            if runs.is_empty() {
                return bytes;
            }
            let (start, end) = runs[nth % runs.len()];
            let edited = format!("{}{value}{}", &header[..start], &header[end..]);
            bytes = [&(edited.len() as u64).to_le_bytes()[..], edited.as_bytes(), &good[8 + header_len..]].concat();
        }
        Damage::Garbage(g) => bytes = g.clone(),
    }
    bytes
}

/// The (start, end) of every run of ASCII digits in `s`.
fn digit_runs(s: &str) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices().chain([(s.len(), ' ')]) {
        match (c.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(st)) => {
                runs.push((st, i));
                start = None;
            }
            _ => {}
        }
    }
    runs
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn the_checkpoint_loader_answers_every_damaged_file(damages in prop::collection::vec(damage(), 1..4)) {
        let good = checkpoint_bytes();
        let bytes = damages.iter().fold(good.to_vec(), |b, d| if b.len() > 8 { apply(&b, d) } else { b });
        bounded(&format!("{damages:?}"), || {
            if let Ok(c) = Checkpoint::from_bytes(&bytes) {
                // Whatever loads is sound: finite values that passed their checksums, and run
                // state in range.
                assert!(c.names().iter().all(|n| c.values(n).unwrap().iter().all(|v| v.is_finite())));
                assert!(c.meta.config.validate().is_ok() && c.meta.tokenizer.validate().is_ok());
            }
        });
    }
}

/// A shard folder of two GPT-2 shards and its true `meta.json`, made once per test thread
/// in a folder of its own; the meta target rewrites the JSON.
fn shard_folder(tag: &str) -> (std::path::PathBuf, serde_json::Value) {
    use moegrad::data::shards::{ShardWriter, TokenWidth};
    let dir = std::env::temp_dir().join(format!("moegrad-fuzz-meta-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut entries = Vec::new();
    for (file, split, n) in [("f_val_000000.bin", "val", 40u32), ("f_train_000001.bin", "train", 60)] {
        let mut w = ShardWriter::create(&dir.join(file), TokenWidth::U16).unwrap();
        w.push(&(0..n).map(|i| 50_256 - i).collect::<Vec<_>>()).unwrap();
        w.finish().unwrap();
        entries.push(serde_json::json!({"file": file, "split": split, "tokens": n, "bytes": 3 * n}));
    }
    let meta = serde_json::json!({
        "format": 1, "name": "f", "tokenizer": "gpt2", "vocab_size": 50_257, "separator": 50_256, "token_bytes": 2,
        "shard_tokens": 60, "val_tokens": 40, "shards": entries, "sources": [], "complete": true,
    });
    (dir, meta)
}

/// A value a lying `meta.json` may hold in a number's place.
fn meta_number() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::json!(0)),
        Just(serde_json::json!(1)),
        Just(serde_json::json!(4)),
        Just(serde_json::json!(9)),
        Just(serde_json::json!(100)),
        Just(serde_json::json!(50_256)),
        Just(serde_json::json!(1u64 << 40)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(1.5)),
        Just(serde_json::json!("gpt2")),
        Just(serde_json::Value::Null),
        any::<u32>().prop_map(|v| serde_json::json!(v)),
    ]
}

/// What a `meta.json` may claim for a shard's file.
fn meta_file() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just("f_val_000000.bin".to_string()),
        Just("f_train_000001.bin".to_string()),
        Just("../../etc/passwd".to_string()),
        Just("/etc/hostname".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        Just("sub/f.bin".to_string()),
        "[ -~]{0,12}",
    ]
    .prop_map(serde_json::Value::String)
}

/// A few fields of the true meta replaced.
fn meta_edits() -> impl Strategy<Value = Vec<(usize, serde_json::Value, serde_json::Value)>> {
    prop::collection::vec((0usize..9, meta_number(), meta_file()), 1..4)
}

/// The rows of a scaling-law table as anyone might write them: header names (doubled
/// ones among them) and cells of numbers, extremes, non-numbers and gaps.
fn table_text() -> impl Strategy<Value = String> {
    let header = prop::collection::vec(prop_oneof![Just("params"), Just("tokens"), Just("loss"), Just("flops"), Just("name"), Just("loss")], 1..6);
    let cell = prop_oneof![
        (1e3f64..1e12).prop_map(|v| format!("{v:e}")),
        (1.5f64..6.0).prop_map(|v| format!("{v}")),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("".to_string()),
        Just("1e400".to_string()),
        "[a-z]{0,4}",
    ];
    (header, prop::collection::vec(prop::collection::vec(cell, 0..6), 0..12)).prop_map(|(header, rows)| {
        let mut text = header.join(",") + "\n";
        for row in rows {
            text += &(row.join(",") + "\n");
        }
        text
    })
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn a_shard_folder_answers_every_meta_json(edits in meta_edits()) {
        use moegrad::data::ShardFolder;
        let tag = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let (dir, mut meta) = shard_folder(&tag);
        for (field, number, file) in &edits {
            match field {
                0 => meta["format"] = number.clone(),
                1 => meta["vocab_size"] = number.clone(),
                2 => meta["separator"] = number.clone(),
                3 => meta["token_bytes"] = number.clone(),
                4 => meta["shards"][0]["tokens"] = number.clone(),
                5 => meta["shards"][1]["bytes"] = number.clone(),
                6 => meta["shards"][1]["file"] = file.clone(),
                7 => meta["tokenizer"] = if number.is_string() { serde_json::json!("llama3") } else { file.clone() },
                _ => meta["shards"][0]["split"] = if number.is_number() { serde_json::json!("train") } else { number.clone() },
            }
        }
        std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
        bounded(&meta.to_string(), || {
            if let Ok(folder) = ShardFolder::open(&dir, None) {
                // Whatever opens reads its windows in the vocabulary, inside the folder.
                for tokens in [folder.train_tokens(), folder.val_tokens()].into_iter().flatten() {
                    assert!(tokens.files().iter().all(|f| f.starts_with(&dir)), "{:?} leaves {}", tokens.files(), dir.display());
                    if tokens.window_count(8) > 0 {
                        let window = tokens.window(0, 8).unwrap();
                        assert!(window.iter().all(|&t| (t as usize) < folder.tokenizer.vocab_size()));
                    }
                }
            }
        });
    }

    #[test]
    fn the_fit_answers_every_table(text in table_text(), csv in any::<bool>()) {
        use moegrad::research::fit::{fit, Law, StartGrid};
        use moegrad::research::table::{read_table, TableOptions};
        let tag = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let path = std::env::temp_dir().join(format!("moegrad-fuzz-table-{}-{tag}.{}", std::process::id(), if csv { "csv" } else { "jsonl" }));
        std::fs::write(&path, &text).unwrap();
        bounded(&text, || {
            if let Ok(rows) = read_table(&path, &["params", "tokens"], &TableOptions::default()) {
                // Whatever is read is finite and positive, and fits or is refused by name.
                assert!(rows.iter().all(|r| r.params > 0.0 && r.tokens > 0.0 && r.loss > 0.0 && r.params.is_finite() && r.loss.is_finite()));
                if let Ok(f) = fit(&rows, Law::ParamsTokens, 1e-3, &StartGrid::sampled(4), false) {
                    assert!(f.exponents.iter().chain(&f.coefficients).all(|v| v.is_finite()), "{f:?}");
                }
            }
        });
        std::fs::remove_file(&path).unwrap();
    }
}
