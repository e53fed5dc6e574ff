use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::model::base::PinnedBase;
use crate::model::encoder::Encoder;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Messages to embed. Without any, one message is read per line of standard input.
    pub messages: Vec<String>,

    /// Number of messages per forward pass.
    #[arg(long, env = "CYBERTRIAGE_BATCH_SIZE", default_value_t = 32)]
    pub batch_size: usize,
}

pub fn run(models_dir: &Path, args: Args) -> Result<ExitCode> {
    let base_dir = PinnedBase::load()?.output_dir(models_dir);
    let encoder = Encoder::load(&base_dir)?;
    let messages = if args.messages.is_empty() {
        std::io::stdin().lock().lines().collect::<std::io::Result<Vec<_>>>().context("failed to read stdin")?
    } else {
        args.messages
    };

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for chunk in messages.chunks(args.batch_size.max(1)) {
        let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for vector in encoder.embed(&texts)? {
            serde_json::to_writer(&mut out, &vector)?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
