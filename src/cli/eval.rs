use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_models_dir: &Path, _args: Args) -> Result<ExitCode> {
    bail!("`eval` is not implemented yet")
}
