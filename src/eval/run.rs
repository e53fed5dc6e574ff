//! One evaluation run: classify every example (and its perturbed copies) in batches, pair the
//! predictions with the gold labels, and build the report and the error list.
//!
//! Progress goes to a bar on stderr, drawn only on a terminal. Nothing here logs a message
//! text: a batch the classifier refuses is retried one message at a time to name the example
//! id that fails.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::baseline::{compare, Comparison};
use super::bootstrap::intervals;
use super::calibration::BINS;
use super::errors::{error_records, ErrorRecord, Evaluated};
use super::example::Example;
use super::figures::{to_value, Figures, HEADLINES};
use super::outcome::Outcome;
use super::perturb::{perturb, PerturbedExample, Perturbation};
use super::report_json::{
    utc_now, DataIdentity, Fall, ModelIdentity, Report, Robustness, Settings, Throughput, VariantFigures, FORMAT,
};
use super::slices::slices;
use super::{report_html, ERRORS_FILE, REPORT_HTML_FILE, REPORT_JSON_FILE};
use crate::triage::classification::Classification;
use crate::triage::classifier::{Classify, MessageInput};

/// How to run the evaluation.
#[derive(Debug, Clone)]
pub struct Options {
    /// Messages per classifier call.
    pub batch_size: usize,
    /// Seed of the perturbations and of the bootstrap.
    pub seed: u64,
    /// Bootstrap resamples for the confidence intervals; 0 turns them off.
    pub bootstrap: usize,
    /// Also evaluate perturbed copies of every message.
    pub perturb: bool,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// The report and the error list of one run.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub report: Report,
    pub errors: Vec<ErrorRecord>,
}

impl Evaluation {
    /// Compares this run with a baseline `report.json` and records the comparison in the report.
    pub fn compare_with(&mut self, path: &str, baseline: &serde_json::Value, tolerance: f64) -> &Comparison {
        self.report.baseline = None;
        let current = serde_json::to_value(&self.report).expect("the report serialises");
        self.report.baseline.insert(compare(path, baseline, &current, tolerance))
    }
}

/// Evaluates `classifier` on `examples`.
pub fn evaluate(
    classifier: &dyn Classify,
    examples: &[Example],
    data: DataIdentity,
    model: ModelIdentity,
    options: &Options,
) -> Result<Evaluation> {
    let copies = if options.perturb { perturb(examples, options.seed) } else { Vec::new() };
    let all: Vec<&Example> = examples.iter().chain(copies.iter().map(|c| &c.example)).collect();

    let started = Instant::now();
    let classifications = classify_all(classifier, &all, options)?;
    let seconds = started.elapsed().as_secs_f64();

    let outcomes = all
        .iter()
        .zip(&classifications)
        .map(|(example, classification)| Outcome::new(example, classification))
        .collect::<Result<Vec<_>>>()?;
    let (clean, perturbed) = outcomes.split_at(examples.len());

    let figures = Figures::compute(&clean.iter().collect::<Vec<_>>());
    let report = Report {
        format: FORMAT.into(),
        generated_at: utc_now(),
        data,
        model,
        settings: Settings {
            seed: options.seed,
            bootstrap_resamples: options.bootstrap,
            batch_size: options.batch_size,
            perturb: options.perturb,
            calibration_bins: BINS,
        },
        figures,
        confidence_intervals: intervals(clean, options.bootstrap, options.seed),
        slices: slices(examples).iter().map(|s| s.figures(clean)).collect(),
        perturbation: options.perturb.then(|| robustness(&copies, clean, perturbed, options.seed)),
        baseline: None,
        throughput: Throughput {
            messages: all.len(),
            seconds,
            messages_per_second: (seconds > 0.0).then(|| all.len() as f64 / seconds),
            batch_size: options.batch_size,
        },
    };

    let variant = |i: usize| if i < examples.len() { "original" } else { copies[i - examples.len()].kind.id() };
    let evaluated: Vec<Evaluated> = (0..all.len())
        .map(|i| Evaluated {
            example: all[i],
            variant: variant(i),
            classification: &classifications[i],
            outcome: &outcomes[i],
        })
        .collect();
    Ok(Evaluation { report, errors: error_records(&evaluated) })
}

fn classify_all(classifier: &dyn Classify, examples: &[&Example], options: &Options) -> Result<Vec<Classification>> {
    let bar = if options.progress {
        ProgressBar::with_draw_target(Some(examples.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} messages, {per_sec}, {eta} left")
            .expect("valid template"),
    );
    let mut out = Vec::with_capacity(examples.len());
    for batch in examples.chunks(options.batch_size.max(1)) {
        out.extend(classify_batch(classifier, batch)?);
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn classify_batch(classifier: &dyn Classify, batch: &[&Example]) -> Result<Vec<Classification>> {
    let inputs: Vec<MessageInput> = batch.iter().map(|e| MessageInput::new(e.text.clone())).collect();
    let error = match classifier.classify(&inputs) {
        Ok(results) if results.len() == inputs.len() => return Ok(results),
        Ok(results) => anyhow!("the classifier returned {} results for {} messages", results.len(), inputs.len()),
        Err(error) => error.into(),
    };
    // Find the example that fails, to name it.
    for (example, input) in batch.iter().zip(&inputs) {
        classifier
            .classify(std::slice::from_ref(input))
            .with_context(|| format!("cannot classify example `{}`", example.id))?;
    }
    Err(error.context("a batch failed, but each of its messages passes alone"))
}

fn robustness(copies: &[PerturbedExample], clean: &[Outcome], perturbed: &[Outcome], seed: u64) -> Robustness {
    let variant = |kind: &str, label: &str, members: Vec<usize>| {
        let sources: Vec<&Outcome> = members.iter().map(|&i| &clean[copies[i].source]).collect();
        let altered: Vec<&Outcome> = members.iter().map(|&i| &perturbed[i]).collect();
        let figures = Figures::compute(&altered);
        let (before, after) = (to_value(&Figures::compute(&sources)), to_value(&figures));
        let falls = HEADLINES
            .iter()
            .map(|h| {
                let (clean, perturbed) = (h.value(&before), h.value(&after));
                let change = clean.zip(perturbed).map(|(c, p)| p - c);
                let worse = clean.zip(perturbed).is_some_and(|(c, p)| h.is_worse(c, p));
                Fall { figure: h.id.into(), clean, perturbed, change, worse }
            })
            .collect();
        VariantFigures { kind: kind.into(), label: label.into(), examples: members.len(), falls, figures }
    };
    let mut variants: Vec<VariantFigures> = Perturbation::ALL
        .iter()
        .map(|kind| {
            let members = (0..copies.len()).filter(|&i| copies[i].kind == *kind).collect();
            variant(kind.id(), kind.label(), members)
        })
        .collect();
    variants.push(variant("all", "Toutes les perturbations", (0..copies.len()).collect()));
    Robustness { seed, variants }
}

/// Writes `report.json`, `report.html` and `errors.jsonl` into `out`, creating it if needed.
pub fn write_outputs(out: &Path, evaluation: &Evaluation) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    };
    write(REPORT_JSON_FILE, &serde_json::to_vec_pretty(&evaluation.report)?)?;
    write(REPORT_HTML_FILE, report_html::render(&evaluation.report, &evaluation.errors)?.as_bytes())?;

    let path = out.join(ERRORS_FILE);
    let file = fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut writer = BufWriter::new(file);
    for record in &evaluation.errors {
        serde_json::to_writer(&mut writer, record)?;
        writer.write_all(b"\n")?;
    }
    writer.flush().with_context(|| format!("cannot write {}", path.display()))
}
