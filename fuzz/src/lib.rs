//! What the fuzz targets share: a tiny byte-level tokenizer's GGUF metadata, GGUF files written by candle's
//! writer, fuzzed chunk splits, and the process set-up that keeps one fuzz process on one core.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::QTensor;
use candle_core::quantized::gguf_file::{self, Value};

/// One worker thread for the kernels' pool and rayon: a fuzz process must not spin on every core.
/// Called from each target's `init`, before any thread exists.
pub fn single_threaded() {
    for key in ["MODEL_RUNNER_THREADS", "RAYON_NUM_THREADS"] {
        if std::env::var_os(key).is_none() {
            // SAFETY: called once from libFuzzer's init, before this process starts any thread.
            unsafe { std::env::set_var(key, "1") };
        }
    }
}

/// GPT-2's byte-to-character table: the 256 single-character tokens of a byte-level vocabulary.
pub fn byte_level_chars() -> Vec<String> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut shifted = 0u32;
    (0..=255u8)
        .map(|b| {
            let c = if printable(b) {
                char::from(b)
            } else {
                shifted += 1;
                char::from_u32(255 + shifted).unwrap_or('?')
            };
            c.to_string()
        })
        .collect()
}

/// `tokenizer.ggml.*` for a byte-level BPE over the 256 byte tokens, a few merges and ChatML's markers
/// (control tokens; `<|im_end|>` is EOS). `extra` more normal tokens pad the vocabulary to a model's size.
pub fn tiny_tokenizer_metadata(extra: usize) -> HashMap<String, Value> {
    let mut tokens = byte_level_chars();
    let merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "{ \""];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    for i in 0..extra {
        tokens.push(format!("<extra_{i}>"));
    }
    let mut types = vec![1i32; tokens.len()];
    for marker in ["<|im_start|>", "<|im_end|>", "<|endoftext|>"] {
        tokens.push(marker.to_string());
        types.push(3);
    }
    let eos = tokens.len() as u32 - 2;
    let mut m = HashMap::new();
    m.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
    m.insert("tokenizer.ggml.pre".into(), Value::String("smollm".into()));
    m.insert(
        "tokenizer.ggml.tokens".into(),
        Value::Array(tokens.into_iter().map(Value::String).collect()),
    );
    m.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array(types.into_iter().map(Value::I32).collect()),
    );
    m.insert(
        "tokenizer.ggml.merges".into(),
        Value::Array(merges.iter().map(|s| Value::String(s.to_string())).collect()),
    );
    m.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(eos - 1));
    m.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(eos));
    m
}

/// A GGUF file's bytes, written by candle's own writer.
pub fn gguf_bytes(metadata: &[(String, Value)], tensors: &[(String, QTensor)]) -> Option<Vec<u8>> {
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensors).ok()?;
    Some(out.into_inner())
}

/// A file this process rewrites for each input (in /dev/shm when there is one: no disk I/O).
pub fn scratch_file(name: &str) -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static PATHS: OnceLock<std::sync::Mutex<HashMap<String, &'static Path>>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let builder = tempfile::Builder::new().prefix("model-runner-fuzz").tempdir_in(shm);
        builder.or_else(|_| tempfile::tempdir()).expect("a scratch directory")
    });
    let mut paths = PATHS.get_or_init(Default::default).lock().unwrap();
    paths
        .entry(name.to_string())
        .or_insert_with(|| Box::leak(Box::new(PathBuf::from(dir.path().join(name)))).as_path())
}

/// Splits `text` into pieces on char boundaries, their lengths (1..=16 bytes) drawn from `seed`.
pub fn split_chunks(text: &str, seed: u64) -> Vec<&str> {
    let mut state = seed | 1;
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        // xorshift64: cheap and deterministic for a given input.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut cut = ((state % 16) as usize + 1).min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    pieces
}

/// The default model's GGUF (as `scripts/fetch-default-model.sh` leaves it), if it is on this machine;
/// `MODEL_RUNNER_FUZZ_GGUF` names another file.
pub fn default_model_gguf() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MODEL_RUNNER_FUZZ_GGUF") {
        return Some(PathBuf::from(path));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let path = cache.join("model-runner/seed/SmolLM2-135M-Instruct.Q4_1.gguf");
    path.exists().then_some(path)
}

/// A GGUF's metadata, header only (candle's reader; the tensors are not read).
pub fn gguf_metadata(path: &Path) -> Option<HashMap<String, Value>> {
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    Some(gguf_file::Content::read(&mut reader).ok()?.metadata)
}
