//! `cybertriage bench worker`: loads the classifier once, then times commands read on stdin,
//! so that another program (benches/peer/compare.py) can alternate this project and a peer
//! engine round by round without process start-up in the timings.
//!
//! Protocol, one JSON object per line each way. The worker first writes
//! `{"ready": true, "load_seconds": S}`. Then, for each command
//! `{"op": "embed" | "classify", "texts": ["…", …]}`, it writes
//! `{"op": OP, "inputs": N, "seconds": S}`. S is measured inside the process around the call
//! alone. `embed` runs the encoder (tokenization, forward pass, pooling) on all texts in one
//! call. `classify` runs the whole classifier (encoder, heads, rules and decision) through the
//! `Classify` trait.
//!
//! An invalid command gets `{"error": "…"}` and the worker goes on. End of input stops it.
//! Replies never contain the texts.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::json;

use crate::triage::classifier::{default_model_dir, Classifier, Classify, MessageInput};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Classifier model folder. Default: cybertriage-fr/ in the models folder.
    #[arg(long, env = "CYBERTRIAGE_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Embed,
    Classify,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    op: Op,
    texts: Vec<String>,
}

pub fn run(models_dir: &Path, args: Args) -> Result<ExitCode> {
    let model_dir = args.model_dir.unwrap_or_else(|| default_model_dir(models_dir));
    let started = Instant::now();
    let classifier = Classifier::load(models_dir, &model_dir)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    reply(&mut out, &json!({ "ready": true, "load_seconds": started.elapsed().as_secs_f64() }))?;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("failed to read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Command>(&line) {
            Ok(command) => match time(&classifier, &command) {
                Ok(seconds) => json!({ "op": command.op_name(), "inputs": command.texts.len(), "seconds": seconds }),
                Err(error) => json!({ "error": format!("{error:#}") }),
            },
            // serde's message can quote a value, so only the position is returned.
            Err(error) => json!({ "error": format!(
                "expected {{\"op\": \"embed\"|\"classify\", \"texts\": [...]}} (column {})", error.column()) }),
        };
        reply(&mut out, &answer)?;
    }
    Ok(ExitCode::SUCCESS)
}

impl Command {
    fn op_name(&self) -> &'static str {
        match self.op {
            Op::Embed => "embed",
            Op::Classify => "classify",
        }
    }
}

/// Runs one command and returns its duration in seconds. Inputs are built before the clock
/// starts.
fn time(classifier: &Classifier, command: &Command) -> Result<f64> {
    anyhow::ensure!(!command.texts.is_empty(), "`texts` is empty");
    match command.op {
        Op::Embed => {
            let texts: Vec<&str> = command.texts.iter().map(String::as_str).collect();
            let started = Instant::now();
            classifier.encoder().embed(&texts)?;
            Ok(started.elapsed().as_secs_f64())
        }
        Op::Classify => {
            let inputs: Vec<MessageInput> = command.texts.iter().map(MessageInput::new).collect();
            let started = Instant::now();
            classifier.classify(&inputs).map_err(anyhow::Error::from)?;
            Ok(started.elapsed().as_secs_f64())
        }
    }
}

fn reply(out: &mut impl Write, value: &serde_json::Value) -> Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
