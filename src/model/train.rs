//! Training of the heads on frozen sentence embeddings, threshold tuning on a dev split, and the
//! model folder it writes (`heads.safetensors` and `manifest.json`).
//!
//! Reproducible: the dev split, weight initialisation, shuffling, dropout and text augmentation
//! all come from one seeded generator, so the same data, seed and base give the same metrics.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bert::Mode;
use super::encoder::{Encoder, EMBEDDING_DIM};
use super::finetune::{length_batches, HiddenCache, TrainableLayers, TwoRateOptimizer, ENCODER_FILE};
use super::heads::{HeadEnsemble, HeadScores, Heads, HeadsConfig, HEADS_FILE};
use super::lexical::{Lexical, SparseFeatures};
use super::manifest::{clears, top_score, BaseRef, LabelLists, Manifest, Thresholds, TrainingRecord, MANIFEST_FORMAT, RULES_FILE};
use crate::data::{parse_examples, Example};
use crate::triage::normalize::normalize;
use crate::triage::rules::{fold, RuleSet};
use crate::triage::taxonomy::{index_of, Urgency, CATEGORIES, INTENTS, SPEAKERS, URGENCIES};

/// Hyper-parameters of one training run, recorded in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub seed: u64,
    /// Share of the training examples held out as the dev split, in [0, 1).
    pub dev_fraction: f64,
    pub hidden_dim: usize,
    /// Hashed lexical feature buckets (TF-IDF over character and word n-grams).
    pub lexical_buckets: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Probability of zeroing a hidden unit during training.
    pub dropout: f32,
    /// Weight of each urgency level in the urgency loss, low to critical.
    pub urgency_class_weights: [f32; 4],
    /// Adds, per example, a copy with accents stripped and chat-style spelling.
    pub augment: bool,
    /// Cost of predicting one level below gold, relative to one level above, when tuning the
    /// urgency thresholds.
    pub under_triage_cost: f32,
    /// Minimum dev recall on critical examples that the urgency thresholds must keep.
    pub min_critical_recall: f32,
    /// Number of folds, each held out by one member of the head ensemble. 1 holds out a single
    /// dev split of `dev_fraction` and trains one member.
    #[serde(default = "one_fold")]
    pub folds: usize,
    /// Number of top encoder layers to fine-tune before the heads are trained (0: heads only).
    #[serde(default)]
    pub tune_layers: usize,
    /// Passes over the training split while fine-tuning the encoder layers.
    #[serde(default)]
    pub tune_epochs: usize,
    /// AdamW learning rate of the fine-tuned encoder layers.
    #[serde(default)]
    pub tune_learning_rate: f64,
    /// Examples per step while fine-tuning.
    #[serde(default)]
    pub tune_batch_size: usize,
    /// Layer counts whose mean-pooled states are concatenated into the heads' input (see
    /// [`Encoder::pooled_ids`]). Empty: the last layer alone, the e5 sentence embedding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pooled_layers: Vec<usize>,
    /// Path of the JSONL file that receives each example's held-out probabilities (id, gold
    /// labels and scores, no text), for reviewing labels and thresholds. Not in the manifest.
    #[serde(skip)]
    pub held_out_scores: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 13,
            dev_fraction: 0.15,
            hidden_dim: 128,
            lexical_buckets: 1 << 14,
            epochs: 30,
            batch_size: 128,
            learning_rate: 3e-3,
            weight_decay: 0.05,
            dropout: 0.5,
            urgency_class_weights: [1.0, 1.0, 1.3, 2.0],
            augment: true,
            under_triage_cost: 3.0,
            min_critical_recall: 0.97,
            folds: 5,
            tune_layers: 0,
            tune_epochs: 4,
            tune_learning_rate: 1e-4,
            tune_batch_size: 32,
            pooled_layers: Vec::new(),
            held_out_scores: None,
        }
    }
}

fn one_fold() -> usize {
    1
}

/// A labeled example turned into training targets.
#[derive(Clone)]
pub struct Target {
    categories: Vec<f32>,
    intent: u32,
    urgency: u32,
    speaker: u32,
}

impl Target {
    fn from_example(example: &Example) -> Result<Self> {
        let mut categories = vec![0f32; CATEGORIES.len()];
        for id in &example.categories {
            let index = index_of(&CATEGORIES, id).with_context(|| format!("{}: unknown category {id}", example.id))?;
            categories[index] = 1.0;
        }
        let pick = |labels: &[crate::triage::taxonomy::Label], id: &str, field: &str| {
            index_of(labels, id).map(|i| i as u32).with_context(|| format!("{}: unknown {field} {id}", example.id))
        };
        Ok(Target {
            categories,
            intent: pick(&INTENTS, &example.intent, "intent")?,
            urgency: pick(&URGENCIES, &example.urgency, "urgency")?,
            speaker: pick(&SPEAKERS, &example.speaker, "speaker")?,
        })
    }
}

/// Result of [`train`]: the folder written and the dev metrics.
pub struct TrainOutcome {
    pub model_dir: PathBuf,
    pub dev_metrics: serde_json::Value,
}

/// Trains heads on every `*.jsonl` file in `data_dir` and writes them into `model_dir`, which
/// must already hold `rules.json` and `resources.json` (those are edited by hand, not trained).
///
/// With `config.folds` of 2 or more, the examples are cut into that many folds and one member
/// of a head ensemble is trained per fold, with that fold held out for early stopping. Every
/// example then has a prediction from a member that never trained on it, and the thresholds
/// are tuned on all of those held-out predictions. With one fold, a single dev split of
/// `config.dev_fraction` is held out instead (required for fine-tuning).
pub fn train(encoder: &Encoder, data_dir: &Path, model_dir: &Path, config: &TrainConfig, cache_dir: &Path) -> Result<TrainOutcome> {
    let (examples, data_sha256) = read_training_data(data_dir)?;
    tracing::info!(examples = examples.len(), "training data read");
    let mut rng = StdRng::seed_from_u64(config.seed);
    let folds = held_out_folds(examples.len(), config, &mut rng)?;
    if config.tune_layers > 0 && folds.len() != 1 {
        bail!("fine-tuning encoder layers needs a single dev split: train with one fold");
    }
    if config.tune_layers > 0 && !config.pooled_layers.is_empty() {
        bail!("fine-tuning encoder layers supports pooling the last layer only: remove --pooled-layers");
    }
    encoder.check_pooled_layers(&config.pooled_layers)?;
    let dim = encoder.pooled_dim(&config.pooled_layers);

    let texts: Vec<String> = examples.iter().map(|e| normalize(&e.text)).collect();
    let targets: Vec<Target> = examples.iter().map(Target::from_example).collect::<Result<_>>()?;
    // One chat-style variant per example, drawn once. It joins the training rows whenever its
    // example is on the training side of a fold.
    let variants: Vec<Option<String>> = texts
        .iter()
        .map(|text| {
            if !config.augment {
                return None;
            }
            let variant = augment(text, &mut rng);
            (variant != *text).then_some(variant)
        })
        .collect();
    let variant_texts: Vec<String> = variants.iter().flatten().cloned().collect();

    tracing::info!(texts = texts.len(), variants = variant_texts.len(), folds = folds.len(), "embedding");
    let mut cache = EmbeddingCache::open(cache_dir, &encoder.info().checksum, &config.pooled_layers, dim)?;
    let embeddings = cache.embed(encoder, &texts)?;
    let mut variant_embeddings = cache.embed(encoder, &variant_texts)?.into_iter();
    cache.save()?;
    let variant_embeddings: Vec<Option<Vec<f32>>> = variants.iter().map(|v| v.as_ref().and_then(|_| variant_embeddings.next())).collect();

    let lexical = Lexical::fit(&texts.iter().chain(&variant_texts).cloned().collect::<Vec<_>>(), config.lexical_buckets);
    let features: Vec<SparseFeatures> = texts.iter().map(|t| lexical.features(t)).collect();
    let variant_features: Vec<Option<SparseFeatures>> = variants.iter().map(|v| v.as_ref().map(|t| lexical.features(t))).collect();

    let device = Device::Cpu;
    let heads_config =
        HeadsConfig { input_dim: dim, hidden_dim: config.hidden_dim, lexical_buckets: config.lexical_buckets, members: 1 };
    let mut members = Vec::new();
    let mut best_epochs = Vec::new();
    let mut held_out: Vec<(usize, HeadScores)> = Vec::new();
    let mut tuned = None;
    for (fold, dev_indices) in folds.iter().enumerate() {
        let mut is_dev = vec![false; examples.len()];
        dev_indices.iter().for_each(|&i| is_dev[i] = true);
        let mut rows = Rows::default();
        let mut train_texts = Vec::new();
        for i in (0..examples.len()).filter(|&i| !is_dev[i]) {
            rows.push(&embeddings[i], &features[i], &targets[i]);
            train_texts.push(texts[i].clone());
            if let (Some(embedding), Some(features), Some(text)) = (&variant_embeddings[i], &variant_features[i], &variants[i]) {
                rows.push(embedding, features, &targets[i]);
                train_texts.push(text.clone());
            }
        }
        let mut dev = Rows::default();
        dev_indices.iter().for_each(|&i| dev.push(&embeddings[i], &features[i], &targets[i]));
        tracing::info!(fold = fold + 1, folds = folds.len(), train = rows.targets.len(), dev = dev.targets.len(), "training a member");

        if config.tune_layers > 0 {
            let dev_texts: Vec<String> = dev_indices.iter().map(|&i| texts[i].clone()).collect();
            let outcome = tune_encoder(encoder, config, cache_dir, &mut rng, &train_texts, &rows.split(), &dev_texts, &dev.split())?;
            if let Some(outcome) = outcome {
                rows.embeddings = outcome.train_embeddings;
                dev.embeddings = outcome.dev_embeddings;
                tuned = Some(outcome.layers);
            }
        }

        let train_tensor = Tensor::from_vec(rows.embeddings.concat(), (rows.targets.len(), dim), &device)?;
        let heads = Heads::init(heads_config, &train_tensor, lexical.clone(), &mut rng, &device)?;
        best_epochs.push(fit(&heads, &rows.split(), &dev.split(), config, &mut rng)?);
        let dev_tensor = Tensor::from_vec(dev.embeddings.concat(), (dev.targets.len(), dim), &device)?;
        let scores = heads.predict(&dev_tensor, &dev.lexical.iter().collect::<Vec<_>>())?;
        held_out.extend(dev_indices.iter().copied().zip(scores));
        members.push(heads);
    }
    held_out.sort_by_key(|(i, _)| *i);
    if let Some(path) = &config.held_out_scores {
        write_held_out_scores(path, &examples, &held_out)?;
    }
    let held_out_ids: Vec<usize> = held_out.iter().map(|(i, _)| *i).collect();
    let held_out_targets: Vec<Target> = held_out_ids.iter().map(|&i| targets[i].clone()).collect();
    let held_out_scores: Vec<HeadScores> = held_out.into_iter().map(|(_, s)| s).collect();
    // The served urgency is the thresholded one raised by the rules, so the thresholds are tuned
    // for what the rules leave to the heads.
    let rules = RuleSet::load(&model_dir.join(RULES_FILE))?;
    let held_out_floors: Vec<Option<Urgency>> = held_out_ids.iter().map(|&i| rules.apply(&texts[i]).raise.map(|(level, _)| level)).collect();
    let thresholds = tune_thresholds(&held_out_scores, &held_out_targets, &held_out_floors, config);
    let mut dev_metrics = dev_metrics(&held_out_scores, &held_out_targets, &held_out_floors, &thresholds);
    dev_metrics["best_epoch"] = if best_epochs.len() == 1 { best_epochs[0].into() } else { best_epochs.into() };
    tracing::info!(metrics = %dev_metrics, "dev metrics");

    let ensemble = HeadEnsemble::new(members)?;
    fs::create_dir_all(model_dir).with_context(|| format!("failed to create {}", model_dir.display()))?;
    let heads_path = model_dir.join(HEADS_FILE);
    ensemble.save(&heads_path)?;
    // The heads' checksum distinguishes models trained by the same build on other data or settings.
    let heads_bytes = fs::read(&heads_path).with_context(|| format!("failed to read {}", heads_path.display()))?;
    let heads_sha256 = format!("{:x}", Sha256::digest(&heads_bytes));
    let encoder_file = model_dir.join(ENCODER_FILE);
    let tuned_encoder = match &tuned {
        Some(layers) => Some(layers.save(&encoder_file)?),
        None => {
            if encoder_file.exists() {
                fs::remove_file(&encoder_file).with_context(|| format!("failed to remove {}", encoder_file.display()))?;
            }
            None
        }
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: model_dir.file_name().and_then(|n| n.to_str()).unwrap_or("cybertriage").to_string(),
        version: format!("{}+{}", env!("CARGO_PKG_VERSION"), &heads_sha256[..8]),
        base: BaseRef { name: encoder.info().name.clone(), checksum: encoder.info().checksum.clone() },
        heads: ensemble.config(),
        labels: LabelLists::from_taxonomy(),
        thresholds,
        training: TrainingRecord {
            data_sha256,
            examples: examples.len(),
            dev_examples: held_out_targets.len(),
            config: serde_json::to_value(config)?,
            dev_metrics: dev_metrics.clone(),
        },
        encoder: tuned_encoder,
        pooled_layers: config.pooled_layers.clone(),
    };
    manifest.write(model_dir)?;
    Ok(TrainOutcome { model_dir: model_dir.to_path_buf(), dev_metrics })
}

/// Writes one JSON line per held-out example: its id, gold labels and predicted probabilities.
fn write_held_out_scores(path: &Path, examples: &[Example], held_out: &[(usize, HeadScores)]) -> Result<()> {
    let mut out = String::new();
    for (i, scores) in held_out {
        let example = &examples[*i];
        let line = serde_json::json!({
            "id": example.id,
            "categories": example.categories,
            "intent": example.intent,
            "urgency": example.urgency,
            "speaker": example.speaker,
            "scores": {
                "categories": scores.categories,
                "intent": scores.intent,
                "urgency": scores.urgency,
                "speaker": scores.speaker,
            },
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    fs::write(path, out).with_context(|| format!("failed to write {}", path.display()))
}

/// Returns the held-out example indices of each fold: `config.folds` disjoint folds covering
/// every example, or a single dev split of `config.dev_fraction` when `config.folds` is 1.
fn held_out_folds(examples: usize, config: &TrainConfig, rng: &mut StdRng) -> Result<Vec<Vec<usize>>> {
    let mut order: Vec<usize> = (0..examples).collect();
    order.shuffle(rng);
    match config.folds {
        0 => bail!("invalid number of folds 0: use 1 or more"),
        1 => {
            let dev_len = (examples as f64 * config.dev_fraction).round() as usize;
            if dev_len == 0 || dev_len == examples {
                bail!("a dev fraction of {} leaves no dev or no training example", config.dev_fraction);
            }
            Ok(vec![order[..dev_len].to_vec()])
        }
        folds if folds > examples => bail!("cannot cut {examples} examples into {folds} folds: use at most {examples}"),
        folds => Ok((0..folds).map(|k| order.iter().copied().skip(k).step_by(folds).collect()).collect()),
    }
}

/// Training or dev rows of one fold, owned.
#[derive(Default)]
struct Rows {
    embeddings: Vec<Vec<f32>>,
    lexical: Vec<SparseFeatures>,
    targets: Vec<Target>,
}

impl Rows {
    fn push(&mut self, embedding: &[f32], lexical: &SparseFeatures, target: &Target) {
        self.embeddings.push(embedding.to_vec());
        self.lexical.push(lexical.clone());
        self.targets.push(target.clone());
    }

    fn split(&self) -> Split<'_> {
        Split { embeddings: &self.embeddings, lexical: &self.lexical, targets: &self.targets }
    }
}

/// Fine-tuned encoder layers and the embeddings they give the training and dev texts.
struct TunedOutcome {
    layers: TrainableLayers,
    train_embeddings: Vec<Vec<f32>>,
    dev_embeddings: Vec<Vec<f32>>,
}

/// Fine-tunes the top `config.tune_layers` encoder layers jointly with temporary heads and
/// returns the layers of the epoch with the best dev score, with the embeddings they give. The
/// heads kept in the model are trained afterwards, from scratch, on those embeddings.
///
/// Returns `None` when no epoch beats the frozen encoder on the dev score, and the model then
/// keeps the base layers and the embeddings already computed.
#[allow(clippy::too_many_arguments)]
fn tune_encoder(
    encoder: &Encoder,
    config: &TrainConfig,
    cache_dir: &Path,
    rng: &mut StdRng,
    train_texts: &[String],
    train: &Split,
    dev_texts: &[String],
    dev: &Split,
) -> Result<Option<TunedOutcome>> {
    let device = Device::Cpu;
    let total_layers = encoder.bert().layers().len();
    if config.tune_layers > total_layers {
        bail!("cannot tune {} layers: the encoder has {total_layers}", config.tune_layers);
    }
    let first = total_layers - config.tune_layers;
    let mut cache = HiddenCache::open(cache_dir, &encoder.info().checksum, first)?;
    let train_hidden = cache.states(encoder, first, train_texts)?;
    let dev_hidden = cache.states(encoder, first, dev_texts)?;
    cache.save()?;
    let layers = TrainableLayers::from_encoder(encoder, first)?;

    let heads_config =
        HeadsConfig { input_dim: EMBEDDING_DIM, hidden_dim: config.hidden_dim, lexical_buckets: config.lexical_buckets, members: 1 };
    let base_tensor = Tensor::from_vec(train.embeddings.concat(), (train.targets.len(), EMBEDDING_DIM), &device)?;
    let lexical = Lexical::fit(train_texts, config.lexical_buckets);
    let heads = Heads::init(heads_config, &base_tensor, lexical, rng, &device)?;
    let train_split = Split { embeddings: train.embeddings, lexical: train.lexical, targets: train.targets };
    let (dev_lexical, dev_targets) = (dev.lexical, dev.targets);

    // Train the heads on the frozen encoder first, so that fine-tuning starts from useful
    // heads instead of pushing random gradients into the pretrained layers.
    let base_dev = layers.embed_all(encoder, &dev_hidden)?;
    let base_dev_split = Split { embeddings: &base_dev, lexical: dev_lexical, targets: dev_targets };
    fit(&heads, &train_split, &base_dev_split, config, rng)?;
    let head_lr = config.learning_rate / 10.0;
    let mut optimizer =
        TwoRateOptimizer::new(layers.all_vars(), config.tune_learning_rate, heads.vars(), head_lr, config.weight_decay)?;
    let urgency_weights = Tensor::new(&config.urgency_class_weights, &device)?;
    let start_score = early_stopping_score(&heads, &base_dev_split)?;
    tracing::info!(dev_score = start_score, "heads trained on the frozen encoder; fine-tuning starts");
    let lengths: Vec<usize> = train_hidden.iter().map(|t| t.dim(0)).collect::<candle_core::Result<_>>()?;

    let mut dev_scores = Vec::with_capacity(config.tune_epochs);
    let mut best_snapshot = None;
    for epoch in 1..=config.tune_epochs {
        let batches = length_batches(&lengths, config.tune_batch_size, rng);
        let mut total = 0f32;
        for (step, batch) in batches.iter().enumerate() {
            let inputs: Vec<&Tensor> = batch.iter().map(|&i| &train_hidden[i]).collect();
            let x = layers.embed(encoder, &inputs, Mode::Training)?;
            let mask = dropout_mask(batch.len(), heads.config.hidden_dim, config.dropout, rng)?;
            let loss = batch_loss_on(&heads, &x, &train_split, batch, Some(&mask), &urgency_weights)?;
            optimizer.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()?;
            if (step + 1) % 25 == 0 {
                tracing::info!(epoch, step = step + 1, steps = batches.len(), train_loss = total / (step + 1) as f32, "fine-tuning");
            }
        }
        let dev_embeddings = layers.embed_all(encoder, &dev_hidden)?;
        let dev_split = Split { embeddings: &dev_embeddings, lexical: dev_lexical, targets: dev_targets };
        let dev_score = early_stopping_score(&heads, &dev_split)?;
        tracing::info!(epoch, epochs = config.tune_epochs, train_loss = total / batches.len().max(1) as f32, dev_score, "fine-tuning");
        dev_scores.push(dev_score);
        if best_epoch(start_score, &dev_scores) == Some(epoch) {
            best_snapshot = Some(layers.snapshot()?);
        }
    }
    let Some(kept_epoch) = best_epoch(start_score, &dev_scores) else {
        tracing::info!(dev_score = start_score, "no fine-tuned epoch beat the frozen encoder on the dev split; keeping the base layers");
        return Ok(None);
    };
    layers.restore(&best_snapshot.context("no snapshot of the best epoch")?)?;
    tracing::info!(best_epoch = kept_epoch, dev_score = dev_scores[kept_epoch - 1], first_layer = first, "kept the encoder layers with the best dev score");
    let train_embeddings = layers.embed_all(encoder, &train_hidden)?;
    let dev_embeddings = layers.embed_all(encoder, &dev_hidden)?;
    Ok(Some(TunedOutcome { layers, train_embeddings, dev_embeddings }))
}

/// Returns the 1-based epoch with the highest dev score, the earliest on a tie, or `None` when
/// no epoch scores above `frozen_score`, the dev score of the heads on the frozen encoder.
fn best_epoch(frozen_score: f32, dev_scores: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (index, &score) in dev_scores.iter().enumerate() {
        if score > best.map_or(frozen_score, |(_, top)| top) {
            best = Some((index + 1, score));
        }
    }
    best.map(|(epoch, _)| epoch)
}

/// Returns an inverted-dropout mask `[rows, width]` that keeps each unit with probability
/// `1 - dropout` and scales kept units so the expected activation is unchanged.
fn dropout_mask(rows: usize, width: usize, dropout: f32, rng: &mut StdRng) -> Result<Tensor> {
    let keep = 1.0 - dropout;
    let mask: Vec<f32> = (0..rows * width).map(|_| if rng.gen::<f32>() < keep { 1.0 / keep } else { 0.0 }).collect();
    Ok(Tensor::from_vec(mask, (rows, width), &Device::Cpu)?)
}

/// Reads every `*.jsonl` file of a folder, in name order, and hashes names and bytes.
pub fn read_training_data(data_dir: &Path) -> Result<(Vec<Example>, String)> {
    let mut files: Vec<PathBuf> = fs::read_dir(data_dir)
        .with_context(|| format!("failed to read {}", data_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.jsonl file in {}", data_dir.display());
    }
    let mut hasher = Sha256::new();
    let mut examples = Vec::new();
    for file in &files {
        hasher.update(file.file_name().unwrap().as_encoded_bytes());
        let bytes = fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
        hasher.update(&bytes);
        examples.extend(parse_examples(file, &bytes)?);
    }
    if examples.is_empty() {
        bail!("the *.jsonl files in {} contain no example: add labeled examples, one per line", data_dir.display());
    }
    Ok((examples, hex::encode(hasher.finalize())))
}

/// Returns a chat-style variant of a text: accents stripped, lower case, a few common SMS
/// spellings and sometimes an emoji or filler at the end, chosen by the seeded generator.
fn augment(text: &str, rng: &mut StdRng) -> String {
    let mut out = fold(text);
    const SPELLINGS: [(&str, &str); 10] = [
        ("je suis", "jsuis"),
        ("je sais pas", "jsp"),
        ("pourquoi", "pk"),
        ("c'est", "c"),
        ("j'ai", "g"),
        ("t'inquiete", "tkt"),
        ("beaucoup", "bcp"),
        ("quelqu'un", "qqn"),
        ("aujourd'hui", "ajd"),
        ("s'il te plait", "stp"),
    ];
    for (full, short) in SPELLINGS {
        if rng.gen_bool(0.7) {
            out = out.replace(full, short);
        }
    }
    if rng.gen_bool(0.3) {
        out = out.replace(['.', ',', '!', '?'], "");
    }
    // Chat endings that do not change what a message is about. Laughing emoji are left out:
    // they can turn a threat into banter.
    const ENDINGS: [&str; 10] = [" 😔", " 😭", " 💔", " 🙏", " 😢", " 🥺", " 😞", " svp", " x", " ..."];
    if rng.gen_bool(0.35) {
        out.push_str(ENDINGS[rng.gen_range(0..ENDINGS.len())]);
    }
    out
}

/// Training examples in the form the heads take: embeddings, lexical features and targets.
struct Split<'a> {
    embeddings: &'a [Vec<f32>],
    lexical: &'a [SparseFeatures],
    targets: &'a [Target],
}

impl Split<'_> {
    /// Returns the embedding length (0 for an empty split).
    fn dim(&self) -> usize {
        self.embeddings.first().map_or(0, Vec::len)
    }
}

/// Sum of the four task losses on the rows `indices` of a split.
fn batch_loss(heads: &Heads, split: &Split, indices: &[usize], dropout_mask: Option<&Tensor>, urgency_weights: &Tensor) -> Result<Tensor> {
    let x = Tensor::from_vec(indices.iter().flat_map(|&i| split.embeddings[i].clone()).collect(), (indices.len(), split.dim()), &Device::Cpu)?;
    batch_loss_on(heads, &x, split, indices, dropout_mask, urgency_weights)
}

/// Sum of the four task losses for embeddings `x` of the rows `indices` of a split.
fn batch_loss_on(heads: &Heads, x: &Tensor, split: &Split, indices: &[usize], dropout_mask: Option<&Tensor>, urgency_weights: &Tensor) -> Result<Tensor> {
    let device = Device::Cpu;
    let lexical_batch = heads.lexical.dense(&indices.iter().map(|&i| &split.lexical[i]).collect::<Vec<_>>(), &device)?;
    let outputs = heads.forward(x, &lexical_batch, dropout_mask)?;

    let targets = split.targets;
    let categories = Tensor::from_vec(indices.iter().flat_map(|&i| targets[i].categories.clone()).collect(), (indices.len(), CATEGORIES.len()), &device)?;
    let index = |f: fn(&Target) -> u32| Tensor::from_vec(indices.iter().map(|&i| f(&targets[i])).collect::<Vec<u32>>(), indices.len(), &device);
    let loss = (binary_cross_entropy_with_logits(&outputs.categories, &categories)?
        + candle_nn::loss::cross_entropy(&outputs.intent, &index(|t| t.intent)?)?)?;
    let loss = (loss + weighted_cross_entropy(&outputs.urgency, &index(|t| t.urgency)?, urgency_weights)?)?;
    Ok((loss + (candle_nn::loss::cross_entropy(&outputs.speaker, &index(|t| t.speaker)?)? * 0.5)?)?)
}

/// Trains with AdamW and keeps the weights of the epoch with the best dev score (early stopping).
///
/// The score is the mean of the category macro-F1 at threshold 0.5 and the urgency accuracy.
/// The dev loss is not used because it rises as soon as a few dev examples get confident wrong
/// answers, long before the decisions stop improving.
fn fit(heads: &Heads, train: &Split, dev: &Split, config: &TrainConfig, rng: &mut StdRng) -> Result<usize> {
    let device = Device::Cpu;
    let vars = heads.vars();
    let mut optimizer = AdamW::new(
        vars.clone(),
        ParamsAdamW { lr: config.learning_rate, weight_decay: config.weight_decay, ..Default::default() },
    )?;
    let urgency_weights = Tensor::new(&config.urgency_class_weights, &device)?;
    let dev_indices: Vec<usize> = (0..dev.targets.len()).collect();
    let mut best: Option<(f32, usize, Vec<Tensor>)> = None;
    let mut order: Vec<usize> = (0..train.targets.len()).collect();
    for epoch in 1..=config.epochs {
        order.shuffle(rng);
        let mut total = 0f32;
        let mut batches = 0;
        for chunk in order.chunks(config.batch_size) {
            let mask = dropout_mask(chunk.len(), heads.config.hidden_dim, config.dropout, rng)?;
            let loss = batch_loss(heads, train, chunk, Some(&mask), &urgency_weights)?;
            optimizer.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()?;
            batches += 1;
        }
        let dev_loss = batch_loss(heads, dev, &dev_indices, None, &urgency_weights)?.to_scalar::<f32>()?;
        let dev_score = early_stopping_score(heads, dev)?;
        tracing::info!(epoch, epochs = config.epochs, train_loss = total / batches as f32, dev_loss, dev_score, "training");
        if best.as_ref().is_none_or(|(score, _, _)| dev_score > *score) {
            let snapshot = vars.iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<Vec<_>>>()?;
            best = Some((dev_score, epoch, snapshot));
        }
    }
    let (_, best_epoch, snapshot) = best.context("training ran no epoch")?;
    for (var, value) in vars.iter().zip(snapshot) {
        var.set(&value)?;
    }
    tracing::info!(best_epoch, "kept the weights with the best dev score");
    Ok(best_epoch)
}

fn early_stopping_score(heads: &Heads, dev: &Split) -> Result<f32> {
    let embeddings = Tensor::from_vec(dev.embeddings.concat(), (dev.targets.len(), dev.dim()), &Device::Cpu)?;
    let scores = heads.predict(&embeddings, &dev.lexical.iter().collect::<Vec<_>>())?;
    let macro_f1 = (0..CATEGORIES.len())
        .map(|c| binary_f1(scores.iter().zip(dev.targets).map(|(s, t)| (s.categories[c] >= 0.5, t.categories[c] > 0.5))))
        .sum::<f32>()
        / CATEGORIES.len() as f32;
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap_or(0);
    let urgency_accuracy =
        scores.iter().zip(dev.targets).filter(|(s, t)| argmax(&s.urgency) == t.urgency).count() as f32 / dev.targets.len().max(1) as f32;
    Ok((macro_f1 + urgency_accuracy) / 2.0)
}

/// Mean binary cross-entropy on logits, in the stable form `max(x, 0) - x t + ln(1 + e^-|x|)`.
/// candle's version takes the log of a sigmoid, which gives NaN once a logit saturates.
fn binary_cross_entropy_with_logits(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let positive_part = logits.relu()?;
    let log_term = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((positive_part - (logits * targets)?)? + log_term)?.mean_all()
}

/// Mean cross-entropy where each example is weighted by the weight of its gold class.
fn weighted_cross_entropy(logits: &Tensor, targets: &Tensor, class_weights: &Tensor) -> candle_core::Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_probs.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let weights = class_weights.index_select(targets, 0)?;
    let weighted = (picked * &weights)?.neg()?;
    weighted.sum_all()? / weights.sum_all()?.to_scalar::<f32>()? as f64
}

/// Picks per-category thresholds (best F1 on dev), then the relative category cutoff, then the
/// per-category thresholds again under that cutoff. Also picks cumulative urgency thresholds
/// (lowest triage cost on dev, keeping critical recall at or above the configured minimum).
/// `floors[i]`, when set, is the level the rules raise example `i` to: the urgency decided from
/// the thresholds is never taken below it, as in serving.
pub fn tune_thresholds(scores: &[HeadScores], targets: &[Target], floors: &[Option<Urgency>], config: &TrainConfig) -> Thresholds {
    let first_pass = tune_category_thresholds(scores, targets, 0.0);
    let category_relative_cutoff = tune_relative_cutoff(scores, targets, &first_pass);
    let categories = tune_category_thresholds(scores, targets, category_relative_cutoff);

    // Ranked by (meets the critical-recall minimum, critical recall if it does not, lower cost).
    let mut best: Option<((bool, f32, f32), [f32; 3])> = None;
    let coarse: Vec<f32> = (1..=18).map(|i| i as f32 * 0.05).collect();
    // Critical examples are rare and the heads are often confidently wrong on them, so the
    // critical threshold may go far below the others.
    let critical_grid: Vec<f32> = [0.002, 0.005, 0.01, 0.02, 0.03].into_iter().chain(coarse.iter().copied()).collect();
    for &medium in &coarse {
        for &high in &coarse {
            for &critical in &critical_grid {
                let levels = [medium, high, critical];
                let predictions: Vec<Urgency> = scores.iter().zip(floors).map(|(s, floor)| decided_urgency(&s.urgency, levels, *floor)).collect();
                let critical_gold = targets.iter().filter(|t| t.urgency == 3).count();
                let critical_found = predictions.iter().zip(targets).filter(|(p, t)| t.urgency == 3 && **p == Urgency::Critical).count();
                let recall = if critical_gold > 0 { critical_found as f32 / critical_gold as f32 } else { 1.0 };
                let meets = recall >= config.min_critical_recall;
                let cost: f32 = predictions
                    .iter()
                    .zip(targets)
                    .map(|(p, t)| {
                        let (predicted, gold) = (p.index() as f32, t.urgency as f32);
                        if predicted < gold { (gold - predicted) * config.under_triage_cost } else { predicted - gold }
                    })
                    .sum();
                let rank = (meets, if meets { 0.0 } else { recall }, -cost);
                let better = best.as_ref().is_none_or(|(b, _)| {
                    rank.0.cmp(&b.0).then(rank.1.total_cmp(&b.1)).then(rank.2.total_cmp(&b.2)).is_gt()
                });
                if better {
                    best = Some((rank, levels));
                }
            }
        }
    }
    let levels = best.map(|(_, l)| l).expect("the threshold grid is not empty");
    let urgency = [("medium", levels[0]), ("high", levels[1]), ("critical", levels[2])]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    Thresholds { categories, urgency, category_relative_cutoff, uncertain_category_margin: 0.1, uncertain_urgency_margin: 0.1 }
}

/// Picks each category's threshold with the best F1, with the relative cutoff applied. A category
/// with fewer than 5 positive examples keeps 0.5. Ties go to the lower threshold.
fn tune_category_thresholds(scores: &[HeadScores], targets: &[Target], relative_cutoff: f32) -> BTreeMap<String, f32> {
    let grid: Vec<f32> = (2..=38).map(|i| i as f32 * 0.025).collect();
    let tops: Vec<f32> = scores.iter().map(|s| top_score(&s.categories)).collect();
    let mut categories = BTreeMap::new();
    for (c, category) in CATEGORIES.iter().enumerate() {
        let positives = targets.iter().filter(|t| t.categories[c] > 0.5).count();
        let best = if positives < 5 {
            0.5
        } else {
            let f1 = |threshold: f32| {
                let pairs = scores.iter().zip(&tops).zip(targets).map(|((s, &top), t)| {
                    (clears(s.categories[c], threshold, relative_cutoff, top), t.categories[c] > 0.5)
                });
                binary_f1(pairs)
            };
            // One F1 per grid point. The grid rises, so keeping only a strictly higher F1 keeps
            // the lowest threshold among ties.
            let mut best = (f32::MIN, grid[0]);
            for &threshold in &grid {
                let score = f1(threshold);
                if score > best.0 {
                    best = (score, threshold);
                }
            }
            best.1
        };
        categories.insert(category.id.to_string(), best);
    }
    categories
}

/// Picks the relative category cutoff (0 to 0.6, a fraction of the top category score) with the
/// best category macro-F1, given the per-category thresholds. Ties go to the lower cutoff.
fn tune_relative_cutoff(scores: &[HeadScores], targets: &[Target], categories: &BTreeMap<String, f32>) -> f32 {
    let mut best = (f32::MIN, 0.0);
    for step in 0..=12 {
        let cutoff = step as f32 * 0.05;
        let thresholds = Thresholds {
            categories: categories.clone(),
            urgency: BTreeMap::new(),
            category_relative_cutoff: cutoff,
            uncertain_category_margin: 0.0,
            uncertain_urgency_margin: 0.0,
        };
        let macro_f1 = category_f1(scores, targets, &thresholds).iter().sum::<f32>() / CATEGORIES.len() as f32;
        if macro_f1 > best.0 {
            best = (macro_f1, cutoff);
        }
    }
    best.1
}

/// Returns the F1 of each category, in taxonomy order, for the categories `thresholds` detects.
fn category_f1(scores: &[HeadScores], targets: &[Target], thresholds: &Thresholds) -> Vec<f32> {
    let detected: Vec<Vec<bool>> = scores.iter().map(|s| thresholds.detect(&s.categories)).collect();
    (0..CATEGORIES.len())
        .map(|c| binary_f1(detected.iter().zip(targets).map(|(d, t)| (d[c], t.categories[c] > 0.5))))
        .collect()
}

/// Returns the thresholded urgency, raised to the rules' level when that is higher.
fn decided_urgency(probabilities: &[f32], levels: [f32; 3], floor: Option<Urgency>) -> Urgency {
    let level = urgency_with(probabilities, levels);
    floor.map_or(level, |floor| level.max(floor))
}

fn urgency_with(probabilities: &[f32], levels: [f32; 3]) -> Urgency {
    for (level, threshold) in [(Urgency::Critical, levels[2]), (Urgency::High, levels[1]), (Urgency::Medium, levels[0])] {
        if probabilities[level.index()..].iter().sum::<f32>() >= threshold {
            return level;
        }
    }
    Urgency::Low
}

fn binary_f1(pairs: impl Iterator<Item = (bool, bool)>) -> f32 {
    let (mut tp, mut fp, mut fn_) = (0f32, 0f32, 0f32);
    for (predicted, gold) in pairs {
        match (predicted, gold) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fn_ += 1.0,
            _ => {}
        }
    }
    if tp == 0.0 { 0.0 } else { 2.0 * tp / (2.0 * tp + fp + fn_) }
}

fn dev_metrics(scores: &[HeadScores], targets: &[Target], floors: &[Option<Urgency>], thresholds: &Thresholds) -> serde_json::Value {
    let mut per_category = BTreeMap::new();
    let mut f1_sum = 0f32;
    for (category, f1) in CATEGORIES.iter().zip(category_f1(scores, targets, thresholds)) {
        per_category.insert(category.id, (f1 * 1000.0).round() / 1000.0);
        f1_sum += f1;
    }
    let levels = [thresholds.urgency["medium"], thresholds.urgency["high"], thresholds.urgency["critical"]];
    let predicted: Vec<Urgency> = scores.iter().zip(floors).map(|(s, floor)| decided_urgency(&s.urgency, levels, *floor)).collect();
    let count = |f: &dyn Fn(Urgency, u32) -> bool| predicted.iter().zip(targets).filter(|(p, t)| f(**p, t.urgency)).count() as f32;
    let critical_gold = count(&|_, g| g == 3);
    let critical_predicted = count(&|p, _| p == Urgency::Critical);
    let critical_hit = count(&|p, g| g == 3 && p == Urgency::Critical);
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap_or(0);
    let accuracy = |f: &dyn Fn(&HeadScores, &Target) -> bool| scores.iter().zip(targets).filter(|(s, t)| f(s, t)).count() as f32 / targets.len().max(1) as f32;
    let round = |x: f32| (x * 1000.0).round() / 1000.0;
    serde_json::json!({
        "category_macro_f1": round(f1_sum / CATEGORIES.len() as f32),
        "category_f1": per_category,
        "urgency_accuracy": round(count(&|p, g| p.index() as u32 == g) / targets.len().max(1) as f32),
        "under_triage_rate": round(count(&|p, g| (p.index() as u32) < g) / targets.len().max(1) as f32),
        "critical_recall": round(if critical_gold > 0.0 { critical_hit / critical_gold } else { 0.0 }),
        "critical_precision": round(if critical_predicted > 0.0 { critical_hit / critical_predicted } else { 0.0 }),
        "intent_accuracy": round(accuracy(&|s, t| argmax(&s.intent) == t.intent)),
        "speaker_accuracy": round(accuracy(&|s, t| argmax(&s.speaker) == t.speaker)),
    })
}

/// On-disk cache of embeddings keyed by sha256 of the text, per base checksum, so that
/// retraining does not re-encode unchanged examples. Lives outside the repository.
///
/// The file contains records of a 32-byte key and `dim` little-endian f32 values, then the sha256
/// of all the records. A file whose checksum does not match (corrupted, truncated, or written by
/// an older version without checksum) is ignored with a warning, and its vectors are computed
/// again.
struct EmbeddingCache {
    path: PathBuf,
    layers: Vec<usize>,
    vectors: HashMap<[u8; 32], Vec<f32>>,
    dirty: bool,
}

impl EmbeddingCache {
    /// Opens the cache of vectors of length `dim` pooled from `layers` of the base `base_checksum`.
    fn open(dir: &Path, base_checksum: &str, layers: &[usize], dim: usize) -> Result<Self> {
        let base = &base_checksum[..16.min(base_checksum.len())];
        let pooled: String = layers.iter().map(|l| format!("-l{l}")).collect();
        let path = dir.join(format!("embeddings-{base}{pooled}.bin"));
        let vectors = match fs::read(&path) {
            Ok(bytes) => match parse_cache(&bytes, dim) {
                Some(vectors) => vectors,
                None => {
                    tracing::warn!(path = %path.display(), "embedding cache is corrupted or from an older version; computing every embedding again");
                    HashMap::new()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(error) => return Err(error).with_context(|| format!("failed to read {}", path.display())),
        };
        Ok(EmbeddingCache { path, layers: layers.to_vec(), vectors, dirty: false })
    }

    fn embed(&mut self, encoder: &Encoder, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let keys: Vec<[u8; 32]> = texts.iter().map(|t| Sha256::digest(t.as_bytes()).into()).collect();
        let mut missing: Vec<usize> = (0..texts.len()).filter(|&i| !self.vectors.contains_key(&keys[i])).collect();
        missing.sort_by_key(|&i| texts[i].len());
        missing.dedup_by_key(|i| keys[*i]);
        for (done, chunk) in missing.chunks(32).enumerate() {
            let ids = chunk.iter().map(|&i| encoder.tokenize(&texts[i])).collect::<Result<Vec<_>>>()?;
            for (&i, vector) in chunk.iter().zip(encoder.pooled_ids(&ids, &self.layers)?) {
                self.vectors.insert(keys[i], vector);
            }
            self.dirty = true;
            if done % 10 == 0 {
                tracing::info!(done = ((done + 1) * 32).min(missing.len()), total = missing.len(), "embedding examples");
            }
        }
        Ok(keys.iter().map(|k| self.vectors[k].clone()).collect())
    }

    /// Writes the cache to a temporary file, then renames it over the old one, so that an
    /// interrupted save leaves the previous cache whole.
    fn save(&self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent)?;
        }
        let temporary = self.path.with_extension("bin.partial");
        fs::write(&temporary, serialize_cache(&self.vectors)).with_context(|| format!("failed to write {}", temporary.display()))?;
        fs::rename(&temporary, &self.path).with_context(|| format!("failed to replace {}", self.path.display()))?;
        Ok(())
    }
}

/// Encodes cache records in key order, followed by the sha256 of the records.
fn serialize_cache(vectors: &HashMap<[u8; 32], Vec<f32>>) -> Vec<u8> {
    let mut keys: Vec<&[u8; 32]> = vectors.keys().collect();
    keys.sort();
    let mut bytes = Vec::new();
    for key in keys {
        bytes.extend_from_slice(key);
        for value in &vectors[key] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    let checksum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&checksum);
    bytes
}

/// Decodes a cache file written by [`serialize_cache`] for vectors of length `dim`. Returns
/// `None` when the length or the checksum does not match.
fn parse_cache(bytes: &[u8], dim: usize) -> Option<HashMap<[u8; 32], Vec<f32>>> {
    let record = 32 + dim * 4;
    let records_len = bytes.len().checked_sub(32)?;
    if records_len % record != 0 {
        return None;
    }
    let (records, checksum) = bytes.split_at(records_len);
    if Sha256::digest(records).as_slice() != checksum {
        return None;
    }
    let mut vectors = HashMap::with_capacity(records_len / record);
    for chunk in records.chunks_exact(record) {
        let key: [u8; 32] = chunk[..32].try_into().ok()?;
        let vector = chunk[32..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        vectors.insert(key, vector);
    }
    Some(vectors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn tuned_epoch_must_beat_frozen_encoder() {
        // Fine-tuning that lost on every epoch, as on this project's data, keeps the base layers.
        assert_eq!(best_epoch(0.656, &[0.648, 0.653]), None);
        assert_eq!(best_epoch(0.656, &[0.656]), None);
        assert_eq!(best_epoch(0.771, &[0.774, 0.767]), Some(1));
        assert_eq!(best_epoch(0.5, &[0.6, 0.7, 0.7]), Some(2));
        assert_eq!(best_epoch(0.5, &[]), None);
    }

    #[test]
    fn embedding_cache_round_trips() {
        let mut vectors = HashMap::new();
        vectors.insert([1u8; 32], vec![0.5f32, -1.25, 3.0]);
        vectors.insert([0u8; 32], vec![f32::MIN_POSITIVE, 0.0, 1e9]);
        let bytes = serialize_cache(&vectors);
        assert_eq!(bytes.len(), 2 * (32 + 3 * 4) + 32);
        assert_eq!(parse_cache(&bytes, 3), Some(vectors.clone()));
        assert_eq!(serialize_cache(&vectors), bytes, "records are written in key order");
    }

    #[test]
    fn embedding_cache_rejects_damaged_file() {
        let mut vectors = HashMap::new();
        vectors.insert([7u8; 32], vec![1.0f32, 2.0]);
        vectors.insert([9u8; 32], vec![3.0f32, 4.0]);
        let bytes = serialize_cache(&vectors);

        let mut flipped = bytes.clone();
        flipped[40] ^= 0x55;
        assert_eq!(parse_cache(&flipped, 2), None, "a changed value");
        assert_eq!(parse_cache(&bytes[..bytes.len() - 1], 2), None, "a truncated file");
        assert_eq!(parse_cache(&bytes, 3), None, "another vector length");
        assert_eq!(parse_cache(&bytes[..bytes.len() - 32], 2), None, "records without checksum");
        assert_eq!(parse_cache(&[], 2), None, "an empty file");
    }

    #[test]
    fn binary_f1_hand_computed() {
        // tp=1, fp=1, fn=1 -> 2/(2+1+1) = 0.5
        let pairs = [(true, true), (true, false), (false, true), (false, false)];
        assert_eq!(binary_f1(pairs.into_iter()), 0.5);
        assert_eq!(binary_f1([(false, false)].into_iter()), 0.0);
    }

    #[test]
    fn urgency_thresholds_are_cumulative() {
        assert_eq!(urgency_with(&[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.35]), Urgency::Critical);
        assert_eq!(urgency_with(&[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.45]), Urgency::High);
        assert_eq!(urgency_with(&[0.7, 0.1, 0.1, 0.1], [0.5, 0.5, 0.45]), Urgency::Low);
    }

    fn target(urgency: u32) -> Target {
        Target { categories: vec![0.0; CATEGORIES.len()], intent: 0, urgency, speaker: 0 }
    }

    fn scores(urgency: [f32; 4]) -> HeadScores {
        HeadScores { categories: vec![0.0; CATEGORIES.len()], intent: vec![0.0; INTENTS.len()], urgency: urgency.to_vec(), speaker: vec![0.0; SPEAKERS.len()] }
    }

    fn with_categories(pairs: &[(&str, f32)]) -> Vec<f32> {
        let mut categories = vec![0.0; CATEGORIES.len()];
        for (id, score) in pairs {
            categories[crate::triage::taxonomy::index_of(&CATEGORIES, id).unwrap()] = *score;
        }
        categories
    }

    #[test]
    fn category_threshold_ties_take_lowest() {
        // Five scam examples at 0.9 and five others at 0: every threshold up to 0.9 gives F1 1.
        let mut head_scores = Vec::new();
        let mut targets = Vec::new();
        for positive in [true, false].repeat(5) {
            let mut s = scores([0.25; 4]);
            let mut t = target(0);
            if positive {
                s.categories = with_categories(&[("scam", 0.9)]);
                t.categories = with_categories(&[("scam", 1.0)]);
            }
            head_scores.push(s);
            targets.push(t);
        }
        let thresholds = tune_category_thresholds(&head_scores, &targets, 0.0);
        assert_eq!(thresholds["scam"], 0.05);
        assert_eq!(thresholds["privacy"], 0.5, "a category without 5 positives keeps 0.5");
    }

    #[test]
    fn relative_cutoff_tuned_on_side_categories() {
        let thresholds: BTreeMap<String, f32> = CATEGORIES.iter().map(|c| (c.id.to_string(), 0.2)).collect();
        let mut head_scores = Vec::new();
        let mut targets = Vec::new();
        // Each example is one concern scored 0.9, with a side category at 0.3 that is wrong.
        for (main, side) in [("scam", "privacy"), ("harassment", "hate_speech"), ("sextortion", "intimate_images"), ("threats", "harassment")] {
            let mut s = scores([0.25; 4]);
            s.categories = with_categories(&[(main, 0.9), (side, 0.3)]);
            let mut t = target(0);
            t.categories = with_categories(&[(main, 1.0)]);
            head_scores.push(s);
            targets.push(t);
        }
        let cutoff = tune_relative_cutoff(&head_scores, &targets, &thresholds);
        assert!(cutoff > 0.3 / 0.9, "a wrong side category must fall under the cutoff, got {cutoff}");

        // The same scores with the side categories gold: no cutoff is best.
        for (t, s) in targets.iter_mut().zip(&head_scores) {
            t.categories = s.categories.iter().map(|&x| if x > 0.0 { 1.0 } else { 0.0 }).collect();
        }
        assert_eq!(tune_relative_cutoff(&head_scores, &targets, &thresholds), 0.0);
    }

    #[test]
    fn rule_floors_count_when_tuning_urgency() {
        // Two critical examples the heads barely see, which the rules raise, and two low ones
        // with a slightly higher critical probability.
        let scores = [scores([0.9, 0.05, 0.04, 0.01]), scores([0.9, 0.05, 0.04, 0.01]), scores([0.9, 0.04, 0.04, 0.02]), scores([0.9, 0.04, 0.04, 0.02])];
        let targets = [target(3), target(3), target(0), target(0)];
        let config = TrainConfig::default();
        let critical_of_low = |thresholds: &Thresholds| {
            let levels = [thresholds.urgency["medium"], thresholds.urgency["high"], thresholds.urgency["critical"]];
            urgency_with(&scores[2].urgency, levels) == Urgency::Critical
        };

        // Without the rules, full critical recall needs a threshold that also takes the low ones.
        let without = tune_thresholds(&scores, &targets, &[None; 4], &config);
        assert!(critical_of_low(&without));
        // With the rules raising the critical ones, the threshold no longer has to.
        let floors = [Some(Urgency::Critical), Some(Urgency::Critical), None, None];
        let with = tune_thresholds(&scores, &targets, &floors, &config);
        assert!(!critical_of_low(&with));
        assert_eq!(decided_urgency(&scores[0].urgency, [0.5, 0.5, 0.5], floors[0]), Urgency::Critical);
        // A floor never lowers the thresholded level.
        assert_eq!(decided_urgency(&[0.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5], Some(Urgency::Medium)), Urgency::Critical);
    }

    #[test]
    fn folds_partition_the_examples() {
        let config = TrainConfig { folds: 5, ..TrainConfig::default() };
        let folds = held_out_folds(23, &config, &mut StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(folds.len(), 5);
        let mut all: Vec<usize> = folds.concat();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        assert!(folds.iter().all(|fold| fold.len() == 4 || fold.len() == 5));
    }

    #[test]
    fn empty_training_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.jsonl"), "").unwrap();
        let error = read_training_data(dir.path()).unwrap_err().to_string();
        assert!(error.contains("contain no example"), "{error}");
    }

    #[test]
    fn one_fold_is_a_dev_split() {
        let config = TrainConfig { folds: 1, dev_fraction: 0.2, ..TrainConfig::default() };
        let folds = held_out_folds(50, &config, &mut StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(folds.len(), 1);
        assert_eq!(folds[0].len(), 10);
        let zero = TrainConfig { folds: 0, ..TrainConfig::default() };
        assert!(held_out_folds(50, &zero, &mut StdRng::seed_from_u64(1)).is_err());
        let too_many = TrainConfig { folds: 60, ..TrainConfig::default() };
        assert!(held_out_folds(50, &too_many, &mut StdRng::seed_from_u64(1)).is_err());
    }

    #[test]
    fn augmentation_is_seeded() {
        let text = "Je suis harcelée, je sais pas pourquoi. C'est trop.";
        let a = augment(text, &mut StdRng::seed_from_u64(4));
        let b = augment(text, &mut StdRng::seed_from_u64(4));
        assert_eq!(a, b);
        assert!(!a.contains('é'), "{a}");
    }

    #[test]
    fn binary_cross_entropy_is_finite_on_saturated_logits() {
        let device = Device::Cpu;
        let logits = Tensor::new(&[[200f32, -200.0, 0.0]], &device).unwrap();
        let targets = Tensor::new(&[[1f32, 1.0, 0.0]], &device).unwrap();
        let loss: f32 = binary_cross_entropy_with_logits(&logits, &targets).unwrap().to_scalar().unwrap();
        // Per element: 0, 200, ln 2.
        assert!((loss - (200.0 + std::f32::consts::LN_2) / 3.0).abs() < 1e-3, "{loss}");
    }

    #[test]
    fn weighted_cross_entropy_matches_hand_value() {
        let device = Device::Cpu;
        // Uniform logits over 2 classes: -ln(0.5) per example whatever the weights.
        let logits = Tensor::zeros((2, 2), DType::F32, &device).unwrap();
        let targets = Tensor::new(&[0u32, 1], &device).unwrap();
        let weights = Tensor::new(&[1f32, 3.0], &device).unwrap();
        let loss: f32 = weighted_cross_entropy(&logits, &targets, &weights).unwrap().to_scalar().unwrap();
        assert!((loss - std::f32::consts::LN_2).abs() < 1e-6, "{loss}");
    }
}
