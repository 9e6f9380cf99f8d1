//! The engine pinned against llama.cpp on the same GGUF files: tokenization, greedy continuations and
//! log-probabilities from fixtures made by scripts/make-reference.py; and batched steps against solo runs.

mod common;

use std::path::{Path, PathBuf};

use model_runner::engine::sampler::{SamplingParams, argmax, log_softmax};
use model_runner::engine::{Engine, EngineOptions, ModelFiles};
use model_runner::scheduler::{Event, Scheduler, SchedulerConfig, ValidRequest};
use models::{KvType, LogitsWanted, StepBatch};
use serde_json::Value;

fn engine(gguf: &Path, sequences: usize) -> Engine {
    engine_with_kv(gguf, sequences, KvType::default())
}

fn engine_with_kv(gguf: &Path, sequences: usize, kv_type: KvType) -> Engine {
    common::load_engine(gguf, 1024, sequences, kv_type)
}

fn gemma3_gguf() -> PathBuf {
    let out = std::process::Command::new("bash")
        .arg(common::repo_root().join("scripts/fetch-gemma3-270m.sh"))
        .output()
        .expect("fetch gemma3");
    assert!(out.status.success(), "fetching gemma-3-270m failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_tokenizer(engine: &Engine, fixture: &Value) {
    let mut mismatches = Vec::new();
    let cases = fixture["tokenize"].as_array().unwrap();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let ours = engine.tokenizer.encode(text, false).unwrap();
        if ours != ids(&case["ids"]) {
            mismatches.push(format!(
                "{text:?}: ours {ours:?}, llama.cpp {:?}",
                ids(&case["ids"])
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} strings tokenize differently:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

/// A reference step whose best two tokens are closer than this (in log-probability) is a near-tie: the
/// precision choices of two correct engines may order them either way. Measured on SmolLM2: storing the
/// KV cache in f16 instead of f32 alone moves log-probabilities by 0.032 on average and 0.33 at worst.
const NEAR_TIE: f64 = 0.5;
/// Bounds on |ours - llama.cpp| for the log-probability of llama.cpp's chosen token, along its own path.
const MEAN_LOGPROB_ERROR: f64 = 0.07;
const WORST_LOGPROB_ERROR: f64 = 0.5;

fn top1_margin(step: &Value) -> f64 {
    step[0][1].as_f64().unwrap() - step[1][1].as_f64().unwrap()
}

/// Every token of one request's stream, up to its end.
fn generated_tokens(scheduler: &Scheduler, request: ValidRequest) -> Vec<u32> {
    let mut events = scheduler.submit(request).expect("submit");
    let mut tokens = Vec::new();
    while let Some(event) = events.blocking_recv() {
        match event {
            Event::Token { token, .. } => tokens.push(token.id),
            Event::Done { .. } => return tokens,
            Event::Failed(e) => panic!("generation failed: {e}"),
        }
    }
    panic!("the scheduler stopped before the end")
}

/// Greedy decoding (through the scheduler, the one generation path) must pick llama.cpp's tokens until the
/// first near-tie; along llama.cpp's path (teacher forcing) every decisive step must agree and
/// log-probabilities must stay close.
fn check_greedy(gguf: &Path, fixture: &Value) {
    check_greedy_with_kv(gguf, fixture, KvType::default())
}

fn check_greedy_with_kv(gguf: &Path, fixture: &Value, kv_type: KvType) {
    check_greedy_files(&[gguf.to_path_buf()], fixture, kv_type)
}

/// `check_greedy_with_kv` for a model in several files.
fn check_greedy_files(gguf: &[PathBuf], fixture: &Value, kv_type: KvType) {
    let engine = || common::load_engine_files(gguf.to_vec(), 1024, 1, kv_type);
    let scheduler = Scheduler::start(engine(), SchedulerConfig::default());
    let mut engine = engine();
    let (mut error_sum, mut steps) = (0.0, 0);
    for case in fixture["generate"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let reference = ids(&case["greedy_ids"]);
        let tops = case["top_logprobs"].as_array().unwrap();
        let request = ValidRequest {
            prompt: prompt.clone(),
            sampling: SamplingParams::greedy(),
            max_tokens: reference.len(),
            stop: Vec::new(),
            ignore_eos: true,
            constraint: None,
        };
        let ours = generated_tokens(&scheduler, request);
        let decisive = tops
            .iter()
            .take_while(|t| top1_margin(t) >= NEAR_TIE)
            .count();
        assert_eq!(
            ours[..decisive],
            reference[..decisive],
            "greedy continuation of {:?} before its first near-tie (step {decisive})",
            case["prompt"]
        );

        // Teacher forcing: llama.cpp's prompt and continuation in one step, logits at every position.
        let mut all = prompt.clone();
        all.extend(&reference[..reference.len() - 1]);
        let mut lease = engine.pool().lease();
        lease.reserve(all.len()).unwrap();
        let mut batch = StepBatch::default();
        batch.push(&all, 0, lease.blocks().to_vec(), LogitsWanted::All);
        let logits = engine.step(&batch).unwrap().to_vec2::<f32>().unwrap();
        for (i, top) in tops.iter().enumerate() {
            let lp = log_softmax(&logits[prompt.len() - 1 + i]);
            let (reference_id, reference_lp) = (
                top[0][0].as_u64().unwrap() as usize,
                top[0][1].as_f64().unwrap(),
            );
            let error = (lp[reference_id] as f64 - reference_lp).abs();
            assert!(
                error < WORST_LOGPROB_ERROR,
                "step {i} of {:?}: log-probability {} vs llama.cpp {reference_lp}",
                case["prompt"],
                lp[reference_id]
            );
            if top1_margin(top) >= NEAR_TIE {
                assert_eq!(
                    argmax(&lp) as usize,
                    reference_id,
                    "step {i} of {:?}: a decisive choice differs",
                    case["prompt"]
                );
            }
            error_sum += error;
            steps += 1;
        }
    }
    let mean = error_sum / steps as f64;
    assert!(
        mean < MEAN_LOGPROB_ERROR,
        "mean log-probability error {mean} over {steps} steps"
    );
}

#[test]
fn smollm2_tokenizes_like_llama_cpp() {
    check_tokenizer(
        &engine(&common::default_model_gguf(), 1),
        &common::fixture("smollm2-135m-instruct-q4_1.json"),
    );
}

#[test]
fn smollm2_greedy_continuations_and_logprobs_match_llama_cpp() {
    check_greedy(
        &common::default_model_gguf(),
        &common::fixture("smollm2-135m-instruct-q4_1.json"),
    );
}

/// A q8_0 cache, against llama.cpp run with the same cache type (`-ctk q8_0 -ctv q8_0`), is held to the
/// bounds the f16 cache is held to against llama.cpp's f16 run. (llama.cpp's own q8_0 run moves its
/// chosen tokens' log-probabilities from its f16 run's by 0.031 on average and 0.25 at worst.)
#[test]
fn smollm2_with_a_q8_0_kv_cache_stays_within_llama_cpps_bounds() {
    check_greedy_with_kv(
        &common::default_model_gguf(),
        &common::fixture("smollm2-135m-instruct-q4_1-kv-q8_0.json"),
        KvType::Q8_0,
    );
}

#[test]
fn gemma3_tokenizes_and_continues_like_llama_cpp() {
    let gguf = gemma3_gguf();
    let fixture = common::fixture("gemma3-270m-q4_k_m.json");
    check_tokenizer(&engine(&gguf, 1), &fixture);
    check_greedy(&gguf, &fixture);
}

/// Logits of each sequence when it runs alone, step by step, for comparison with a shared step.
fn solo_logits(engine: &mut Engine, steps: &[(&[u32], usize)]) -> Vec<f32> {
    let mut lease = engine.pool().lease();
    let mut last = Vec::new();
    for (tokens, cached) in steps {
        lease.reserve(cached + tokens.len()).unwrap();
        let mut batch = StepBatch::default();
        batch.push(tokens, *cached, lease.blocks().to_vec(), LogitsWanted::Last);
        last = engine
            .step(&batch)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
    }
    last
}

#[test]
fn a_batched_step_gives_each_sequence_its_solo_logits() {
    let mut engine = engine(&common::default_model_gguf(), 4);
    let prompt_a: Vec<u32> = engine
        .tokenizer
        .encode("The capital of France is", true)
        .unwrap();
    let prompt_b: Vec<u32> = engine
        .tokenizer
        .encode("Once upon a time there was a", true)
        .unwrap();
    let prompt_c: Vec<u32> = engine
        .tokenizer
        .encode("def fibonacci(n): return n if n < 2 else", true)
        .unwrap();
    let next_a = 1_000u32;

    // A decodes one token after its prompt; B prefills whole; C prefills its second half after the first.
    let split = prompt_c.len() / 2;
    let solo_a = solo_logits(&mut engine, &[(&prompt_a, 0), (&[next_a], prompt_a.len())]);
    let solo_b = solo_logits(&mut engine, &[(&prompt_b, 0)]);
    let solo_c = solo_logits(
        &mut engine,
        &[(&prompt_c[..split], 0), (&prompt_c[split..], split)],
    );

    let (mut lease_a, mut lease_c) = (engine.pool().lease(), engine.pool().lease());
    let mut lease_b = engine.pool().lease();
    lease_a.reserve(prompt_a.len() + 1).unwrap();
    lease_c.reserve(prompt_c.len()).unwrap();
    lease_b.reserve(prompt_b.len()).unwrap();
    let mut warmup = StepBatch::default();
    warmup.push(&prompt_a, 0, lease_a.blocks().to_vec(), LogitsWanted::None);
    warmup.push(
        &prompt_c[..split],
        0,
        lease_c.blocks().to_vec(),
        LogitsWanted::None,
    );
    engine.step(&warmup).unwrap();

    let mut shared = StepBatch::default();
    shared.push(
        &[next_a],
        prompt_a.len(),
        lease_a.blocks().to_vec(),
        LogitsWanted::Last,
    );
    shared.push(&prompt_b, 0, lease_b.blocks().to_vec(), LogitsWanted::Last);
    shared.push(
        &prompt_c[split..],
        split,
        lease_c.blocks().to_vec(),
        LogitsWanted::Last,
    );
    let logits = engine.step(&shared).unwrap();
    assert_eq!(logits.dims2().unwrap().0, 3);
    for (row, solo) in [solo_a, solo_b, solo_c].iter().enumerate() {
        let batched = logits.get(row).unwrap().to_vec1::<f32>().unwrap();
        let worst = batched
            .iter()
            .zip(solo)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-4,
            "sequence {row}: batched logits differ from solo by {worst}"
        );
    }
}

/// A model whose template would ask for a terabyte loads, and each render fails with a template error.
#[test]
fn a_hostile_chat_template_fails_the_render_not_the_process() {
    use model_runner::engine::chat_template::{ChatMessage, TemplateError};
    let files = ModelFiles {
        gguf: vec![common::default_model_gguf()],
        chat_template: Some("{{ messages | tojson(indent=1000000000000) }}".to_string()),
        context_size: None,
    };
    let options = EngineOptions {
        context_size: Some(256),
        ..Default::default()
    };
    let engine = Engine::load(&files, &options).expect("load engine");
    let err = engine
        .template
        .render(&[ChatMessage::new("user", "Hi")], None, true)
        .unwrap_err();
    assert!(matches!(err, TemplateError::Render(_)), "{err}");

    // A prompt that could never fit the context is refused before tokenizing.
    let err = engine
        .tokenizer
        .encode_for_context(&"word ".repeat(10_000), true, engine.context_size())
        .unwrap_err();
    assert!(
        matches!(
            err,
            model_runner::engine::tokenizer::TokenizerError::TooLong { .. }
        ),
        "{err}"
    );
}

/// A GGUF that declares `general.alignment = 0` (candle would divide by it) fails to load with an error.
#[test]
fn a_gguf_with_a_zero_alignment_fails_to_load_with_an_error() {
    let mut b: Vec<u8> = Vec::new();
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes()); // tensors
    b.extend(2u64.to_le_bytes()); // keys
    string(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    string(&mut b, "llama");
    string(&mut b, "general.alignment");
    b.extend(4u32.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("align0.gguf");
    std::fs::write(&path, &b).unwrap();
    let files = ModelFiles {
        gguf: vec![path],
        chat_template: None,
        context_size: None,
    };
    let err = Engine::load(&files, &EngineOptions::default())
        .err()
        .expect("a zero alignment was accepted");
    assert!(err.to_string().contains("general.alignment"), "{err}");
}

/// A split GGUF (llama.cpp's `-0000N-of-0000K.gguf` shards) packaged from its first shard loads from the
/// store as one model and answers as llama.cpp answers the whole file.
#[test]
fn a_split_gguf_packaged_from_its_shards_answers_like_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::python())
        .arg(common::repo_root().join("scripts/split-gguf.py"))
        .arg(common::default_model_gguf())
        .arg(dir.path().join("smollm2.gguf"))
        .args(["--max-tensors", "120"])
        .output()
        .expect("split-gguf.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shards: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(shards.len(), 3, "{shards:?}");

    let home = dir.path().join("home");
    let packaged = std::process::Command::new(env!("CARGO_BIN_EXE_model"))
        .env("MODEL_RUNNER_HOME", &home)
        .args(["package", "--gguf"])
        .arg(&shards[0])
        .arg("split/smollm2")
        .output()
        .expect("model package");
    assert!(
        packaged.status.success(),
        "{}",
        String::from_utf8_lossy(&packaged.stderr)
    );
    let store = model_runner::store::Store::open(&home).unwrap();
    let model = store.resolve("split/smollm2").unwrap();
    let files = model_runner::runtime::model_files(&store, &model).unwrap();
    assert_eq!(files.gguf.len(), 3, "one stored layer per shard");

    // The store's blobs in reverse: the engine orders shards by their own `split.no`.
    let mut blobs = files.gguf.clone();
    blobs.reverse();
    check_greedy_files(
        &blobs,
        &common::fixture("smollm2-135m-instruct-q4_1.json"),
        KvType::default(),
    );

    // Shards of different models, or one missing, are one-line errors, not a half-loaded model.
    let options = EngineOptions::default();
    let missing = ModelFiles {
        gguf: files.gguf[..2].to_vec(),
        chat_template: None,
        context_size: None,
    };
    let error = Engine::load(&missing, &options)
        .err()
        .expect("two of three shards");
    assert!(error.to_string().contains("split.count 3"), "{error}");
    let doubled = ModelFiles {
        gguf: vec![
            files.gguf[0].clone(),
            files.gguf[1].clone(),
            files.gguf[1].clone(),
        ],
        chat_template: None,
        context_size: None,
    };
    let error = Engine::load(&doubled, &options)
        .err()
        .expect("a shard twice");
    assert!(error.to_string().contains("split.no 1"), "{error}");
}
