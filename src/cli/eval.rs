//! `cybertriage eval`: evaluate a model on a labeled JSONL file, write `report.json`,
//! `report.html` and `errors.jsonl`, print the figures, and optionally guard against a
//! regression from an earlier `report.json`.
//!
//! Exit status: 0 on success, 1 on an error (unreadable data, model that fails to load, …),
//! 3 when `--baseline` is given and the model regressed on safety beyond `--tolerance`. The
//! reports are written in every case but the error one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::eval::baseline::read_report;
use crate::eval::example::read_examples;
use crate::eval::report_json::{sha256_file, DataIdentity, ModelIdentity};
use crate::eval::report_text;
use crate::eval::run::{evaluate, write_outputs, Options};
use crate::eval::{ERRORS_FILE, REPORT_HTML_FILE, REPORT_JSON_FILE};
use crate::triage::classifier::{default_model_dir, Classifier, Classify};

/// Exit status of a run whose model regressed against the baseline.
pub const REGRESSION_EXIT: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labeled JSONL file to evaluate on: one example per line with id, text, categories,
    /// intent, urgency, speaker and optional tags.
    #[arg(long, env = "CYBERTRIAGE_EVAL_DATA", default_value = "eval/testset.jsonl")]
    pub data: PathBuf,

    /// Model folder to evaluate. Default: cybertriage-fr in the models folder.
    #[arg(long, env = "CYBERTRIAGE_MODEL_DIR")]
    pub model: Option<PathBuf>,

    /// Folder for report.json, report.html and errors.jsonl; created if missing, and files of
    /// those names in it are replaced.
    #[arg(long, env = "CYBERTRIAGE_EVAL_OUT", default_value = "eval/reports/latest")]
    pub out: PathBuf,

    /// An earlier report.json to compare with. Prints a table of deltas, and exits with status 3
    /// when critical recall falls, or the severe under-triage rate rises, by more than
    /// --tolerance. Default: no comparison.
    #[arg(long, env = "CYBERTRIAGE_EVAL_BASELINE")]
    pub baseline: Option<PathBuf>,

    /// Largest fall of critical recall, and largest rise of the severe under-triage rate, that
    /// --baseline tolerates, as a fraction between 0 and 1 (0.02 = 2 points). Default 0: any
    /// worsening fails.
    #[arg(long, env = "CYBERTRIAGE_EVAL_TOLERANCE", default_value_t = 0.0, value_parser = parse_fraction)]
    pub tolerance: f64,

    /// Also evaluate copies of every message with accents stripped, SMS spellings, typos and
    /// case changes, and report how far each figure falls on them. Default: off.
    #[arg(long, env = "CYBERTRIAGE_EVAL_PERTURB")]
    pub perturb: bool,

    /// Seed of the perturbations and of the bootstrap; the same seed gives the same report
    /// figures. Default 42.
    #[arg(long, env = "CYBERTRIAGE_EVAL_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Bootstrap resamples for the 95 % confidence intervals; 0 turns them off. Default 1000.
    #[arg(long, env = "CYBERTRIAGE_EVAL_BOOTSTRAP", default_value_t = 1000)]
    pub bootstrap: usize,

    /// Messages per classifier call, from 1 to 1024. Default 16.
    #[arg(long, env = "CYBERTRIAGE_EVAL_BATCH_SIZE", default_value_t = 16, value_parser = parse_batch_size)]
    pub batch_size: usize,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("`{text}` is not a fraction between 0 and 1, such as 0.02")),
    }
}

fn parse_batch_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(value) if (1..=1024).contains(&value) => Ok(value),
        _ => Err(format!("`{text}` is not a whole number from 1 to 1024")),
    }
}

pub fn run(models_dir: &Path, args: Args) -> Result<ExitCode> {
    let model_dir = args.model.clone().unwrap_or_else(|| default_model_dir(models_dir));
    let examples = read_examples(&args.data)?;
    // Read the baseline before the long run, so a wrong path fails at once.
    let baseline = args.baseline.as_deref().map(read_report).transpose()?;
    if args.out.is_file() {
        bail!("--out {} is a file; it must be a folder", args.out.display());
    }

    let classifier = Classifier::load(models_dir, &model_dir)?;
    let data = DataIdentity {
        path: args.data.display().to_string(),
        sha256: sha256_file(&args.data)?,
        examples: examples.len(),
    };
    let model = ModelIdentity::new(classifier.model_info(), &model_dir)?;
    let options = Options {
        batch_size: args.batch_size,
        seed: args.seed,
        bootstrap: args.bootstrap,
        perturb: args.perturb,
        progress: true,
    };
    tracing::info!(examples = examples.len(), perturb = args.perturb, model = %model_dir.display(), "evaluating");
    let mut evaluation = evaluate(&classifier, &examples, data, model, &options)?;
    if let (Some(baseline), Some(path)) = (&baseline, &args.baseline) {
        evaluation.compare_with(&path.display().to_string(), baseline, args.tolerance);
    }
    write_outputs(&args.out, &evaluation)?;

    print!("{}", report_text::summary(&evaluation.report));
    println!(
        "Wrote {REPORT_JSON_FILE}, {REPORT_HTML_FILE} and {ERRORS_FILE} ({} errors) to {}.",
        evaluation.errors.len(),
        args.out.display()
    );
    match &evaluation.report.baseline {
        Some(comparison) => {
            print!("{}", report_text::comparison(comparison));
            Ok(if comparison.passed { ExitCode::SUCCESS } else { ExitCode::from(REGRESSION_EXIT) })
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
