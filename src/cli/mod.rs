//! Subcommands of the `cybertriage` binary, one module each.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub mod bench;
pub mod classify;
pub mod data;
pub mod embed;
pub mod eval;
pub mod fetch_base;
pub mod serve;
pub mod train;

/// Triage of messages sent to a French child-protection helpline chatbot.
#[derive(Debug, Parser)]
#[command(name = "cybertriage", version, about)]
pub struct Cli {
    /// Folder that contains base.toml, the base encoder and the classifier models.
    /// Defaults to the models/ folder of this source tree.
    #[arg(long, env = "CYBERTRIAGE_MODELS_DIR", global = true)]
    pub models_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download the pinned base encoder, check its checksums and convert it under models/base/.
    FetchBase(fetch_base::Args),
    /// Print one JSON array of 384 floats per message (arguments, or one message per stdin line).
    Embed(embed::Args),
    /// Classify messages and print the classification JSON.
    Classify(classify::Args),
    /// Train the classifier heads on training-data/ and write a model folder.
    Train(train::Args),
    /// Serve the HTTP classification API.
    Serve(serve::Args),
    /// Evaluate a model on a labeled JSONL file and write a report.
    Eval(eval::Args),
    /// Validate the training and evaluation data.
    Data(data::Args),
    /// Drive a running or spawned server with load and report latency and throughput.
    Bench(bench::Args),
}

impl Cli {
    pub fn models_dir(&self) -> PathBuf {
        self.models_dir.clone().unwrap_or_else(crate::model::base::default_models_dir)
    }
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> Result<ExitCode> {
    // `serve` installs its own subscriber, because its log format (text or JSON) is an option.
    if !matches!(cli.command, Command::Serve(_)) {
        init_logging();
    }
    let models_dir = cli.models_dir();
    match cli.command {
        Command::FetchBase(args) => fetch_base::run(&models_dir, args),
        Command::Embed(args) => embed::run(&models_dir, args),
        Command::Classify(args) => classify::run(&models_dir, args),
        Command::Train(args) => train::run(&models_dir, args),
        Command::Serve(args) => serve::run(&models_dir, args),
        Command::Eval(args) => eval::run(&models_dir, args),
        Command::Data(args) => data::run(&models_dir, args),
        Command::Bench(args) => bench::run(&models_dir, args),
    }
}

/// Sends human-readable logs to stderr, filtered by `RUST_LOG` (default `info`), with the crates
/// that quote message text capped at `warn`.
pub fn init_logging() {
    crate::http::logging::init(crate::http::logging::LogFormat::Text);
}
