//! `model run`: one prompt or an interactive chat with a stored model, streaming tokens to the terminal.
//! Pulls the model first when the store lacks it, as `docker model run` does.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::engine::chat_template::ChatMessage;
use crate::engine::sampler::SamplingParams;
use crate::engine::{Engine, EngineOptions, GenerateRequest, Generation};
use crate::registry::RegistryOptions;
use crate::store::{LocalModel, Store, StoreError};

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

pub async fn run(store: &Store, args: RunArgs) -> Result<()> {
    // As `docker model run` talks to its runner: a server that answers does the work.
    if super::client::server_answers().await {
        return super::client::run_remote(args).await;
    }
    let model = resolve_or_pull(store, &args.reference).await?;
    let files = crate::runtime::model_files(store, &model)?;
    let options = EngineOptions {
        device: args.device.open()?,
        context_size: args.context_size,
        ..Default::default()
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let generating = Arc::new(AtomicBool::new(false));
    {
        let (cancel, generating) = (cancel.clone(), generating.clone());
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if generating.load(Ordering::Relaxed) {
                    cancel.store(true, Ordering::Relaxed);
                } else {
                    eprintln!("\nUse Ctrl + d or /bye to exit.");
                }
            }
        });
    }
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut engine = Engine::load(&files, &options)?;
        let session = Session {
            args,
            load_time: started.elapsed(),
            cancel,
            generating,
        };
        session.run(&mut engine)
    })
    .await?
}

struct Session {
    args: RunArgs,
    load_time: Duration,
    cancel: Arc<AtomicBool>,
    generating: Arc<AtomicBool>,
}

/// The conversation's start: the system message, and the one-shot prompt (argument and/or piped stdin).
pub fn opening(args: &RunArgs) -> Result<(Vec<ChatMessage>, Option<String>)> {
    let mut history = Vec::new();
    if let Some(system) = &args.system {
        history.push(ChatMessage::new("system", system.clone()));
    }
    let stdin = std::io::stdin();
    let piped = if stdin.is_terminal() {
        None
    } else {
        let mut text = String::new();
        stdin.lock().read_to_string(&mut text)?;
        Some(text).filter(|t| !t.trim().is_empty())
    };
    let one_shot = match (&args.prompt, piped) {
        (Some(prompt), Some(input)) => Some(format!("{prompt}\n\n{input}")),
        (Some(prompt), None) => Some(prompt.clone()),
        (None, Some(input)) => Some(input),
        (None, None) => None,
    };
    Ok((history, one_shot))
}

/// What the user typed at the interactive prompt.
enum Input {
    Message(String),
    Clear,
    Quit,
}

/// Reads the user's next turn into `history`, handling `/clear`; false when they leave.
pub fn next_turn(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    history: &mut Vec<ChatMessage>,
) -> Result<bool> {
    loop {
        match read_input(lines)? {
            None => continue,
            Some(Input::Quit) => return Ok(false),
            Some(Input::Clear) => {
                history.retain(|m| m.role == "system");
                println!("Cleared session context");
            }
            Some(Input::Message(text)) => {
                history.push(ChatMessage::new("user", text));
                return Ok(true);
            }
        }
    }
}

/// Ends a turn: the reply joins the history; on an error the question leaves it and the error is shown.
pub fn record_reply(history: &mut Vec<ChatMessage>, reply: Result<String>) {
    match reply {
        Ok(reply) => history.push(ChatMessage::new("assistant", reply)),
        Err(e) => {
            history.pop();
            eprintln!("Error: {e:#}");
        }
    }
}

/// Reads the next message: handles `"""` multi-line input and the slash commands; None for nothing to do.
fn read_input(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Result<Option<Input>> {
    print!(">>> ");
    std::io::stdout().flush()?;
    let Some(line) = lines.next().transpose()? else {
        println!();
        return Ok(Some(Input::Quit));
    };
    let mut input = line;
    if let Some(rest) = input.trim_start().strip_prefix("\"\"\"") {
        let mut text = rest.to_string();
        while !text.trim_end().ends_with("\"\"\"") {
            print!("... ");
            std::io::stdout().flush()?;
            let Some(next) = lines.next().transpose()? else {
                break;
            };
            text.push('\n');
            text.push_str(&next);
        }
        input = text.trim_end().trim_end_matches("\"\"\"").to_string();
    }
    Ok(match input.trim() {
        "" => None,
        "/bye" | "/exit" => Some(Input::Quit),
        "/clear" => Some(Input::Clear),
        "/?" | "/help" => {
            println!(
                "/bye to exit, /clear to forget the conversation, \"\"\" to begin and end multi-line input"
            );
            None
        }
        _ => Some(Input::Message(input)),
    })
}

impl Session {
    fn run(&self, engine: &mut Engine) -> Result<()> {
        let (mut history, one_shot) = opening(&self.args)?;
        if let Some(prompt) = one_shot {
            history.push(ChatMessage::new("user", prompt));
            self.answer(engine, &history)?;
            return Ok(());
        }
        self.chat(engine, history)
    }

    fn chat(&self, engine: &mut Engine, mut history: Vec<ChatMessage>) -> Result<()> {
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        while next_turn(&mut lines, &mut history)? {
            let reply = self.answer(engine, &history);
            record_reply(&mut history, reply);
        }
        Ok(())
    }

    /// Streams one answer to stdout and returns its text.
    fn answer(&self, engine: &mut Engine, history: &[ChatMessage]) -> Result<String> {
        let prompt_text = engine.template.render(history, None, true)?;
        let prompt = engine.tokenizer.encode(&prompt_text, true)?;
        tracing::debug!(prompt = %prompt_text, tokens = prompt.len(), "rendered chat prompt");
        let defaults = SamplingParams::default();
        let request = GenerateRequest {
            prompt,
            sampling: SamplingParams {
                temperature: self.args.temperature.unwrap_or(defaults.temperature),
                seed: self.args.seed,
                ..defaults
            },
            max_tokens: self.args.max_tokens,
            stop: Vec::new(),
            ignore_eos: false,
        };
        let mut reply = String::new();
        let mut stdout = std::io::stdout();
        self.cancel.store(false, Ordering::Relaxed);
        self.generating.store(true, Ordering::Relaxed);
        let result = engine.generate(
            &request,
            &mut |piece| {
                reply.push_str(piece);
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            },
            &self.cancel,
        );
        self.generating.store(false, Ordering::Relaxed);
        let generation = result?;
        println!();
        if self.args.verbose {
            self.report(&generation);
        }
        Ok(reply)
    }

    fn report(&self, g: &Generation) {
        let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        eprintln!("load duration:        {:.3}s", self.load_time.as_secs_f64());
        eprintln!("prompt eval count:    {} token(s)", g.prompt_tokens);
        eprintln!("prompt eval duration: {:.3}s", g.prompt_time.as_secs_f64());
        eprintln!(
            "prompt eval rate:     {:.2} tokens/s",
            rate(g.prompt_tokens, g.prompt_time)
        );
        eprintln!("eval count:           {} token(s)", g.tokens.len());
        eprintln!("eval duration:        {:.3}s", g.decode_time.as_secs_f64());
        eprintln!(
            "eval rate:            {:.2} tokens/s",
            rate(g.tokens.len(), g.decode_time)
        );
    }
}
