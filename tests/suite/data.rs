//! Research-scale data: `prepare` writes llm.c shards from text and JSONL (and resumes to
//! the same bytes after an interruption), training reads shard folders window by window
//! (prepared ones and llm.c's own), resumes from them exactly, keeps its memory flat from
//! 10 MB to 500 MB of tokens, and names every kind of bad input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use moegrad::data::folder::Split;
use moegrad::data::shards::{Shard, HEADER_BYTES};
use moegrad::data::{prepare, PrepareOptions, PrepareStart, ShardFolder, ShardMeta};
use moegrad::train::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use moegrad::train::config::{RunConfig, TokenizerKind};
use moegrad::train::data::BUNDLED_CORPUS;
use moegrad::train::run_folder::Start;
use moegrad::train::tokenizer::{HuggingFace, Standard, Tokenizer};

use crate::common::{config_from_sets, scratch, train_quietly as run};

fn options(tokenizer: &str, out: &Path, inputs: Vec<PathBuf>) -> PrepareOptions {
    PrepareOptions {
        tokenizer: TokenizerKind::try_from(tokenizer.to_string()).unwrap(),
        out: out.to_path_buf(),
        name: Some("shakespeare".into()),
        shard_tokens: 20_000,
        val_tokens: Some(10_000),
        inputs,
        start: PrepareStart::Fresh,
        stop_after_shards: None,
    }
}

/// The bundled corpus as a file (prepare reads files).
fn corpus_file(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("shakespeare.txt");
    std::fs::write(&path, BUNDLED_CORPUS).unwrap();
    path
}

fn tiny(data: &Path, extra: &[&str]) -> RunConfig {
    let data = format!("data.path={}", toml::Value::String(data.display().to_string()));
    let base = [
        "model.d_model=16",
        "model.layers=1",
        "model.heads=2",
        "model.context=16",
        "train.batch_size=2",
        "train.warmup=0",
        "train.lr=1e-2",
        "train.eval_batches=1",
        "train.eval_every=0",
        "train.log_every=1",
        &data,
    ];
    config_from_sets(&base, extra)
}

/// An llm.c shard, written byte by byte as llm.c's `write_datafile` does.
fn llm_c_shard(path: &Path, tokens: &[u16]) {
    let mut header = [0i32; 256];
    (header[0], header[1], header[2]) = (20240520, 1, tokens.len() as i32);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&header.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    f.write_all(&tokens.iter().flat_map(|t| t.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

#[test]
fn gpt2_shards_of_the_bundled_corpus_train_a_gpt2_vocabulary_model() {
    let dir = scratch("data-gpt2");
    let shards = dir.join("shards");
    let meta = prepare(&options("gpt2", &shards, vec![corpus_file(&dir)]), |_, _| {}).unwrap();
    assert!(meta.complete && meta.shards[0].split == Split::Val && meta.shards[0].file == "shakespeare_val_000000.bin");
    assert_eq!(meta.shards[1].file, "shakespeare_train_000001.bin");
    assert!(meta.shards[1..].iter().all(|s| s.split == Split::Train) && meta.shards.len() > 10);
    // Cut into pieces and tokenized in parallel, the corpus gives exactly its whole tokens.
    let gpt2 = Tokenizer::Tiktoken { encoding: Standard::Gpt2 };
    let whole = gpt2.encode(BUNDLED_CORPUS).unwrap();
    let written: Vec<u32> = meta
        .shards
        .iter()
        .flat_map(|s| {
            let shard = Shard::open(&shards.join(&s.file)).unwrap();
            assert_eq!(shard.len(), s.tokens);
            shard.read(0, s.tokens as usize).unwrap()
        })
        .collect();
    assert_eq!(written[0], 50256, "a document starts with <|endoftext|>");
    assert_eq!(&written[1..], &whole[..]);
    assert_eq!(meta.shards.iter().map(|s| s.bytes).sum::<u64>(), BUNDLED_CORPUS.len() as u64, "bytes per shard add up to the text");
    assert!(std::fs::read(shards.join(&meta.shards[0].file)).unwrap().len() == HEADER_BYTES + 2 * 10_000, "uint16 tokens");

    let sets = ["train.steps=10", "model.d_model=32", "train.batch_size=4", "train.lr=3e-2", "train.min_lr=3e-2", "train.eval_batches=2"];
    let s = run(tiny(&shards, &sets), &dir.join("run"), Start::Fresh, None).unwrap();
    // From ln 50304 = 10.83 (uniform) to about 8.7 on lavapipe.
    assert!(s.final_eval_loss < s.initial_eval_loss - 1.0, "eval loss {} -> {}", s.initial_eval_loss, s.final_eval_loss);
    let ckpt = Checkpoint::load(&dir.join("run").join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(ckpt.meta.tokenizer, gpt2);
    assert_eq!(ckpt.meta.config.model.vocab_size, 50_304, "GPT-2's 50,257 padded up to a multiple of 64");
    assert_eq!(ckpt.meta.config.data.tokenizer, TokenizerKind::Standard(Standard::Gpt2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_interrupted_prepare_resumes_to_the_same_shards() {
    let dir = scratch("data-resume");
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let cut = (300_000..).find(|&i| BUNDLED_CORPUS.is_char_boundary(i)).unwrap();
    std::fs::write(docs.join("a.txt"), &BUNDLED_CORPUS[..cut]).unwrap();
    let paragraphs: Vec<&str> = BUNDLED_CORPUS[cut..].split("\n\n").collect();
    let lines: Vec<String> = paragraphs.iter().map(|p| serde_json::json!({"text": p, "id": 1}).to_string()).collect();
    std::fs::write(docs.join("b.jsonl"), lines.join("\n") + "\n\n").unwrap();
    let straight = prepare(&options("gpt2", &dir.join("straight"), vec![docs.clone()]), |_, _| {}).unwrap();

    let out = dir.join("interrupted");
    let mut opts = PrepareOptions { stop_after_shards: Some(3), ..options("gpt2", &out, vec![docs.clone()]) };
    let first = prepare(&opts, |_, _| {}).unwrap();
    assert!(!first.complete && first.shards.len() == 3);
    let err = ShardFolder::open(&out, None).err().unwrap().to_string();
    assert!(err.contains("unfinished prepare") && err.contains("--resume"), "{err}");
    let err = prepare(&opts, |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("already holds shards") && err.contains("--force"), "{err}");
    std::fs::write(out.join(".shakespeare_train_000003.bin.999.0.tmp"), "half a shard").unwrap();
    opts.start = PrepareStart::Resume;
    let err = prepare(&PrepareOptions { shard_tokens: 30_000, ..opts.clone() }, |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("shard tokens: 30000 now vs 20000 then"), "{err}");
    prepare(&PrepareOptions { stop_after_shards: Some(2), ..opts.clone() }, |_, _| {}).unwrap();
    let resumed = prepare(&PrepareOptions { stop_after_shards: None, ..opts.clone() }, |_, _| {}).unwrap();
    assert!(resumed.complete);
    assert_eq!(resumed.shards, straight.shards);
    for s in &straight.shards {
        assert_eq!(std::fs::read(out.join(&s.file)).unwrap(), std::fs::read(dir.join("straight").join(&s.file)).unwrap(), "{}", s.file);
    }
    assert!(!out.join(".shakespeare_train_000003.bin.999.0.tmp").exists(), "a killed prepare's half shard is removed");
    let err = prepare(&opts, |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("complete already"), "{err}");
    // Every paragraph of b.jsonl is a document of its own.
    let separators: usize = straight
        .shards
        .iter()
        .map(|s| Shard::open(&dir.join("straight").join(&s.file)).unwrap().read(0, s.tokens as usize).unwrap().iter().filter(|&&t| t == 50256).count())
        .sum();
    assert_eq!(separators, 1 + paragraphs.iter().filter(|p| !p.is_empty()).count(), "an empty text is no document");
    assert!(prepare(&PrepareOptions { start: PrepareStart::Force, stop_after_shards: None, ..opts }, |_, _| {}).unwrap().complete, "--force starts over");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A Hugging Face tokenizer.json (byte-level, no merges, with an `<|endoftext|>`), built
/// here so that no tokenizer file ships with the tests.
fn hugging_face_tokenizer(path: &Path) {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let vocab: tokenizers::models::bpe::Vocab = alphabet.iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, vec![]).build().unwrap();
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    t.with_decoder(Some(ByteLevel::new(false, true, true)));
    t.add_special_tokens(&[tokenizers::AddedToken::from("<|endoftext|>", true)]);
    std::fs::write(path, t.to_string(false).unwrap()).unwrap();
}

#[test]
fn a_hugging_face_tokenizer_json_prepares_shards_and_travels_with_the_run() {
    let dir = scratch("data-hf");
    let file = dir.join("hf").join("tokenizer.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    hugging_face_tokenizer(&file);
    let t = HuggingFace::from_file(&file).unwrap();
    let tokenizer = Tokenizer::HuggingFace(t.clone());
    assert_eq!(tokenizer.vocab_size(), 257);
    assert_eq!(tokenizer.separator(), Some(256));
    let text = "To be, or not to be: ça!";
    let ids = tokenizer.encode(text).unwrap();
    assert_eq!(ids.len(), text.len(), "one token a byte");
    assert_eq!(tokenizer.decode(&ids), text);
    let json = serde_json::to_string(&tokenizer).unwrap();
    assert_eq!(serde_json::from_str::<Tokenizer>(&json).unwrap(), tokenizer, "the whole file travels in a checkpoint");

    let shards = dir.join("shards");
    let opts = PrepareOptions { val_tokens: Some(40_000), shard_tokens: 200_000, ..options(file.to_str().unwrap(), &shards, vec![corpus_file(&dir)]) };
    let meta = prepare(&opts, |_, _| {}).unwrap();
    assert_eq!((meta.tokenizer.as_str(), meta.token_bytes), ("tokenizer.json", 2));
    assert_eq!(ShardMeta::read(&shards).unwrap().tokenizer(&shards).unwrap(), tokenizer, "the folder keeps a copy of the tokenizer");
    let s = run(tiny(&shards, &["train.steps=2"]), &dir.join("run"), Start::Fresh, None).unwrap();
    assert!(s.final_eval_loss.is_finite());
    let ckpt = Checkpoint::load(&dir.join("run").join(CHECKPOINT_FILE)).unwrap();
    assert_eq!((ckpt.meta.tokenizer.clone(), ckpt.meta.config.model.vocab_size), (tokenizer, 320));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn llm_c_shards_are_read_as_they_are_and_a_run_from_them_resumes_exactly() {
    let dir = scratch("data-llmc");
    let shards = dir.join("llmc");
    std::fs::create_dir_all(&shards).unwrap();
    let bytes: Vec<u16> = BUNDLED_CORPUS.bytes().map(u16::from).collect();
    llm_c_shard(&shards.join("tiny_val_000000.bin"), &bytes[..20_000]);
    llm_c_shard(&shards.join("tiny_train_000001.bin"), &bytes[20_000..400_000]);
    llm_c_shard(&shards.join("tiny_train_000002.bin"), &bytes[400_000..]);
    let folder = ShardFolder::open(&shards, Some(&TokenizerKind::Byte)).unwrap();
    assert_eq!(folder.train_tokens().unwrap().sequence_lens(), vec![380_000, bytes.len() as u64 - 400_000]);
    assert_eq!(folder.val_bytes_per_token(), None, "llm.c records no bytes");

    let config = tiny(&shards, &["train.steps=8", "train.checkpoint_every=2"]);
    let straight = run(config.clone(), &dir.join("straight"), Start::Fresh, None).unwrap();
    run(config.clone(), &dir.join("resumed"), Start::Fresh, Some(4)).unwrap();
    let resumed = run(config, &dir.join("resumed"), Start::Resume, None).unwrap();
    assert_eq!(straight.final_eval_loss, resumed.final_eval_loss);
    let (a, b) =
        (Checkpoint::load(&dir.join("straight").join(CHECKPOINT_FILE)).unwrap(), Checkpoint::load(&dir.join("resumed").join(CHECKPOINT_FILE)).unwrap());
    for name in a.names() {
        assert!(a.values(name).unwrap().iter().zip(b.values(name).unwrap()).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} differs after resuming");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_data_is_refused_naming_the_file_and_the_fault() {
    let dir = scratch("data-bad");
    let refused = |opts: PrepareOptions| prepare(&opts, |_, _| {}).unwrap_err().to_string();
    std::fs::create_dir_all(&dir).unwrap();
    let jsonl = dir.join("docs.jsonl");
    std::fs::write(&jsonl, "{\"text\": \"one\"}\n\n{\"text\": \"two\"}\n{\"text\": \"three\"\n").unwrap();
    let err = refused(options("gpt2", &dir.join("a"), vec![jsonl.clone()]));
    assert!(err.contains("docs.jsonl line 4: not JSON"), "{err}");
    std::fs::write(&jsonl, "{\"text\": \"one\"}\n{\"body\": \"two\"}\n").unwrap();
    assert!(refused(options("gpt2", &dir.join("a"), vec![jsonl.clone()])).contains("docs.jsonl line 2: no \"text\" string field"));
    std::fs::write(dir.join("table.csv"), "a,b").unwrap();
    assert!(refused(options("gpt2", &dir.join("a"), vec![dir.join("table.csv")])).contains("expected a .txt or .jsonl file"));
    assert!(refused(options("gpt2", &dir.join("a"), vec![dir.join("missing.txt")])).contains("missing.txt does not exist"));
    assert!(refused(options("byte", &dir.join("a"), vec![jsonl.clone()])).contains("needs a tokenizer with a document separator"));
    std::fs::write(&jsonl, "{\"text\": \"only a few tokens\"}\n").unwrap();
    assert!(refused(options("gpt2", &dir.join("a"), vec![jsonl])).contains("no more than the 10000 the val shard takes"));

    let shards = dir.join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let ids: Vec<u16> = (0..5_000).map(|i| (i % 250) as u16).collect();
    llm_c_shard(&shards.join("x_train_000001.bin"), &ids);
    let train_err = |extra: &[&str]| run(tiny(&shards, extra), &dir.join("run"), Start::Force, None).unwrap_err().to_string();
    assert!(train_err(&["train.steps=1"]).contains("has no val shard"));
    // The first evaluation window starts at the val shard's start.
    let wide: Vec<u16> = [5].into_iter().chain([300; 99]).collect();
    llm_c_shard(&shards.join("x_val_000000.bin"), &wide);
    let err = train_err(&["train.steps=1"]);
    assert!(err.contains("x_val_000000.bin: token 1 (id 300) is beyond the vocabulary of 256"), "{err}");
    let mut truncated = std::fs::read(shards.join("x_val_000000.bin")).unwrap();
    truncated.truncate(truncated.len() - 101);
    std::fs::write(shards.join("x_val_000000.bin"), &truncated).unwrap();
    let err = train_err(&["train.steps=1"]);
    assert!(err.contains("counts 100 tokens but the file holds 49"), "{err}");
    truncated[0] = 7;
    std::fs::write(shards.join("x_val_000000.bin"), &truncated).unwrap();
    assert!(train_err(&["train.steps=1"]).contains("x_val_000000.bin: magic number"));
    assert!(train_err(&["train.steps=1", "data.tokenizer=\"bpe\""]).contains("cannot read shards"));

    // A run's checkpoint and shards of another tokenizer.
    let gpt2 = dir.join("gpt2");
    let text = dir.join("t.txt");
    std::fs::write(&text, &BUNDLED_CORPUS[..100_000]).unwrap();
    prepare(&PrepareOptions { val_tokens: Some(2_000), ..options("gpt2", &gpt2, vec![text]) }, |_, _| {}).unwrap();
    let err = run(tiny(&gpt2, &["train.steps=1", "data.tokenizer=\"cl100k\""]), &dir.join("run"), Start::Force, None).unwrap_err().to_string();
    assert!(err.contains("data.tokenizer = \"cl100k\" but the shards") && err.contains("made with gpt2"), "{err}");
    llm_c_shard(&shards.join("x_val_000000.bin"), &ids);
    run(tiny(&shards, &["train.steps=2"]), &dir.join("run"), Start::Force, Some(1)).unwrap();
    let mut other = Checkpoint::load(&dir.join("run").join(CHECKPOINT_FILE)).unwrap().meta.config;
    other.data.path = gpt2.display().to_string();
    let err = run(other, &dir.join("run"), Start::Resume, None).unwrap_err().to_string();
    assert!(err.contains("the checkpoint's tokenizer (byte) is not the one the shards") && err.contains("(gpt2)"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The process's peak resident memory training from the shard folder `data`, reported by
/// a child `moegrad train` (a process of its own, so no other test's memory counts).
fn peak_host_mib(data: &Path, out: &Path) -> f64 {
    let sets = [
        "model.d_model=16",
        "model.layers=1",
        "model.heads=2",
        "model.context=16",
        "train.steps=3",
        "train.batch_size=4",
        "train.eval_batches=1",
        "train.warmup=0",
        "data.tokenizer=\"byte\"",
    ];
    let args: Vec<&str> = sets.iter().flat_map(|s| ["--set", s]).collect();
    let run = Command::new(env!("CARGO_BIN_EXE_moegrad"))
        .args(["train", "--quiet", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(args)
        .env("NODEVICE_SELECT", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let at = stdout.find(" MiB on the host").unwrap_or_else(|| panic!("no host memory in {stdout}"));
    stdout[..at].rsplit(' ').next().unwrap().parse().unwrap()
}

/// Shards of `tokens` random byte ids (seeded), in files of at most 50M tokens.
fn random_shards(dir: &Path, tokens: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut chunk = vec![0u16; 1 << 20];
    llm_c_shard(&dir.join("big_val_000000.bin"), &BUNDLED_CORPUS.bytes().take(50_000).map(u16::from).collect::<Vec<_>>());
    let (mut left, mut index) = (tokens, 1);
    while left > 0 {
        let n = left.min(50_000_000);
        let mut header = [0i32; 256];
        (header[0], header[1], header[2]) = (20240520, 1, n as i32);
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("big_train_{index:06}.bin"))).unwrap());
        f.write_all(&header.iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let mut written = 0;
        while written < n {
            let m = (n - written).min(chunk.len() as u64) as usize;
            for t in &mut chunk[..m] {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *t = (state >> 56) as u16;
            }
            f.write_all(&chunk[..m].iter().flat_map(|t| t.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
            written += m as u64;
        }
        (left, index) = (left - n, index + 1);
    }
}

#[test]
fn memory_stays_flat_from_10_mb_to_500_mb_of_tokens() {
    let dir = scratch("data-flat");
    random_shards(&dir.join("small"), 5_000_000);
    random_shards(&dir.join("large"), 250_000_000);
    let large_bytes: u64 = std::fs::read_dir(dir.join("large")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(large_bytes > 500_000_000, "{large_bytes} bytes");
    let (small, large) = (peak_host_mib(&dir.join("small"), &dir.join("run-small")), peak_host_mib(&dir.join("large"), &dir.join("run-large")));
    assert!((large - small).abs() < 100.0, "peak resident memory {small:.0} MiB on 10 MB of tokens, {large:.0} MiB on 500 MB");
    std::fs::remove_dir_all(&dir).unwrap();
}
