//! Encoder families proven by structure: small BERT GGUFs with the real metadata keys and tensor layout of
//! all-MiniLM-L6-v2 (mean pooling) and of the cross-encoder ms-marco-MiniLM-L-6-v2 (rank pooling with its
//! classifier head), random weights and a deterministic WordPiece vocabulary (scripts/synthesize-gguf.py),
//! run by our engine and compared with what llama.cpp computed on the same bytes (fixtures from
//! scripts/make-encoder-reference.py): the same token ids for every text, embeddings with cosine similarity
//! of at least 0.999, reranking scores in llama.cpp's order and within 1e-3 (relative to the largest score)
//! of llama.cpp's plus twice llama.cpp's own distance from the exact score. The fixture records that exact
//! score (the same forward in float64 numpy): llama.cpp's CPU matmuls round an F16 file's activations to
//! f16, which alone moves a one-number output by about 2e-3 of the largest score; ours keep f32.

mod common;

use std::path::{Path, PathBuf};

use model_runner::engine::Engine;
use serde_json::Value;

const MIN_COSINE: f64 = 0.999;
const MAX_SCORE_ERROR: f64 = 1e-3;
/// A decoder reranker's probability of "yes" against llama.cpp's: llama.cpp rounds an F16 file's
/// activations to f16, and a Q8_0 file's to Q8_0 blocks, in every matmul of every layer (measured: 1.4e-4
/// on F16, 4.5e-3 on Q8_0).
const MAX_PROBABILITY_ERROR: f64 = 1e-2;

/// The family's file of `file_type`, checked against the bytes llama.cpp ran. The decoder families borrow
/// the default model's tokenizer, the XLM-R ones llama.cpp's own XLM-R vocabulary
/// (scripts/fetch-xlmr-vocab.sh); the BERT families write their own.
fn synthesize(family: &str, file_type: &str, sha256: &str, dir: &Path) -> PathBuf {
    let tokenizer = if family.starts_with("xlmr") {
        Some(xlmr_vocab())
    } else {
        family.starts_with("qwen3").then(common::default_model_gguf)
    };
    common::synthesize_gguf(family, file_type, tokenizer.as_deref(), sha256, dir)
}

/// A real XLM-RoBERTa Unigram vocabulary (bge-m3's, with its precompiled charsmap).
fn xlmr_vocab() -> PathBuf {
    let out = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-xlmr-vocab.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/fetch-xlmr-vocab.sh");
    assert!(out.status.success(), "fetching the XLM-R vocabulary failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// How far our rerank scores may be from llama.cpp's, relative to the largest: `MAX_SCORE_ERROR` plus
/// twice llama.cpp's own largest distance from the exact (float64) score on this file. A decoder
/// reranker's file records no exact score (its outputs are probabilities after a softmax):
/// `MAX_PROBABILITY_ERROR` then, relative to the largest.
fn score_bound(file: &Value) -> f64 {
    let cases = file["scores"].as_array().unwrap();
    let scale = score_scale(file);
    if cases.iter().any(|c| c.get("exact_score").is_none()) {
        return MAX_PROBABILITY_ERROR / scale;
    }
    let own = cases
        .iter()
        .map(|c| (c["score"].as_f64().unwrap() - c["exact_score"].as_f64().unwrap()).abs() / scale)
        .fold(0f64, f64::max);
    MAX_SCORE_ERROR + 2.0 * own
}

/// The largest |score| llama.cpp gave: the scale rerank errors are measured against.
fn score_scale(file: &Value) -> f64 {
    file["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["score"].as_f64().unwrap().abs())
        .fold(1e-6, f64::max)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cosine(a: &[f64], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * *y as f64).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

/// Every text tokenizes to llama.cpp's ids ([CLS] ... [SEP], special markers matched).
fn check_tokens(engine: &Engine, file: &Value, label: &str) {
    for case in file["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            engine.tokenizer.encode(text, true).unwrap(),
            ids(&case["ids"]),
            "{label}: {text:?} tokenizes differently from llama.cpp"
        );
    }
}

/// Synthesizes each file type of `family`, loads it and hands it to `check`.
fn each_file(family: &str, mut check: impl FnMut(&str, &mut Engine, &Value)) {
    let fixture = common::fixture(&format!("encoders/{family}.json"));
    let dir = tempfile::tempdir().expect("temporary directory");
    for (file_type, file) in fixture["files"].as_object().unwrap() {
        let gguf = synthesize(
            family,
            file_type,
            file["sha256"].as_str().unwrap(),
            dir.path(),
        );
        let mut engine = common::load_engine(&gguf, 512, 1, models::KvType::default());
        let label = format!("{family} {file_type}");
        check_tokens(&engine, file, &label);
        check(&label, &mut engine, file);
    }
}

/// Every recorded embedding, ours against llama.cpp's: unit length, cosine at least `MIN_COSINE`.
fn check_embeddings(label: &str, engine: &mut Engine, file: &Value) {
    let mut worst: f64 = 1.0;
    for case in file["embeddings"].as_array().unwrap() {
        let ours = engine.embed(&ids(&case["ids"])).expect("embed");
        let norm: f32 = ours.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "{label}: not L2-normalised ({norm})"
        );
        worst = worst.min(cosine(&floats(&case["embedding"]), &ours));
    }
    eprintln!("{label}: lowest cosine similarity with llama.cpp {worst:.6}");
    assert!(
        worst >= MIN_COSINE,
        "{label}: cosine {worst} < {MIN_COSINE}"
    );
}

#[test]
fn bert_embeddings_and_wordpiece_ids_match_llama_cpp() {
    each_file("bert", |label, engine, file| {
        assert!(!engine.generates());
        assert_eq!(engine.pooling(), Some(models::bert::Pooling::Mean));
        check_embeddings(label, engine, file);
    });
}

/// nomic-embed-text-v1.5's layout (`nomic-bert`): rotary positions, fused QKV, SwiGLU, mean pooling.
#[test]
fn nomic_bert_embeddings_match_llama_cpp() {
    each_file("nomic-bert", |label, engine, file| {
        assert!(!engine.generates());
        assert_eq!(engine.pooling(), Some(models::bert::Pooling::Mean));
        assert_eq!(engine.info().architecture, "nomic-bert");
        check_embeddings(label, engine, file);
    });
}

/// jina-embeddings-v2's layout (`jina-bert-v2`): ALiBi instead of positions (6 heads, both of ggml's slope
/// ranges), a fused GEGLU feed-forward, mean pooling.
#[test]
fn jina_bert_v2_embeddings_match_llama_cpp() {
    each_file("jina-bert-v2", |label, engine, file| {
        assert!(!engine.generates());
        assert_eq!(engine.pooling(), Some(models::bert::Pooling::Mean));
        assert_eq!(engine.info().architecture, "jina-bert-v2");
        check_embeddings(label, engine, file);
    });
}

/// bge-m3's layout: BERT's graph with XLM-R's Unigram vocabulary (tokenizer model `t5`, charsmap
/// normalisation) and CLS pooling; ids equal llama.cpp's on multilingual and normalisation-heavy texts.
#[test]
fn xlmr_unigram_ids_and_cls_embeddings_match_llama_cpp() {
    each_file("xlmr", |label, engine, file| {
        assert!(!engine.generates());
        assert_eq!(engine.pooling(), Some(models::bert::Pooling::Cls));
        check_embeddings(label, engine, file);
    });
}

/// Hostile sizes for the Unigram tokenizer: megabytes of mixed scripts, of one unknown code point and of
/// one letter (the longest runs of candidate pieces) tokenize in bounded time, linear in the text.
#[test]
fn xlmr_unigram_tokenizes_megabytes_in_bounded_time() {
    let fixture = common::fixture("encoders/xlmr.json");
    let file = &fixture["files"]["f16"];
    let dir = tempfile::tempdir().expect("temporary directory");
    let gguf = synthesize("xlmr", "f16", file["sha256"].as_str().unwrap(), dir.path());
    let engine = common::load_engine(&gguf, 512, 1, models::KvType::default());
    let mixed: String = file["tokenize"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    for (what, text) in [
        (
            "mixed scripts",
            mixed.repeat((2 << 20) / mixed.len().max(1)),
        ),
        // Gothic 𐍈 has no piece: one `<unk>` for the whole run.
        ("one unknown code point", "\u{10348}".repeat(1 << 19)),
        ("one letter", "a".repeat(2 << 20)),
    ] {
        let started = std::time::Instant::now();
        let ids = engine.tokenizer.encode(&text, true).expect("tokenize");
        let took = started.elapsed();
        eprintln!(
            "{what}: {} bytes, {} ids in {took:?}",
            text.len(),
            ids.len()
        );
        assert!(!ids.is_empty());
        assert!(took.as_secs() < 30, "{what}: {took:?}");
        if what == "one unknown code point" {
            assert!(
                ids.len() <= 5,
                "{what}: consecutive unknowns merge: {ids:?}"
            );
        }
    }
}

/// Qwen3-Embedding's layout: a Qwen 3 decoder without an output head whose file asks for last-token
/// pooling (`qwen3.pooling_type` = 3).
#[test]
fn qwen3_embedding_with_last_token_pooling_matches_llama_cpp() {
    each_file("qwen3-embed", |label, engine, file| {
        assert!(engine.generates());
        check_embeddings(label, engine, file);
    });
}

#[test]
fn bert_reranker_scores_match_llama_cpp_in_value_and_order() {
    each_file("bert-rerank", check_rerank);
}

/// bge-reranker-v2-m3's layout: XLM-R's vocabulary, pairs as `<s> query </s> </s> document </s>`.
#[test]
fn xlmr_reranker_scores_match_llama_cpp_in_value_and_order() {
    each_file("xlmr-rerank", check_rerank);
}

/// Qwen3-Reranker's layout: a qwen3 decoder whose pairs fill its rerank template, scored as the softmax
/// of its classifier (`cls.output`: "yes" and "no") over the last token's final hidden state.
#[test]
fn qwen3_reranker_scores_match_llama_cpp_in_value_and_order() {
    each_file("qwen3-rerank", |label, engine, file| {
        assert!(engine.generates());
        check_rerank(label, engine, file);
    });
}

/// A Qwen3-Embedding file with `add_eos_token`: every input ends in EOS, as llama.cpp tokenizes it,
/// and the last-token pooling reads that EOS's hidden state.
#[test]
fn qwen3_embedding_with_add_eos_ends_inputs_in_eos_and_matches_llama_cpp() {
    each_file("qwen3-embed-eos", |label, engine, file| {
        let eos = engine.tokenizer.eos.expect("an EOS token");
        for case in file["tokenize"].as_array().unwrap() {
            assert_eq!(ids(&case["ids"]).last(), Some(&eos), "{label}");
        }
        check_embeddings(label, engine, file);
    });
}

/// Every pair's ids, and scores in llama.cpp's order and within the bound of its values.
fn check_rerank(label: &str, engine: &mut Engine, file: &Value) {
    {
        assert_eq!(engine.pooling(), Some(models::bert::Pooling::Rank));
        let query = file["query"].as_str().unwrap();
        let documents = file["documents"].as_array().unwrap();
        let cases = file["scores"].as_array().unwrap();
        let reference: Vec<f64> = cases.iter().map(|c| c["score"].as_f64().unwrap()).collect();
        let exact: Vec<f64> = cases
            .iter()
            .map(|c| c["exact_score"].as_f64().unwrap_or(f64::NAN))
            .collect();
        let (scale, bound) = (score_scale(file), score_bound(file));
        let mut ours = Vec::new();
        for (case, document) in cases.iter().zip(documents) {
            let pair = engine
                .tokenizer
                .encode_pair(query, document.as_str().unwrap(), 1 << 20)
                .unwrap();
            assert_eq!(pair, ids(&case["ids"]), "{label}: the pair's ids differ");
            let scores = engine.embed(&pair).expect("rank");
            if let Some(outputs) = case.get("outputs") {
                // A decoder reranker's softmax: p(yes) and p(no), both llama.cpp's.
                let outputs = floats(outputs);
                assert_eq!(scores.len(), outputs.len(), "{label}: outputs");
                for (o, r) in scores.iter().zip(&outputs) {
                    assert!(
                        (*o as f64 - r).abs() <= MAX_PROBABILITY_ERROR,
                        "{label}: {scores:?} against {outputs:?}"
                    );
                }
            }
            ours.push(scores[0] as f64);
        }
        let largest = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs() / scale)
                .fold(0f64, |m, d| if d.is_nan() { d } else { m.max(d) })
        };
        let worst = largest(&reference, &ours);
        eprintln!(
            "{label}: ours {ours:?}, llama.cpp {reference:?}; from llama.cpp {worst:.2e} (bound \
             {bound:.2e}), ours from exact {:.2e}, llama.cpp's from exact {:.2e} (NaN: none recorded)",
            largest(&ours, &exact),
            largest(&reference, &exact)
        );
        assert!(worst <= bound, "{label}: score error {worst} > {bound}");
        let order = |s: &[f64]| {
            let mut idx: Vec<usize> = (0..s.len()).collect();
            idx.sort_by(|a, b| s[*b].total_cmp(&s[*a]));
            idx
        };
        assert_eq!(
            order(&ours),
            order(&reference),
            "{label}: ranked differently"
        );
    }
}

/// A blocking JSON POST with the test's API key: the status and the body.
fn post(client: &reqwest::blocking::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = client
        .post(url)
        .bearer_auth(API_KEY)
        .json(body)
        .send()
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn get(client: &reqwest::blocking::Client, url: &str) -> Value {
    let response = client
        .get(url)
        .bearer_auth(API_KEY)
        .send()
        .expect("request");
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    response.json().expect("JSON")
}

const API_KEY: &str = "s3cret";

/// A 400 in OpenAI's error shape whose message says `needle`.
fn assert_invalid(answer: (u16, Value), needle: &str, what: &str) {
    let (status, body) = answer;
    assert_eq!(status, 400, "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(
        body["error"]["type"], "invalid_request_error",
        "{what}: {body}"
    );
    assert!(
        message.contains(needle),
        "{what}: {message:?} lacks {needle:?}"
    );
}

/// The real binary serves both encoders: embeddings through every embedding route match llama.cpp's, a
/// chat request gets a 400, rerank and score order documents as llama.cpp scores them, capabilities are
/// listed, and hostile rerank input is a 400 in the API's shape.
#[test]
fn encoders_embed_and_rerank_through_the_server_and_refuse_what_they_cannot_do() {
    let embedder = common::fixture("encoders/bert.json");
    let reranker = common::fixture("encoders/bert-rerank.json");
    let (embed_file, rank_file) = (&embedder["files"]["f16"], &reranker["files"]["f16"]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let cli = common::ModelCli::new();
    for (family, file, name) in [
        ("bert", embed_file, "ai/minilm-synthetic:latest"),
        ("bert-rerank", rank_file, "ai/reranker-synthetic:latest"),
    ] {
        let gguf = synthesize(family, "f16", file["sha256"].as_str().unwrap(), dir.path());
        cli.ok(&["package", "--gguf", gguf.to_str().unwrap(), name]);
    }
    let listing = cli.ok(&["ls"]);
    assert!(
        listing.contains("CAPABILITIES") && listing.contains("rerank"),
        "{listing}"
    );
    // `model run` in process refuses an encoder with one line, before any prompt is rendered.
    let refusal = cli.fails(&["run", "ai/minilm-synthetic", "hello"]);
    assert!(refusal.contains("encoder"), "{refusal}");
    let server = common::Server::start(&cli, &["--api-key", API_KEY]);
    let client = reqwest::blocking::Client::new();
    let (embed, rank) = ("ai/minilm-synthetic", "ai/reranker-synthetic");

    // Routes are inside the API-key layer.
    let refused = client
        .post(server.url("/v1/rerank"))
        .json(&serde_json::json!({"model": rank, "query": "q", "documents": ["d"]}))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    // Capabilities.
    let models = get(&client, &server.url("/v1/models"));
    let capabilities = |name: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"].as_str().unwrap().starts_with(name))
            .map(|m| m["capabilities"].clone())
            .unwrap()
    };
    assert_eq!(capabilities(embed), serde_json::json!(["embedding"]));
    assert_eq!(capabilities(rank), serde_json::json!(["rerank"]));
    let (status, show) = post(
        &client,
        &server.url("/api/show"),
        &serde_json::json!({"model": rank}),
    );
    assert_eq!(
        (status, show["capabilities"].clone()),
        (200, serde_json::json!(["rerank"]))
    );

    // Embeddings: the model's own pooling, normalised, on every route.
    let texts: Vec<&str> = embed_file["tokenize"]
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    let expected: Vec<Vec<f64>> = embed_file["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|c| floats(&c["embedding"]))
        .collect();
    let (status, body) = post(
        &client,
        &server.url("/v1/embeddings"),
        &serde_json::json!({"model": embed, "input": texts}),
    );
    assert_eq!(status, 200, "{body}");
    let as_f32 = |v: &Value| -> Vec<f32> { floats(v).into_iter().map(|x| x as f32).collect() };
    for (i, reference) in expected.iter().enumerate() {
        let ours = as_f32(&body["data"][i]["embedding"]);
        assert!(
            cosine(reference, &ours) >= MIN_COSINE,
            "/v1/embeddings input {i}"
        );
    }
    let (status, body) = post(
        &client,
        &server.url("/api/embed"),
        &serde_json::json!({"model": embed, "input": texts[0]}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(cosine(&expected[0], &as_f32(&body["embeddings"][0])) >= MIN_COSINE);
    let (status, body) = post(
        &client,
        &server.url("/api/embeddings"),
        &serde_json::json!({"model": embed, "prompt": texts[0]}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(cosine(&expected[0], &as_f32(&body["embedding"])) >= MIN_COSINE);

    // An encoder does not chat; a reranker does not embed; an embedder does not rerank.
    let chat = serde_json::json!({"model": embed, "messages": [{"role": "user", "content": "hi"}]});
    assert_invalid(
        post(&client, &server.url("/v1/chat/completions"), &chat),
        "encoder",
        "chat",
    );
    assert_invalid(
        post(
            &client,
            &server.url("/v1/embeddings"),
            &serde_json::json!({"model": rank, "input": "x"}),
        ),
        "reranker",
        "embeddings from a reranker",
    );
    assert_invalid(
        post(
            &client,
            &server.url("/v1/rerank"),
            &serde_json::json!({"model": embed, "query": "q", "documents": ["d"]}),
        ),
        "does not rerank",
        "rerank with an embedder",
    );

    // Rerank: llama.cpp's scores and order, top_n, documents returned.
    let query = rank_file["query"].clone();
    let documents = rank_file["documents"].clone();
    let reference: Vec<f64> = rank_file["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["score"].as_f64().unwrap())
        .collect();
    let (scale, bound) = (score_scale(rank_file), score_bound(rank_file));
    let mut best: Vec<usize> = (0..reference.len()).collect();
    best.sort_by(|a, b| reference[*b].total_cmp(&reference[*a]));
    for route in ["/v1/rerank", "/rerank"] {
        let (status, body) = post(
            &client,
            &server.url(route),
            &serde_json::json!({"model": rank, "query": query, "documents": documents,
                                "top_n": 2, "return_documents": true}),
        );
        assert_eq!(status, 200, "{route}: {body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "{route}: top_n");
        for (result, &index) in results.iter().zip(&best) {
            assert_eq!(
                result["index"].as_u64().unwrap() as usize,
                index,
                "{route}: order"
            );
            let score = result["relevance_score"].as_f64().unwrap();
            assert!(
                (score - reference[index]).abs() / scale <= bound,
                "{route}: score"
            );
            assert_eq!(
                result["document"]["text"], documents[index],
                "{route}: document"
            );
        }
        assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    }
    let (status, body) = post(
        &client,
        &server.url("/v1/score"),
        &serde_json::json!({"model": rank, "text_1": query, "text_2": documents}),
    );
    assert_eq!(status, 200, "{body}");
    for (i, reference) in reference.iter().enumerate() {
        let sigmoid = 1.0 / (1.0 + (-reference).exp());
        let score = body["data"][i]["score"].as_f64().unwrap();
        assert!((score - sigmoid).abs() <= bound * scale, "/v1/score {i}");
    }

    // Hostile input: a 400 naming what is wrong, never a panic or a hang.
    let long_document = "the ".repeat(600);
    let huge_document = "x".repeat(600 * 1024);
    let many: Vec<&str> = vec!["d"; 1001];
    for (body, needle) in [
        (
            serde_json::json!({"model": rank, "query": "q", "documents": []}),
            "must not be empty",
        ),
        (
            serde_json::json!({"model": rank, "query": "q", "documents": ["a", 1]}),
            "documents[1]",
        ),
        (
            serde_json::json!({"model": rank, "query": "q", "documents": "a"}),
            "array of strings",
        ),
        (
            serde_json::json!({"model": rank, "query": 3, "documents": ["a"]}),
            "query",
        ),
        (
            serde_json::json!({"model": rank, "query": "q", "documents": ["a"], "top_n": 1_000_000_000_000u64}),
            "top_n",
        ),
        (
            serde_json::json!({"model": rank, "query": "q", "documents": ["a"], "top_n": 0}),
            "top_n",
        ),
        (
            serde_json::json!({"model": rank, "query": "q", "documents": many}),
            "more than the limit",
        ),
        (
            serde_json::json!({"model": rank, "query": "q", "documents": [long_document]}),
            "context size",
        ),
        (
            serde_json::json!({"model": rank, "query": "q", "documents": [huge_document]}),
            "context",
        ),
        (
            serde_json::json!({"model": rank, "text_1": ["a", "b"], "text_2": ["c", "d", "e"]}),
            "text_1",
        ),
    ] {
        let route = if body.get("text_1").is_some() {
            "/v1/score"
        } else {
            "/v1/rerank"
        };
        assert_invalid(
            post(&client, &server.url(route), &body),
            needle,
            &format!("{route} {needle}"),
        );
    }
}

/// The real binary serves a decoder reranker (Qwen3-Reranker's layout) on `/v1/rerank`, `/rerank` and
/// `/v1/score` in llama.cpp's order and values (`/v1/score` gives its probability of "yes" as it is),
/// lists it as a reranker, refuses a template-expanding hostile query, and refuses embeddings from a
/// model whose pooling is none with a 400 on every embedding route.
#[test]
fn decoder_reranker_ranks_through_the_server_and_pooling_none_is_refused() {
    let reranker = common::fixture("encoders/qwen3-rerank.json");
    let per_token = common::fixture("encoders/bert-tokens.json");
    let (rank_file, tokens_file) = (&reranker["files"]["f16"], &per_token["files"]["f16"]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let cli = common::ModelCli::new();
    for (family, file, name) in [
        (
            "qwen3-rerank",
            rank_file,
            "ai/qwen3-reranker-synthetic:latest",
        ),
        ("bert-tokens", tokens_file, "ai/per-token-synthetic:latest"),
    ] {
        let gguf = synthesize(family, "f16", file["sha256"].as_str().unwrap(), dir.path());
        cli.ok(&["package", "--gguf", gguf.to_str().unwrap(), name]);
    }
    let server = common::Server::start(&cli, &["--api-key", API_KEY]);
    let client = reqwest::blocking::Client::new();
    let (rank, per_token) = ("ai/qwen3-reranker-synthetic", "ai/per-token-synthetic");

    let models = get(&client, &server.url("/v1/models"));
    let listed = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"].as_str().unwrap().starts_with(rank))
        .map(|m| m["capabilities"].clone())
        .unwrap();
    assert_eq!(listed, serde_json::json!(["rerank"]));
    let (status, show) = post(
        &client,
        &server.url("/api/show"),
        &serde_json::json!({"model": rank}),
    );
    assert_eq!(
        (status, show["capabilities"].clone()),
        (200, serde_json::json!(["rerank"]))
    );

    let query = rank_file["query"].clone();
    let documents = rank_file["documents"].clone();
    let reference: Vec<f64> = rank_file["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["score"].as_f64().unwrap())
        .collect();
    let mut best: Vec<usize> = (0..reference.len()).collect();
    best.sort_by(|a, b| reference[*b].total_cmp(&reference[*a]));
    for route in ["/v1/rerank", "/rerank"] {
        let (status, body) = post(
            &client,
            &server.url(route),
            &serde_json::json!({"model": rank, "query": query, "documents": documents}),
        );
        assert_eq!(status, 200, "{route}: {body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), reference.len(), "{route}");
        for (result, &index) in results.iter().zip(&best) {
            assert_eq!(result["index"].as_u64().unwrap() as usize, index, "{route}");
            let score = result["relevance_score"].as_f64().unwrap();
            assert!(
                (score - reference[index]).abs() <= MAX_PROBABILITY_ERROR,
                "{route}: {score} against {}",
                reference[index]
            );
        }
    }
    let (status, body) = post(
        &client,
        &server.url("/v1/score"),
        &serde_json::json!({"model": rank, "text_1": query, "text_2": documents}),
    );
    assert_eq!(status, 200, "{body}");
    for (i, reference) in reference.iter().enumerate() {
        let score = body["data"][i]["score"].as_f64().unwrap();
        assert!(
            (score - reference).abs() <= MAX_PROBABILITY_ERROR,
            "/v1/score {i}: {score} against {reference}"
        );
    }

    // A query that names the template's `{document}` thousands of times would expand to gigabytes.
    let expanding = "{document}".repeat(5000);
    let document = "x".repeat(50_000);
    assert_invalid(
        post(
            &client,
            &server.url("/v1/rerank"),
            &serde_json::json!({"model": rank, "query": expanding, "documents": [document]}),
        ),
        "context",
        "a template-expanding query",
    );

    // Pooling none: one vector per token, which no embedding shape we serve carries.
    assert_invalid(
        post(
            &client,
            &server.url("/v1/embeddings"),
            &serde_json::json!({"model": per_token, "input": "hello"}),
        ),
        "pooling type is none",
        "/v1/embeddings with pooling none",
    );
    for (route, body) in [
        (
            "/api/embed",
            serde_json::json!({"model": per_token, "input": "hello"}),
        ),
        (
            "/api/embeddings",
            serde_json::json!({"model": per_token, "prompt": "hello"}),
        ),
    ] {
        let (status, answer) = post(&client, &server.url(route), &body);
        assert_eq!(status, 400, "{route}: {answer}");
        assert!(
            answer.to_string().contains("pooling type is none"),
            "{route}: {answer}"
        );
    }
}
