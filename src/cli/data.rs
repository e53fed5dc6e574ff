//! `cybertriage data`: tools for the labeled training and evaluation files.
//!
//! `data check` prints one line per violation (``FILE:LINE: field `x`: …``), then the label
//! counts as Markdown tables and a summary, all on stdout, with progress on stderr. It exits
//! with status 1 when it finds any violation, so CI can run it as is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::data::counts::{markdown_tables, LabelCounts};
use crate::data::dataset::{duplicate_ids, duplicate_texts, DataFile, Dataset, Split};
use crate::data::near_duplicates::{near_duplicates, texts_to_embed};
use crate::data::problem::{ProblemKind, Violation};
use crate::model::base::PinnedBase;
use crate::model::encoder::Encoder;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Check the training and evaluation files (format, labels, duplicate ids and texts,
    /// near-duplicates between the sets), print label counts, and exit with status 1 on any
    /// violation.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Folder of training files: every `*.jsonl` file directly inside it is checked.
    /// Defaults to training-data/ of this source tree.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_DIR", value_name = "DIR")]
    pub train_dir: Option<PathBuf>,

    /// Evaluation file. Repeat the option to check several files; the environment variable
    /// takes one. Defaults to eval/testset.jsonl of this source tree.
    #[arg(long = "eval", env = "CYBERTRIAGE_EVAL_FILE", value_name = "FILE")]
    pub eval_files: Vec<PathBuf>,

    /// Cosine similarity of encoder embeddings above which a training and an evaluation message
    /// are near-duplicates. A number in (0, 1]; the default is 0.95.
    #[arg(long, env = "CYBERTRIAGE_NEAR_DUPLICATE_THRESHOLD", default_value_t = 0.95, value_name = "COSINE")]
    pub near_duplicate_threshold: f32,

    /// Skip the near-duplicate check, which loads the base encoder and embeds every message
    /// (about 4 minutes for the 8,775 messages of this repository on 2 idle CPU cores). Off by
    /// default.
    #[arg(long, env = "CYBERTRIAGE_SKIP_NEAR_DUPLICATES")]
    pub skip_near_duplicates: bool,
}

/// The validated form of [`CheckArgs`].
#[derive(Debug, Clone, PartialEq)]
struct CheckConfig {
    files: Vec<DataFile>,
    /// `None` when the near-duplicate check is skipped.
    near_duplicate_threshold: Option<f32>,
}

impl CheckArgs {
    fn resolve(self) -> Result<CheckConfig> {
        let threshold = self.near_duplicate_threshold;
        if !(threshold > 0.0 && threshold <= 1.0) {
            bail!("--near-duplicate-threshold must be in (0, 1], got {threshold}");
        }
        let train_dir = self.train_dir.unwrap_or_else(|| source_tree_path("training-data"));
        let eval_files =
            if self.eval_files.is_empty() { vec![source_tree_path("eval/testset.jsonl")] } else { self.eval_files };

        let mut files: Vec<DataFile> = jsonl_files(&train_dir)?
            .into_iter()
            .map(|path| DataFile { path: shorten(&path), split: Split::Train })
            .collect();
        for path in eval_files {
            if !path.is_file() {
                bail!("evaluation file {} not found: pass an existing file with --eval", path.display());
            }
            files.push(DataFile { path: shorten(&path), split: Split::Eval });
        }
        let near_duplicate_threshold = (!self.skip_near_duplicates).then_some(threshold);
        Ok(CheckConfig { files, near_duplicate_threshold })
    }
}

fn source_tree_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Returns the `*.jsonl` files directly inside `dir`, sorted by name.
fn jsonl_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("failed to list the training folder {}: pass it with --train-dir", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| format!("failed to list {}", dir.display()))?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "jsonl") {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!("no *.jsonl file in the training folder {}: pass the right folder with --train-dir", dir.display());
    }
    files.sort();
    Ok(files)
}

/// Makes a path relative to the working directory when it is inside it, so messages stay short.
fn shorten(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}

pub fn run(models_dir: &Path, args: Args) -> Result<ExitCode> {
    match args.command {
        DataCommand::Check(args) => check(models_dir, args),
    }
}

fn check(models_dir: &Path, args: CheckArgs) -> Result<ExitCode> {
    let config = args.resolve()?;
    let dataset = Dataset::read(config.files)?;
    let mut violations = dataset.line_violations.clone();
    violations.extend(duplicate_ids(&dataset));
    violations.extend(duplicate_texts(&dataset));
    if let Some(threshold) = config.near_duplicate_threshold {
        violations.extend(check_near_duplicates(models_dir, &dataset, threshold)?);
    }
    dataset.sort_violations(&mut violations);

    for violation in &violations {
        println!("{violation}");
    }
    if !violations.is_empty() {
        println!();
    }
    println!("## Label counts\n");
    let train = LabelCounts::count(dataset.examples(Split::Train));
    let eval = LabelCounts::count(dataset.examples(Split::Eval));
    print!("{}", markdown_tables(&train, &eval));
    println!();
    let empty = empty_splits(&dataset);
    print_summary(&dataset, config.near_duplicate_threshold, &violations, &empty);

    Ok(if violations.is_empty() && empty.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Both sides of the split, with the name the summary gives each.
const SPLITS: [(Split, &str); 2] = [(Split::Train, "training"), (Split::Eval, "evaluation")];

/// Names the sides of the split that hold no valid example, which `train` and `eval` reject.
fn empty_splits(dataset: &Dataset) -> Vec<&'static str> {
    SPLITS
        .into_iter()
        .filter(|(split, _)| dataset.examples(*split).next().is_none())
        .map(|(_, name)| name)
        .collect()
}

fn check_near_duplicates(models_dir: &Path, dataset: &Dataset, threshold: f32) -> Result<Vec<Violation>> {
    let total = texts_to_embed(dataset);
    if total == 0 {
        return Ok(Vec::new());
    }
    let base_dir = PinnedBase::load()?.output_dir(models_dir);
    let encoder = Encoder::load(&base_dir).with_context(|| {
        format!(
            "failed to load the base encoder from {}: run `cybertriage fetch-base`, or pass --skip-near-duplicates",
            base_dir.display()
        )
    })?;

    tracing::info!(messages = total, "embedding messages for the near-duplicate check");
    let started = Instant::now();
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} messages embedded, {eta} left").expect("valid template"),
    );
    let violations = near_duplicates(dataset, &encoder, threshold, |done| bar.inc(done as u64))?;
    bar.finish_and_clear();
    tracing::info!(messages = total, duration_ms = started.elapsed().as_millis() as u64, "near-duplicate check done");
    Ok(violations)
}

fn print_summary(dataset: &Dataset, threshold: Option<f32>, violations: &[Violation], empty: &[&str]) {
    println!("## Summary\n");
    for (split, name) in SPLITS {
        println!(
            "- {name}: {}, {}, {}",
            count_of(dataset.file_count(split), "file"),
            count_of(dataset.records(split).count(), "line"),
            count_of(dataset.examples(split).count(), "valid example")
        );
    }
    match threshold {
        Some(threshold) => {
            println!("- near-duplicates: checked every training/evaluation pair at cosine > {threshold}")
        }
        None => println!("- near-duplicates: not checked (--skip-near-duplicates)"),
    }
    for name in empty {
        println!("- no valid {name} example: `train` and `eval` need at least one");
    }
    if violations.is_empty() {
        println!("- no violations");
        return;
    }
    let by_kind: Vec<String> = ProblemKind::ALL
        .iter()
        .filter_map(|&kind| {
            let count = violations.iter().filter(|v| v.problem.kind == kind).count();
            (count > 0).then(|| format!("{}: {count}", kind.description()))
        })
        .collect();
    println!("- {} ({})", count_of(violations.len(), "violation"), by_kind.join(", "));
}

/// Formats a count with its noun, adding a plural "s" when the count is not 1.
fn count_of(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(threshold: f32) -> CheckArgs {
        CheckArgs {
            train_dir: None,
            eval_files: Vec::new(),
            near_duplicate_threshold: threshold,
            skip_near_duplicates: false,
        }
    }

    #[test]
    fn threshold_outside_unit_interval_is_rejected() {
        for threshold in [0.0, -0.5, 1.5, f32::NAN] {
            let error = args(threshold).resolve().unwrap_err().to_string();
            assert!(error.contains("--near-duplicate-threshold"), "{error}");
        }
    }

    #[test]
    fn missing_eval_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jsonl"), "").unwrap();
        let args = CheckArgs {
            train_dir: Some(dir.path().to_path_buf()),
            eval_files: vec![dir.path().join("absent.jsonl")],
            ..args(0.95)
        };
        let error = args.resolve().unwrap_err().to_string();
        assert!(error.contains("absent.jsonl not found"), "{error}");
    }

    #[test]
    fn jsonl_files_sorted_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.jsonl", "a.jsonl", "notes.md"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let files = jsonl_files(dir.path()).unwrap();
        let names: Vec<_> = files.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(names, ["a.jsonl", "b.jsonl"]);
    }
}
