//! Chat templates rendered in worker processes with a memory limit.
//!
//! A template is code that comes with a model file. Fuel bounds the instructions it runs and the data
//! minijinja charges for, and the output is capped, but some of minijinja's own operations build text
//! without charging for it: `x ~ ''` or `{% set y %}{{ x }}{% endset %}` on a list built by doubling
//! `[x, x]` writes exponential text into one `String` before any check sees it, and a failed allocation
//! aborts the process. So the server renders in a child process (the same binary, started as
//! `model __render-template`) under an address-space limit: a template that runs away kills only its
//! worker, and that request gets the error. A worker is also the render's real cancellation: dropping a
//! render (the deadline passed, the client left) kills the process and frees its CPU at once.
//!
//! Protocol: on the worker's stdin and stdout, one frame per render, a little-endian `u32` length then
//! that much JSON (`RenderJob` in, `RenderReply` out). Workers are kept for the next render; at most
//! `max_workers` run at once, others wait.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use super::chat_template::{ChatMessage, ChatTemplate, TemplateError};

/// The first argument that starts the binary as a render worker (never shown in `--help`).
pub const WORKER_ARG: &str = "__render-template";
/// Address space a worker may add to what it holds at start: renders within fuel need far less (data
/// fuel allows about 320 MiB, output 8 MiB, the render thread's stack reserve 128 MiB).
pub const WORKER_MEMORY_BYTES: u64 = 1 << 30;
/// Largest frame either side accepts: a request body is far smaller, a rendered prompt at most 8 MiB.
const MAX_FRAME_BYTES: usize = 256 << 20;
/// Compiled templates a worker keeps (one per loaded model, in practice).
const WORKER_TEMPLATE_CACHE: usize = 8;
/// Idle workers kept for the next render.
const MAX_IDLE_WORKERS: usize = 2;

/// Everything one render needs: the template and what it is rendered with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenderJob {
    pub source: String,
    pub bos_token: String,
    pub eos_token: String,
    pub messages: Vec<ChatMessage>,
    pub tools: Option<serde_json::Value>,
    pub add_generation_prompt: bool,
    /// Further template variables (`chat_template_kwargs`, `enable_thinking`).
    #[serde(default)]
    pub variables: serde_json::Map<String, serde_json::Value>,
}

impl RenderJob {
    /// A render of `messages` by `template`.
    pub fn new(
        template: &ChatTemplate,
        messages: Vec<ChatMessage>,
        tools: Option<serde_json::Value>,
        add_generation_prompt: bool,
        variables: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        let (bos_token, eos_token) = template.special_tokens();
        Self {
            source: template.source().to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            messages,
            tools,
            add_generation_prompt,
            variables,
        }
    }
}

/// A worker's answer: the prompt, or why the template failed.
#[derive(Debug, Serialize, Deserialize)]
enum RenderReply {
    Rendered(String),
    Compile(String),
    Render(String),
    OutOfFuel,
    TooLarge,
}

impl From<Result<String, TemplateError>> for RenderReply {
    fn from(result: Result<String, TemplateError>) -> Self {
        match result {
            Ok(text) => Self::Rendered(text),
            Err(TemplateError::Compile(m)) => Self::Compile(m),
            Err(TemplateError::Render(m)) => Self::Render(m),
            Err(TemplateError::OutOfFuel) => Self::OutOfFuel,
            Err(TemplateError::TooLarge) => Self::TooLarge,
        }
    }
}

impl From<RenderReply> for Result<String, TemplateError> {
    fn from(reply: RenderReply) -> Self {
        match reply {
            RenderReply::Rendered(text) => Ok(text),
            RenderReply::Compile(m) => Err(TemplateError::Compile(m)),
            RenderReply::Render(m) => Err(TemplateError::Render(m)),
            RenderReply::OutOfFuel => Err(TemplateError::OutOfFuel),
            RenderReply::TooLarge => Err(TemplateError::TooLarge),
        }
    }
}

/// Starts, reuses and bounds the render workers of one server.
pub struct TemplateSandbox {
    program: PathBuf,
    idle: Mutex<Vec<Worker>>,
    running: Semaphore,
}

impl std::fmt::Debug for TemplateSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateSandbox")
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

impl TemplateSandbox {
    /// Workers run `program` (this binary) with `WORKER_ARG`; at most `max_workers` at once.
    pub fn new(program: PathBuf, max_workers: usize) -> Arc<Self> {
        Arc::new(Self {
            program,
            idle: Mutex::new(Vec::new()),
            running: Semaphore::new(max_workers.max(1)),
        })
    }

    /// This binary as its own render worker (`/proc/self/exe` where there is one, so that a binary
    /// replaced on disk still starts workers of its own version).
    pub fn for_this_binary(max_workers: usize) -> std::io::Result<Arc<Self>> {
        let proc_exe = PathBuf::from("/proc/self/exe");
        let program = if proc_exe.exists() {
            proc_exe
        } else {
            std::env::current_exe()?
        };
        Ok(Self::new(program, max_workers))
    }

    /// Renders `job` in a worker. Dropping the future kills the worker it was using.
    pub async fn render(&self, job: &RenderJob) -> Result<String, TemplateError> {
        let frame = serde_json::to_vec(job)
            .map_err(|e| TemplateError::Render(format!("cannot send the render: {e}")))?;
        let _permit = self
            .running
            .acquire()
            .await
            .map_err(|_| TemplateError::Render("the template sandbox is closed".to_string()))?;
        let idle = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        let mut worker = match idle {
            Some(worker) => worker,
            None => Worker::start(&self.program).map_err(|e| {
                TemplateError::Render(format!("cannot start a template worker: {e}"))
            })?,
        };
        match worker.exchange(&frame).await {
            Ok(reply) => {
                if let Ok(mut idle) = self.idle.lock()
                    && idle.len() < MAX_IDLE_WORKERS
                {
                    idle.push(worker);
                }
                reply.into()
            }
            Err(broken) => Err(worker.died(broken).await),
        }
    }
}

/// One worker process and its pipes; killed when dropped.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn start(program: &PathBuf) -> std::io::Result<Self> {
        let mut child = Command::new(program)
            .arg(WORKER_ARG)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // An aborted allocation prints to stderr; the request's error says what happened.
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the worker's pipes are missing"));
        };
        Ok(Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    async fn exchange(&mut self, frame: &[u8]) -> std::io::Result<RenderReply> {
        let len = u32::try_from(frame.len())
            .map_err(|_| std::io::Error::other("the render job is too large"))?;
        self.stdin.write_all(&len.to_le_bytes()).await?;
        self.stdin.write_all(frame).await?;
        self.stdin.flush().await?;
        let mut len = [0u8; 4];
        self.stdout.read_exact(&mut len).await?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(std::io::Error::other("the worker's reply is too large"));
        }
        let mut reply = vec![0u8; len];
        self.stdout.read_exact(&mut reply).await?;
        serde_json::from_slice(&reply).map_err(std::io::Error::other)
    }

    /// What a worker that broke its pipe died of, as the render's error.
    async fn died(mut self, broken: std::io::Error) -> TemplateError {
        let _ = self.child.start_kill();
        let status = self.child.wait().await;
        tracing::warn!(error = %broken, status = ?status, "a chat template worker died");
        #[cfg(unix)]
        if let Ok(status) = &status {
            use std::os::unix::process::ExitStatusExt;
            // An allocation past the limit aborts (SIGABRT); the kernel may also kill (SIGKILL/SIGSEGV).
            if matches!(
                status.signal(),
                Some(libc::SIGABRT | libc::SIGKILL | libc::SIGSEGV)
            ) {
                return TemplateError::Render(format!(
                    "the chat template used more than the {} MiB a render may use",
                    WORKER_MEMORY_BYTES >> 20
                ));
            }
        }
        TemplateError::Render(format!("the template worker failed: {broken}"))
    }
}

/// The worker's side: renders the frames on stdin until it closes. Runs before any async runtime, so
/// the process has one thread besides the render's.
pub fn serve_worker() -> std::process::ExitCode {
    limit_memory(WORKER_MEMORY_BYTES);
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    match serve_frames(stdin, stdout) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

/// Renders each framed `RenderJob` read from `input` and writes its framed reply to `output`, until
/// `input` ends.
pub fn serve_frames(mut input: impl Read, mut output: impl Write) -> std::io::Result<()> {
    let mut templates: HashMap<(String, String, String), ChatTemplate> = HashMap::new();
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(std::io::Error::other("render job too large"));
        }
        let mut frame = vec![0u8; len];
        input.read_exact(&mut frame)?;
        let reply = match serde_json::from_slice::<RenderJob>(&frame) {
            Ok(job) => RenderReply::from(render(&mut templates, job)),
            Err(e) => RenderReply::Render(format!("unreadable render job: {e}")),
        };
        let reply = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
        let reply_len = u32::try_from(reply.len()).map_err(std::io::Error::other)?;
        output.write_all(&reply_len.to_le_bytes())?;
        output.write_all(&reply)?;
        output.flush()?;
    }
}

fn render(
    templates: &mut HashMap<(String, String, String), ChatTemplate>,
    job: RenderJob,
) -> Result<String, TemplateError> {
    let key = (job.source, job.bos_token, job.eos_token);
    if !templates.contains_key(&key) {
        if templates.len() >= WORKER_TEMPLATE_CACHE {
            templates.clear();
        }
        let template = ChatTemplate::new(&key.0, &key.1, &key.2)?;
        templates.insert(key.clone(), template);
    }
    match templates.get(&key) {
        Some(template) => template.render_with(
            &job.messages,
            job.tools.as_ref(),
            job.add_generation_prompt,
            &job.variables,
        ),
        None => Err(TemplateError::Render(
            "the template cache lost a template".into(),
        )),
    }
}

/// Caps this process's address space at what it holds now plus `extra` bytes: past it, allocations
/// fail and the process aborts, which is the point.
fn limit_memory(extra: u64) {
    #[cfg(target_os = "linux")]
    {
        let held = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |pages| pages * 4096);
        let limit = libc::rlimit {
            rlim_cur: held + extra,
            rlim_max: held + extra,
        };
        // SAFETY: setrlimit reads the struct we pass and changes only this process's limits.
        if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
            tracing::warn!("cannot limit the template worker's memory");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = extra;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(source: &str) -> RenderJob {
        RenderJob {
            source: source.to_string(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            messages: vec![ChatMessage::new("user", "hi")],
            tools: None,
            add_generation_prompt: true,
            variables: serde_json::Map::new(),
        }
    }

    fn frames(jobs: &[RenderJob]) -> Vec<u8> {
        let mut out = Vec::new();
        for job in jobs {
            let frame = serde_json::to_vec(job).unwrap();
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&frame);
        }
        out
    }

    fn replies(mut bytes: &[u8]) -> Vec<Result<String, TemplateError>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
            let reply: RenderReply = serde_json::from_slice(&bytes[4..4 + len]).unwrap();
            out.push(reply.into());
            bytes = &bytes[4 + len..];
        }
        out
    }

    #[test]
    fn a_worker_renders_each_job_and_reports_template_errors_in_kind() {
        let input = frames(&[
            job("{{ bos_token }}{{ messages[0].content }}"),
            job("{% for"),
            job("{{ 'x' * 100000000000 }}"),
            job("{{ bos_token }}{{ messages[0].content }}"),
        ]);
        let mut output = Vec::new();
        serve_frames(input.as_slice(), &mut output).unwrap();
        let replies = replies(&output);
        assert_eq!(replies.len(), 4);
        assert_eq!(replies[0].as_ref().unwrap(), "<s>hi");
        assert!(matches!(replies[1], Err(TemplateError::Compile(_))));
        assert!(replies[2].is_err());
        assert_eq!(replies[3].as_ref().unwrap(), "<s>hi");
    }

    #[test]
    fn a_worker_renders_with_the_job_s_variables() {
        let mut with = job("{{ enable_thinking }}");
        with.variables
            .insert("enable_thinking".into(), serde_json::Value::Bool(false));
        let mut output = Vec::new();
        serve_frames(frames(&[with]).as_slice(), &mut output).unwrap();
        assert_eq!(replies(&output)[0].as_ref().unwrap(), "False");
    }

    #[test]
    fn a_garbled_job_is_that_job_s_error_and_a_truncated_stream_ends_the_worker() {
        let mut input = 3u32.to_le_bytes().to_vec();
        input.extend_from_slice(b"{x}");
        input.extend_from_slice(&frames(&[job("ok")]));
        input.extend_from_slice(&100u32.to_le_bytes());
        let mut output = Vec::new();
        let ended = serve_frames(input.as_slice(), &mut output);
        let replies = replies(&output);
        assert!(matches!(replies[0], Err(TemplateError::Render(_))));
        assert_eq!(replies[1].as_ref().unwrap(), "ok");
        assert!(
            ended.is_err(),
            "a frame cut short is an error, not a render"
        );
    }
}
