//! The `model` binary: parses the command line, sets up logging, and prints any error as one line.
#![recursion_limit = "256"]

use clap::Parser;
use model_runner::cli::{self, Cli};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MODEL_RUNNER_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,model_runner::mcp::calls=info")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
