//! The `model` binary: parses the command line, sets up logging, and prints any error as one line.
#![recursion_limit = "256"]

use clap::Parser;
use model_runner::cli::{self, Cli};
use model_runner::engine::template_sandbox;

fn main() -> std::process::ExitCode {
    // A chat-template render worker (see `template_sandbox`): no runtime, no logging, one job at a time.
    if std::env::args_os().nth(1).as_deref() == Some(template_sandbox::WORKER_ARG.as_ref()) {
        return template_sandbox::serve_worker();
    }
    model_runner::allocator::tune_for_server();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MODEL_RUNNER_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,model_runner::mcp::calls=info")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // SAFETY (both blocks): no other thread exists yet (the runtime, the kernel pool and candle's are all
    // built later, and read these once when they are).
    if let Some(threads) = cli.threads {
        unsafe {
            std::env::set_var(model_runner::cli::THREADS_ENV, threads.to_string());
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        }
    }
    // Candle's element-wise ops run on the step's own thread: the kernel pool holds the other cores,
    // and a second spinning pool beside it cost batched decode ~9% (1B, 2 cores, x8 and x16 streams)
    // for ~1.5% of prompt speed. `CANDLE_NUM_THREADS` set by the user still wins.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
