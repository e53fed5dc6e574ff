use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::model::base::PinnedBase;
use crate::model::encoder::Encoder;
use crate::model::train::{train, TrainConfig};
use crate::triage::classifier::default_model_dir;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of labeled `*.jsonl` training files. Defaults to training-data/ in this source tree.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Model folder to write heads.safetensors and manifest.json into; it must already hold
    /// rules.json and resources.json. Defaults to models/cybertriage-fr.
    #[arg(long, env = "CYBERTRIAGE_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,

    /// Seed of the dev split, initialisation, shuffling, dropout and augmentation.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_SEED", default_value_t = TrainConfig::default().seed)]
    pub seed: u64,

    /// Number of passes over the training split.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_EPOCHS", default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,

    /// Width of the hidden layer of the embedding MLP.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_HIDDEN", default_value_t = TrainConfig::default().hidden_dim)]
    pub hidden_dim: usize,

    /// Probability of zeroing a hidden unit during training.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_DROPOUT", default_value_t = TrainConfig::default().dropout)]
    pub dropout: f32,

    /// AdamW learning rate.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_LR", default_value_t = TrainConfig::default().learning_rate)]
    pub learning_rate: f64,

    /// AdamW decoupled weight decay.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_WEIGHT_DECAY", default_value_t = TrainConfig::default().weight_decay)]
    pub weight_decay: f64,

    /// Number of folds: one ensemble member is trained per fold, with that fold held out, and
    /// the thresholds are tuned on every held-out prediction. 1 holds out a single dev split of
    /// 15 % instead, as fine-tuning requires.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_FOLDS", default_value_t = TrainConfig::default().folds)]
    pub folds: usize,

    /// Weight of each urgency level in the urgency loss, low, medium, high and critical, comma
    /// separated.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_URGENCY_WEIGHTS", value_delimiter = ',', value_name = "LOW,MEDIUM,HIGH,CRITICAL", default_values_t = TrainConfig::default().urgency_class_weights)]
    pub urgency_weights: Vec<f32>,

    /// Also write each training example's held-out probabilities (id, gold labels and scores,
    /// no text) to this JSONL file, to review labels and thresholds.
    #[arg(long)]
    pub held_out_scores: Option<PathBuf>,

    /// Number of top encoder layers to fine-tune before training the heads (0: heads only).
    #[arg(long, env = "CYBERTRIAGE_TRAIN_TUNE_LAYERS", default_value_t = TrainConfig::default().tune_layers)]
    pub tune_layers: usize,

    /// Passes over the training split while fine-tuning encoder layers.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_TUNE_EPOCHS", default_value_t = TrainConfig::default().tune_epochs)]
    pub tune_epochs: usize,

    /// AdamW learning rate of the fine-tuned encoder layers.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_TUNE_LR", default_value_t = TrainConfig::default().tune_learning_rate)]
    pub tune_learning_rate: f64,

    /// Encoder layers whose mean-pooled states are concatenated into the heads' input, as
    /// layer counts from 1 to 12, increasing and comma separated (for example 8,12). Empty: the
    /// last layer alone, the e5 sentence embedding.
    #[arg(long, env = "CYBERTRIAGE_TRAIN_POOLED_LAYERS", value_delimiter = ',', value_name = "LAYERS")]
    pub pooled_layers: Vec<usize>,

    /// Folder for the embedding cache (outside git). Defaults to target/cybertriage-cache.
    #[arg(long, env = "CYBERTRIAGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

pub fn run(models_dir: &Path, args: Args) -> Result<ExitCode> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data_dir = args.data_dir.unwrap_or_else(|| root.join("training-data"));
    let model_dir = args.model_dir.unwrap_or_else(|| default_model_dir(models_dir));
    let cache_dir = args.cache_dir.unwrap_or_else(|| root.join("target/cybertriage-cache"));
    let config = TrainConfig {
        seed: args.seed,
        epochs: args.epochs,
        hidden_dim: args.hidden_dim,
        dropout: args.dropout,
        learning_rate: args.learning_rate,
        weight_decay: args.weight_decay,
        folds: args.folds,
        urgency_class_weights: args.urgency_weights.as_slice().try_into().context("invalid --urgency-weights: give four numbers, for example 1,1,1.3,2")?,
        held_out_scores: args.held_out_scores,
        tune_layers: args.tune_layers,
        tune_epochs: args.tune_epochs,
        tune_learning_rate: args.tune_learning_rate,
        pooled_layers: args.pooled_layers,
        ..TrainConfig::default()
    };

    let encoder = Encoder::load(&PinnedBase::load()?.output_dir(models_dir))?;
    let outcome = train(&encoder, &data_dir, &model_dir, &config, &cache_dir)?;
    println!("model written to {}", outcome.model_dir.display());
    println!("dev metrics: {}", serde_json::to_string_pretty(&outcome.dev_metrics)?);
    Ok(ExitCode::SUCCESS)
}
