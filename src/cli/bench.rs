//! `model bench`: throughput, measured two ways.
//!
//! - `--local REF`: the engine alone, in process: prompt processing (512 tokens, or `--prompt-tokens`, in
//!   one step), single-stream decode (128 tokens), and aggregate decode of 4/8/16 sequences sharing each
//!   packed step. Single-stream decode is also given as a fraction of its bandwidth limit: the weight
//!   bytes a token reads, over the memory read bandwidth measured here and now.
//! - `--url URL`: a load test of any OpenAI-compatible endpoint (ours, llama.cpp's `llama-server`, ...):
//!   streaming chat requests at each concurrency, reporting aggregate tok/s, time to first token and
//!   inter-token latency percentiles, and errors. `--compare URL2` runs the same load against a second
//!   endpoint in alternation and prints the ratios. Every loop is bounded by `--requests`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::engine::device::{DeviceChoice, device_name};
use crate::engine::sampler::{Sampler, SamplingParams};
use crate::engine::{Engine, EngineOptions};
use models::{LogitsWanted, StepBatch};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Benchmark the engine in process on this stored model.
    #[arg(long, conflicts_with = "url")]
    pub local: Option<String>,
    /// Benchmark an OpenAI-compatible endpoint (base URL ending in /v1).
    #[arg(long)]
    pub url: Option<String>,
    /// A second endpoint to compare against, run in alternation with the first.
    #[arg(long, requires = "url")]
    pub compare: Option<String>,
    /// Model name to request from the endpoint(s).
    #[arg(long, default_value = "ai/smollm2")]
    pub model: String,
    /// Concurrency levels (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    pub concurrency: Vec<usize>,
    /// Requests per concurrency level (at least the concurrency).
    #[arg(long, default_value_t = 32)]
    pub requests: usize,
    /// Tokens per answer (sent with ignore_eos so every answer has this length where supported).
    #[arg(long, default_value_t = 96)]
    pub max_tokens: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With --local: the device to run on (auto, cpu, cuda, cuda:N, metal).
    #[arg(long, env = "MODEL_RUNNER_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    /// With --local: the KV cache's element type (f16, q8_0 or f32).
    #[arg(long, default_value = "f16", value_name = "TYPE")]
    pub kv_cache_type: models::KvType,
    /// With --local: the prompt-processing test's length, in tokens (llama-bench's `-p`).
    #[arg(long, default_value_t = 512, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_PROMPT_TOKENS as i64))]
    pub prompt_tokens: u32,
}

/// The longest prompt `--prompt-tokens` takes: a long-context model's usual window.
const MAX_PROMPT_TOKENS: u32 = 32768;
/// The decode tests' context: a 32-token prompt and up to 128 tokens, for 16 sequences at most.
const DECODE_CONTEXT: usize = 1024;
const DECODE_SEQUENCES: usize = 16;

pub async fn bench(store: &crate::store::Store, args: BenchArgs) -> Result<()> {
    match (&args.local, &args.url) {
        (Some(reference), _) => local(store, reference, &args),
        (None, Some(url)) => http(url, &args).await,
        (None, None) => bail!("name --local MODEL or --url URL"),
    }
}

fn local(store: &crate::store::Store, reference: &str, args: &BenchArgs) -> Result<()> {
    let model = store.resolve(reference)?;
    let files = crate::runtime::model_files(store, &model)?;
    let prompt_tokens = args.prompt_tokens as usize;
    // Room for the decode tests' sequences and, beside them, one prompt of the asked length.
    let blocks = |tokens: usize| tokens.div_ceil(crate::engine::KV_BLOCK_SIZE);
    let mut engine = Engine::load(
        &files,
        &EngineOptions {
            device: args.device.open()?,
            context_size: Some(DECODE_CONTEXT.max(prompt_tokens)),
            kv_blocks: Some(blocks(prompt_tokens) + DECODE_SEQUENCES * blocks(DECODE_CONTEXT)),
            sequences: DECODE_SEQUENCES,
            kv_type: args.kv_cache_type,
        },
    )?;
    let vocab = engine.info().vocab_size as u32;
    let prompt: Vec<u32> = (0..args.prompt_tokens)
        .map(|i| (i * 7919 + 13) % vocab.max(1))
        .collect();

    // Warm-up, then prompt processing: the whole prompt in one step, the median of three runs. The warm-up
    // is a whole prompt, as llama-bench's: the first 512-token step grows the heap for its temporaries,
    // and on a VM whose memory is faulted in lazily that first touch alone took a quarter of the step.
    timed_prefill(&mut engine, &prompt)?;
    let mut runs = [Duration::ZERO; 3];
    for run in &mut runs {
        *run = timed_prefill(&mut engine, &prompt)?;
    }
    runs.sort();
    let pp = runs[1];
    let mut results = vec![json!({
        "test": format!("pp{prompt_tokens}"), "tokens_per_second": prompt_tokens as f64 / pp.as_secs_f64(),
        "kernels": kernels::SimdLevel::detect().name(), "threads": kernels::pool().threads(),
        "device": device_name(engine.device()), "kv_cache_type": engine.kv_type().name(),
    })];
    let token_bytes = weight_bytes_per_token(&files.gguf)?;
    let bandwidth = read_bandwidth(kernels::pool().threads());
    for sequences in [1usize, 4, 8, 16] {
        let steps = if sequences == 1 { 128 } else { 64 };
        let rate = decode_rate(
            &mut engine,
            sequences,
            steps,
            &prompt[..prompt.len().min(32)],
        )?;
        if sequences == 1 {
            let limit = bandwidth / token_bytes as f64;
            results.push(json!({"test": "tg128", "tokens_per_second": rate,
                "weight_bytes_per_token": token_bytes, "read_bandwidth_gb_s": bandwidth / 1e9,
                "bandwidth_limit_tokens_per_second": limit, "fraction_of_limit": rate / limit}));
        } else {
            results
                .push(json!({"test": format!("decode x{sequences}"), "tokens_per_second": rate}));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!(
            "device: {}, CPU kernels: {}, {} threads, KV cache {}",
            device_name(engine.device()),
            kernels::SimdLevel::detect().name(),
            kernels::pool().threads(),
            engine.kv_type().name()
        );
        println!("{:<14} {:>12}", "TEST", "TOKENS/S");
        for r in &results {
            print!(
                "{:<14} {:>12.1}",
                r["test"].as_str().unwrap_or_default(),
                r["tokens_per_second"].as_f64().unwrap_or(0.0)
            );
            match r["fraction_of_limit"].as_f64() {
                Some(fraction) => println!(
                    "   {:.0}% of the bandwidth limit ({:.1} tok/s: {} per token at {:.1} GB/s read)",
                    100.0 * fraction,
                    r["bandwidth_limit_tokens_per_second"]
                        .as_f64()
                        .unwrap_or(0.0),
                    crate::artifact::human_size(r["weight_bytes_per_token"].as_u64().unwrap_or(0)),
                    r["read_bandwidth_gb_s"].as_f64().unwrap_or(0.0),
                ),
                None => println!(),
            }
        }
    }
    Ok(())
}

/// The weight bytes one decode token reads: every tensor in the file but the token embeddings, of which
/// it reads one row, unless the output projection is those embeddings (no `output.weight`).
fn weight_bytes_per_token(files: &[std::path::PathBuf]) -> Result<u64> {
    let mut tensors = Vec::new();
    for gguf in files {
        let header = models::gguf::GgufHeader::read_file(gguf)
            .with_context(|| format!("cannot read {}", gguf.display()))?;
        tensors.extend(header.tensors);
    }
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    Ok(tensors
        .iter()
        .filter(|t| tied || t.name != "token_embd.weight")
        .filter_map(|t| t.byte_size())
        .sum())
}

/// Memory read bandwidth in bytes per second: `threads` threads each summing their share of a 512 MiB
/// buffer (far past any cache) with `prefetched_sum`, the best of three passes.
fn read_bandwidth(threads: usize) -> f64 {
    const WORDS: usize = (512 << 20) / 8;
    // Written, so every page is really mapped before the timed reads.
    let buffer: Vec<u64> = (0..WORDS as u64).collect();
    let share = WORDS.div_ceil(threads.max(1));
    let mut best = 0.0f64;
    for _ in 0..3 {
        let started = Instant::now();
        let total: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = buffer
                .chunks(share)
                .map(|chunk| scope.spawn(move || prefetched_sum(chunk)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        let rate = (WORDS * 8) as f64 / started.elapsed().as_secs_f64();
        // Keeps the sums from being optimised away.
        std::hint::black_box(total);
        best = best.max(rate);
    }
    best
}

/// The wrapping sum of `words`, read as the CPU kernels read weights: asking for the cache lines
/// `kernels::prefetch_ahead_bytes()` ahead (as they do on x86-64), so that the bandwidth limit is what a
/// kernel could reach. Eight sums, one per word of a cache line: a single chain of adds, one word a
/// cycle, read a Zen 5 core at 12 GB/s, a third of what the eight (a vector's adds) read.
fn prefetched_sum(words: &[u64]) -> u64 {
    let ahead_words = kernels::prefetch_ahead_bytes() / 8;
    let mut sums = [0u64; 8];
    let lines = words.chunks_exact(8);
    let tail = lines.remainder();
    for (i, line) in lines.enumerate() {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let ahead = words.as_ptr().wrapping_add(8 * i + ahead_words);
            // SAFETY: every x86-64 CPU has SSE; a prefetch is a hint that never faults, so past the
            // end it names nothing that is read.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8) };
        }
        for (sum, &w) in sums.iter_mut().zip(line) {
            *sum = sum.wrapping_add(w);
        }
    }
    sums.iter().chain(tail).fold(0, |a, &w| a.wrapping_add(w))
}

fn timed_prefill(engine: &mut Engine, tokens: &[u32]) -> Result<Duration> {
    let mut lease = engine.pool().lease();
    lease.reserve(tokens.len())?;
    let batch = StepBatch::prefill(tokens, lease.blocks().to_vec(), LogitsWanted::Last);
    let started = Instant::now();
    // Reading the logits waits for the device to finish the step.
    engine.step(&batch)?.to_vec2::<f32>()?;
    Ok(started.elapsed())
}

/// Generated tokens per second in all, `sequences` decoding together for `steps` packed steps.
fn decode_rate(engine: &mut Engine, sequences: usize, steps: usize, prompt: &[u32]) -> Result<f64> {
    let mut leases = Vec::new();
    let mut batch = StepBatch::default();
    for _ in 0..sequences {
        let mut lease = engine.pool().lease();
        lease.reserve(prompt.len() + steps + 1)?;
        batch.push_prompt(
            prompt,
            0,
            prompt.len(),
            lease.blocks().to_vec(),
            LogitsWanted::Last,
        );
        leases.push(lease);
    }
    let mut logits = engine.step(&batch)?.to_vec2::<f32>()?;
    let mut samplers: Vec<Sampler> = (0..sequences)
        .map(|_| Sampler::new(SamplingParams::greedy()))
        .collect();
    let started = Instant::now();
    for step in 0..steps {
        let batch = StepBatch::decode(leases.iter().enumerate().map(|(s, lease)| {
            let token = samplers[s].sample(&logits[s]).id;
            (token, prompt.len() + step, lease.blocks().to_vec())
        }));
        logits = engine.step(&batch)?.to_vec2::<f32>()?;
    }
    Ok((sequences * steps) as f64 / started.elapsed().as_secs_f64())
}

/// Bytes of a failed request's body read to say why it failed, and characters of it kept in the message.
const ERROR_BODY_BYTES: usize = 1024;
const ERROR_BODY_CHARS: usize = 200;

/// Failed requests: how many, and the first one's cause (the only one reported).
#[derive(Default)]
struct Failures {
    count: usize,
    first: Option<String>,
}

impl Failures {
    fn add(&mut self, cause: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(cause());
        }
    }

    /// Adds another worker's failures (its first cause kept only if this one has none yet).
    fn merge(&mut self, other: Failures) {
        self.count += other.count;
        self.first = self.first.take().or(other.first);
    }
}

/// One streamed request's timings.
struct Sample {
    ttft: Duration,
    gaps: Vec<Duration>,
    tokens: usize,
}

async fn http(url: &str, args: &BenchArgs) -> Result<()> {
    let endpoints: Vec<&str> = std::iter::once(url)
        .chain(args.compare.as_deref())
        .collect();
    // A fresh connection per request: reusing a pooled keep-alive connection the server had already
    // closed (llama-server did, a few times a run) failed the next request before it was sent, and
    // counted it against that server.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(0)
        .build()?;
    let mut rows = Vec::new();
    for &concurrency in &args.concurrency {
        for endpoint in &endpoints {
            let row = load(&client, endpoint, concurrency, args).await?;
            rows.push(row);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<40} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "ENDPOINT", "CONC", "TOK/S", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "ERRORS"
    );
    for r in &rows {
        println!(
            "{:<40} {:>5} {:>10.1} {:>9.0}ms {:>9.0}ms {:>9.1}ms {:>9.1}ms {:>7}",
            r["endpoint"].as_str().unwrap_or_default(),
            r["concurrency"],
            r["tokens_per_second"].as_f64().unwrap_or(0.0),
            r["ttft_ms_p50"].as_f64().unwrap_or(0.0),
            r["ttft_ms_p99"].as_f64().unwrap_or(0.0),
            r["itl_ms_p50"].as_f64().unwrap_or(0.0),
            r["itl_ms_p99"].as_f64().unwrap_or(0.0),
            r["errors"],
        );
    }
    if endpoints.len() == 2 {
        println!("\nRATIOS (first / second)");
        for pair in rows.chunks(2) {
            let ratio = |key: &str| {
                pair[0][key].as_f64().unwrap_or(0.0) / pair[1][key].as_f64().unwrap_or(f64::NAN)
            };
            println!(
                "concurrency {:>3}: tok/s x{:.2}, TTFT p50 x{:.2}",
                pair[0]["concurrency"],
                ratio("tokens_per_second"),
                ratio("ttft_ms_p50")
            );
        }
    }
    Ok(())
}

async fn load(
    client: &reqwest::Client,
    endpoint: &str,
    concurrency: usize,
    args: &BenchArgs,
) -> Result<Value> {
    let requests = args.requests.max(concurrency);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, endpoint, next, model) = (
                client.clone(),
                endpoint.to_string(),
                next.clone(),
                args.model.clone(),
            );
            let max_tokens = args.max_tokens;
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut failures = Failures::default();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= requests {
                        break;
                    }
                    match one_request(&client, &endpoint, &model, max_tokens, n).await {
                        Ok(sample) => samples.push(sample),
                        Err(e) => failures.add(|| format!("{e:#}")),
                    }
                }
                (samples, failures)
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut failures = Failures::default();
    for worker in workers {
        let (s, f) = worker.await?;
        samples.extend(s);
        failures.merge(f);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tokens: usize = samples.iter().map(|s| s.tokens).sum();
    let mut ttft: Vec<f64> = samples.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect();
    let mut itl: Vec<f64> = samples
        .iter()
        .flat_map(|s| s.gaps.iter().map(|g| g.as_secs_f64() * 1e3))
        .collect();
    Ok(json!({
        "endpoint": endpoint, "concurrency": concurrency, "requests": samples.len(),
        // How many failed, and the first failure's cause, so that a ratio over fewer answers is read
        // with its reason.
        "errors": failures.count, "first_error": failures.first,
        "tokens_per_second": tokens as f64 / elapsed,
        "ttft_ms_p50": percentile(&mut ttft, 0.5), "ttft_ms_p99": percentile(&mut ttft, 0.99),
        "itl_ms_p50": percentile(&mut itl, 0.5), "itl_ms_p99": percentile(&mut itl, 0.99),
    }))
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// One streaming chat request; each SSE chunk with content counts as one token. Request `n`'s prompt is
/// its own from its first words, so no server answers it from a cache of another's prompt (only the chat
/// template's header is shared).
async fn one_request(
    client: &reqwest::Client,
    endpoint: &str,
    model: &str,
    max_tokens: usize,
    n: usize,
) -> Result<Sample> {
    const SUBJECTS: [&str; 8] = [
        "a lighthouse keeper",
        "a clockmaker's apprentice",
        "two rival bakers",
        "a lost satellite",
        "a village under snow",
        "an old ferry",
        "a chess tournament",
        "a night market",
    ];
    let content = format!(
        "Story {n}: write about {} and the number {n}.",
        SUBJECTS[n % SUBJECTS.len()]
    );
    let body = json!({
        "model": model, "stream": true, "max_tokens": max_tokens, "ignore_eos": true, "temperature": 0,
        "messages": [{"role": "user", "content": content}],
    });
    let started = Instant::now();
    let mut response = client
        .post(format!(
            "{}/chat/completions",
            endpoint.trim_end_matches('/')
        ))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .context("request failed")?;
    if !response.status().is_success() {
        let status = response.status();
        // The body's start, enough to say why: an endpoint's body is not read whole, nor kept past
        // what a message shows.
        let mut head = Vec::new();
        while head.len() < ERROR_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = ERROR_BODY_BYTES - head.len();
                    head.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&head);
        bail!(
            "HTTP {status}: {}",
            text.chars().take(ERROR_BODY_CHARS).collect::<String>()
        );
    }
    let mut buffer = String::new();
    let mut last: Option<Instant> = None;
    let mut sample = Sample {
        ttft: Duration::ZERO,
        gaps: Vec::new(),
        tokens: 0,
    };
    while let Some(chunk) = response.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let Some(data) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                return Ok(sample);
            }
            let Ok(event) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            let has_content = event["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty());
            if has_content {
                let now = Instant::now();
                match last {
                    None => sample.ttft = now - started,
                    Some(t) => sample.gaps.push(now - t),
                }
                last = Some(now);
                sample.tokens += 1;
            }
        }
    }
    Ok(sample)
}
