//! `model run`: one prompt or an interactive chat with a stored model, streaming tokens to the terminal.
//! A running server answers when there is one (as `docker model run` talks to its runner); otherwise the
//! model loads here, behind the same scheduler and validation the server uses. Pulls the model first when
//! the store lacks it, as `docker model run` does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use tokio::sync::Notify;

use super::chat::{AnswerOptions, Answerer, converse, show};
use crate::engine::chat_template::{ChatMessage, ChatTemplate};
use crate::engine::template_sandbox::{RenderJob, TemplateSandbox};
use crate::engine::tokenizer::Tokenizer;
use crate::engine::{Engine, EngineOptions};
use crate::registry::RegistryOptions;
use crate::scheduler::{Event, Scheduler, SchedulerConfig, Usage};
use crate::store::{LocalModel, Store, StoreError};
use crate::validation::{GenerationParams, validate};

/// Options of `model run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The model (pulled first if not in the store).
    pub reference: String,
    /// A prompt for one answer; without it (and with no piped input) an interactive chat starts.
    pub prompt: Option<String>,
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub max_tokens: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// A system message to start the conversation with.
    #[arg(long)]
    pub system: Option<String>,
    /// Context size in tokens (default: the package's, else 4096 capped by the model).
    #[arg(long)]
    pub context_size: Option<usize>,
    /// Where the model runs when no server answers: auto, cpu, cuda, cuda:N, metal.
    #[arg(long, env = "MODEL_RUNNER_DEVICE", default_value = "auto")]
    pub device: crate::engine::device::DeviceChoice,
    /// Print load time and prompt/decode speeds after each answer.
    #[arg(long)]
    pub verbose: bool,
}

/// Finds the model in the store, pulling it when missing.
pub async fn resolve_or_pull(store: &Store, reference: &str) -> Result<LocalModel> {
    match store.resolve(reference) {
        Ok(model) => Ok(model),
        Err(StoreError::NotFound(_)) => {
            eprintln!("Unable to find model '{reference}' locally. Pulling from the server.");
            super::pull(store, reference, &RegistryOptions::default()).await?;
            Ok(store.resolve(reference)?)
        }
        Err(e) => Err(e.into()),
    }
}

impl RunArgs {
    fn answer_options(&self) -> AnswerOptions {
        AnswerOptions {
            model: self.reference.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            seed: self.seed,
            verbose: self.verbose,
        }
    }
}

pub async fn run(store: &Store, args: RunArgs) -> Result<()> {
    let (system, prompt) = (args.system.as_deref(), args.prompt.as_deref());
    // As `docker model run` talks to its runner: a server that answers does the work.
    if super::client::server_answers().await {
        let mut server = super::client::ServerAnswerer::new(args.answer_options());
        return converse(system, prompt, &mut server).await;
    }
    let model = resolve_or_pull(store, &args.reference).await?;
    let files = crate::runtime::model_files(store, &model)?;
    let options = EngineOptions {
        device: args.device.open()?,
        context_size: args.context_size,
        ..Default::default()
    };
    let started = Instant::now();
    let engine = tokio::task::spawn_blocking(move || Engine::load(&files, &options)).await??;
    let mut local = InProcess::start(engine, args.answer_options(), started.elapsed())?;
    converse(system, prompt, &mut local).await
}

/// Answers with a model loaded in this process: template, validate, submit to its own scheduler.
struct InProcess {
    scheduler: Scheduler,
    template: Arc<ChatTemplate>,
    /// The model file's template is untrusted: it renders in a worker process, as the server's do.
    sandbox: Arc<TemplateSandbox>,
    tokenizer: Arc<Tokenizer>,
    vocab_size: usize,
    context_size: usize,
    options: AnswerOptions,
    load_time: Duration,
    /// Ctrl-C while an answer streams stops that answer (at the prompt it only says how to leave).
    interrupt: Arc<Notify>,
    generating: Arc<AtomicBool>,
}

impl InProcess {
    fn start(engine: Engine, options: AnswerOptions, load_time: Duration) -> Result<Self> {
        if !engine.generates() {
            anyhow::bail!(
                "this model is an encoder ({}): it embeds or reranks through `model serve` \
                 (/v1/embeddings, /v1/rerank), it cannot chat",
                engine.info().architecture
            );
        }
        let sandbox = TemplateSandbox::for_this_binary(1)?;
        let interrupt = Arc::new(Notify::new());
        let generating = Arc::new(AtomicBool::new(false));
        {
            let (interrupt, generating) = (interrupt.clone(), generating.clone());
            tokio::spawn(async move {
                while tokio::signal::ctrl_c().await.is_ok() {
                    if generating.load(Ordering::Relaxed) {
                        interrupt.notify_waiters();
                    } else {
                        eprintln!("\nUse Ctrl + d or /bye to exit.");
                    }
                }
            });
        }
        Ok(Self {
            template: engine.template.clone(),
            sandbox,
            tokenizer: engine.tokenizer.clone(),
            vocab_size: engine.info().vocab_size,
            context_size: engine.context_size(),
            scheduler: Scheduler::start(engine, SchedulerConfig::default()),
            options,
            load_time,
            interrupt,
            generating,
        })
    }

    fn report(&self, usage: &Usage, prompt_time: Duration, decode_time: Duration) {
        let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        eprintln!("load duration:        {:.3}s", self.load_time.as_secs_f64());
        eprintln!("prompt eval count:    {} token(s)", usage.prompt_tokens);
        eprintln!("prompt eval duration: {:.3}s", prompt_time.as_secs_f64());
        eprintln!(
            "prompt eval rate:     {:.2} tokens/s",
            rate(usage.prompt_tokens, prompt_time)
        );
        eprintln!("eval count:           {} token(s)", usage.completion_tokens);
        eprintln!("eval duration:        {:.3}s", decode_time.as_secs_f64());
        eprintln!(
            "eval rate:            {:.2} tokens/s",
            rate(usage.completion_tokens, decode_time)
        );
    }
}

impl Answerer for InProcess {
    async fn answer(&mut self, history: &[ChatMessage]) -> Result<String> {
        let job = RenderJob::new(
            &self.template,
            history.to_vec(),
            None,
            true,
            serde_json::Map::new(),
        );
        let prompt_text = self.sandbox.render(&job).await?;
        let prompt = self.tokenizer.encode(&prompt_text, true)?;
        tracing::debug!(prompt = %prompt_text, tokens = prompt.len(), "rendered chat prompt");
        let params = GenerationParams {
            temperature: self.options.temperature.map(f64::from),
            max_tokens: self.options.max_tokens.map(|n| n as i64),
            seed: self.options.seed.map(|s| s as i64),
            ..Default::default()
        };
        let request = validate(prompt, None, &params, self.vocab_size, self.context_size)?;
        let interrupted = self.interrupt.notified();
        tokio::pin!(interrupted);
        let submitted = Instant::now();
        let mut events = self.scheduler.submit(request)?;
        self.generating.store(true, Ordering::Relaxed);
        let mut reply = String::new();
        let mut first_token_at = None;
        let outcome = loop {
            let event = tokio::select! {
                event = events.recv() => event,
                // Dropping the receiver cancels the sequence at the scheduler's next step.
                () = &mut interrupted => break Ok(None),
            };
            match event {
                Some(Event::Token { text, .. }) => {
                    first_token_at.get_or_insert_with(Instant::now);
                    show(&text);
                    reply.push_str(&text);
                }
                Some(Event::Done { usage, text, .. }) => {
                    show(&text);
                    reply.push_str(&text);
                    break Ok(Some(usage));
                }
                Some(Event::Failed(e)) => break Err(anyhow::Error::from(e)),
                None => {
                    break Err(anyhow!(
                        "the model's scheduler stopped before the answer was complete"
                    ));
                }
            }
        };
        self.generating.store(false, Ordering::Relaxed);
        let usage = outcome?;
        println!();
        if let (true, Some(usage)) = (self.options.verbose, usage) {
            let first = first_token_at.unwrap_or(submitted);
            self.report(&usage, first - submitted, first.elapsed());
        }
        Ok(reply)
    }
}
