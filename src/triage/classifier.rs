//! The classifier seen from the outside: one input type, one error type and a small trait, so
//! that the HTTP layer and the evaluation can run the real model or a test double.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::classification::{Classification, ModelInfo};
use super::decision::{DecisionLayer, Resources};
use super::normalize::normalize;
use super::rules::{RuleOutcome, RuleSet};
use super::taxonomy::Urgency;
use crate::model::base::{BaseInfo, PinnedBase};
use crate::model::encoder::Encoder;
use crate::model::heads::{HeadEnsemble, HeadScores, HEADS_FILE};
use crate::model::lexical::SparseFeatures;
use crate::model::manifest::{Manifest, RESOURCES_FILE, RULES_FILE};
use crate::model::vocab::count_dropped_script_letters;

/// One message to classify, with optional earlier messages from the same person.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    pub text: String,
    /// Earlier messages from the same person, oldest first.
    #[serde(default)]
    pub context: Vec<String>,
}

impl MessageInput {
    pub fn new(text: impl Into<String>) -> Self {
        MessageInput { text: text.into(), context: Vec::new() }
    }
}

/// Encoder tokens of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCost {
    /// Tokens of the normalised text alone, special tokens included, before any split into
    /// windows. The service rejects a text above its token limit on this count, before any
    /// encoder work.
    pub text: usize,
    /// Tokens that the input costs in a batch, context and windows included.
    pub total: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The input cannot be classified, for example a text that is empty once normalised.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The model failed. The message is for logs, never for clients.
    #[error("classification failed: {0:#}")]
    Internal(#[from] anyhow::Error),
}

/// A batch classifier. Implementations are synchronous and CPU-bound: callers run them on a
/// dedicated thread, never on an async executor thread.
pub trait Classify: Send + Sync + 'static {
    /// Classifies the inputs in one batch and returns one result per input, in order.
    fn classify(&self, inputs: &[MessageInput]) -> Result<Vec<Classification>, ClassifyError>;

    /// Counts the encoder tokens of the input, for batching under a token budget and for the
    /// service's token limit. The engine fails a request whose count fails with this error,
    /// before any encoder work.
    fn token_cost(&self, input: &MessageInput) -> Result<TokenCost, ClassifyError>;

    /// Returns the urgency level that the rule layer alone raises the input to, or `None` when
    /// no rule raises it or the input is invalid. The queue runs inputs raised to `critical`
    /// before the others. The default returns `None`, for classifiers without rules.
    fn rule_urgency(&self, _input: &MessageInput) -> Option<Urgency> {
        None
    }

    fn model_info(&self) -> ModelInfo;
}

/// Folder name of the committed default model under `models/`.
pub const DEFAULT_MODEL_NAME: &str = "cybertriage-fr";

/// Tokens shared by consecutive windows of a message longer than the encoder's 512 tokens.
pub const WINDOW_OVERLAP_TOKENS: usize = 128;

pub fn default_model_dir(models_dir: &Path) -> PathBuf {
    models_dir.join(DEFAULT_MODEL_NAME)
}

/// The real classifier: normalisation, encoder, heads, rules and decision layer.
///
/// A message longer than 512 tokens is read as overlapping windows. With a non-empty `context`,
/// the earlier messages and the message are also read together as one extra sequence (its last
/// 512 tokens, which end with the message; the model never reads older context, only the rules
/// do). Category scores are the maximum over all sequences, and urgency is that of the most
/// urgent sequence. A category detected on the message alone stays detected with context, so
/// context can only add concerns and raise urgency. Intent and speaker come from the message
/// alone. Rules read the message and, when there is context, the context and message joined.
pub struct Classifier {
    encoder: Encoder,
    heads: HeadEnsemble,
    rules: RuleSet,
    decision: DecisionLayer,
    manifest: Manifest,
    /// Maximum sequences per encoder forward pass.
    batch_size: usize,
}

/// One encoder sequence and the input it belongs to.
struct Sequence {
    input: usize,
    /// True for the windows of the message itself; false for the context-and-message sequence.
    message: bool,
    ids: Vec<u32>,
    /// Text the lexical features are computed on: the message, or the context and message.
    text: String,
}

impl Classifier {
    /// Loads the base encoder from `models_dir` and the classifier folder `model_dir`, refusing a
    /// base whose checksum differs from the one the heads were trained on.
    pub fn load(models_dir: &Path, model_dir: &Path) -> anyhow::Result<Self> {
        let manifest = Manifest::read(model_dir)?;
        let base_dir = PinnedBase::load()?.output_dir(models_dir);
        let base_info = BaseInfo::read(&base_dir)?;
        manifest.check_base(&base_info)?;
        let encoder = match &manifest.encoder {
            Some(tuned) => Encoder::load_tuned(&base_dir, model_dir, tuned)?,
            None => Encoder::load(&base_dir)?,
        };
        Self::from_parts(encoder, model_dir, manifest)
    }

    /// Builds a classifier on an already loaded encoder (tests and training share one encoder).
    pub fn from_parts(encoder: Encoder, model_dir: &Path, manifest: Manifest) -> anyhow::Result<Self> {
        manifest.check_base(encoder.info())?;
        if encoder.tuned() != manifest.encoder.as_ref() {
            anyhow::bail!(
                "the encoder was loaded with tuned layers {:?}, but the model {} needs {:?}",
                encoder.tuned().map(|t| &t.sha256),
                manifest.name,
                manifest.encoder.as_ref().map(|t| &t.sha256)
            );
        }
        check_pooled_layers(&encoder, &manifest)?;
        let heads = HeadEnsemble::load(&model_dir.join(HEADS_FILE), manifest.heads, &Device::Cpu)?;
        let rules = RuleSet::load(&model_dir.join(RULES_FILE))?;
        let resources = Resources::load(&model_dir.join(RESOURCES_FILE))?;
        let model = ModelInfo {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            base: encoder.info().identity(),
            rules: rules.version.clone(),
        };
        let decision = DecisionLayer::new(manifest.thresholds.clone(), resources, model);
        Ok(Classifier { encoder, heads, rules, decision, manifest, batch_size: 32 })
    }

    /// Sets how many sequences go through the encoder in one forward pass (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    fn sequences(&self, index: usize, text: &str, context: &[String]) -> anyhow::Result<Vec<Sequence>> {
        let windows = self.encoder.windows(text, WINDOW_OVERLAP_TOKENS)?;
        let mut sequences = Vec::with_capacity(windows.len() + 1);
        if windows.len() == 1 {
            sequences.extend(windows.into_iter().map(|ids| Sequence { input: index, message: true, ids, text: text.to_string() }));
        } else {
            // Each window is read on its own, lexical features included.
            for ids in windows {
                let window_text = self.encoder.decode(&ids)?;
                sequences.push(Sequence { input: index, message: true, ids, text: window_text });
            }
        }
        if !context.is_empty() {
            let joined = joined_with_context(text, context);
            let (ids, cut) = self.encoder.tail(&joined)?;
            // The lexical features read the same text as the encoder: what was cut counts for
            // neither.
            let text = if cut { self.encoder.decode(&ids)? } else { joined };
            sequences.push(Sequence { input: index, message: false, ids, text });
        }
        Ok(sequences)
    }

    fn embed_sequences(&self, sequences: &[Sequence]) -> anyhow::Result<Vec<HeadScores>> {
        // Sorting by length cuts padding; results are put back in order afterwards.
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| sequences[i].ids.len());
        let mut scores: Vec<Option<HeadScores>> = vec![None; sequences.len()];
        for chunk in order.chunks(self.batch_size) {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|&i| sequences[i].ids.clone()).collect();
            let vectors = self.encoder.pooled_ids(&ids, &self.manifest.pooled_layers)?;
            let rows = vectors.len();
            let flat: Vec<f32> = vectors.into_iter().flatten().collect();
            let embeddings = Tensor::from_vec(flat, (rows, self.manifest.heads.input_dim), &Device::Cpu)?;
            let lexical: Vec<SparseFeatures> = chunk.iter().map(|&i| self.heads.lexical().features(&sequences[i].text)).collect();
            let lexical_rows: Vec<&SparseFeatures> = lexical.iter().collect();
            for (&i, head_scores) in chunk.iter().zip(self.heads.predict(&embeddings, &lexical_rows)?) {
                scores[i] = Some(head_scores);
            }
        }
        Ok(scores.into_iter().map(|s| s.expect("every sequence was scored")).collect())
    }

    /// Applies the rules to the normalised message and, when there is context, to the context
    /// and message joined.
    fn rule_outcome(&self, text: &str, context: &[String]) -> RuleOutcome {
        let outcome = self.rules.apply(text);
        if context.is_empty() {
            return outcome;
        }
        let with_context = self.rules.apply(&joined_with_context(text, context));
        merge_rule_outcomes(outcome, with_context)
    }

    /// Combines the scores of one input's sequences, as described on [`Classifier`].
    fn combine(&self, parts: &[(&Sequence, &HeadScores)]) -> HeadScores {
        let message_first = parts.iter().find(|(s, _)| s.message).map(|(_, h)| *h).unwrap_or(parts[0].1);
        let mut combined = message_first.clone();
        for (_, scores) in parts {
            for (best, score) in combined.categories.iter_mut().zip(&scores.categories) {
                *best = best.max(*score);
            }
        }
        let max_urgency_scores = parts
            .iter()
            .map(|(_, h)| *h)
            .max_by(|a, b| {
                let (level_a, level_b) = (self.decision.model_urgency(&a.urgency), self.decision.model_urgency(&b.urgency));
                level_a.cmp(&level_b).then(a.urgency[level_a.index()].total_cmp(&b.urgency[level_b.index()]))
            })
            .unwrap_or(message_first);
        combined.urgency = max_urgency_scores.urgency.clone();
        combined
    }
}

/// Share of a text's letters in scripts that the pruned vocabulary drops (Cyrillic, CJK…) from
/// which the model is taken to miss the text.
pub const UNSUPPORTED_SCRIPT_SHARE: f32 = 0.5;

/// Number of letters in dropped scripts from which the model is taken to miss part of a text,
/// whatever their share: a sentence in Russian after a French greeting is missed as well. A
/// single quoted word, such as « привет » (6 letters), stays under it.
pub const UNSUPPORTED_SCRIPT_LETTERS: usize = 10;

/// Tells whether the model misses a text or a real part of it: at least
/// [`UNSUPPORTED_SCRIPT_SHARE`] of its letters, or [`UNSUPPORTED_SCRIPT_LETTERS`] letters, are in
/// scripts that the pruned vocabulary drops.
pub fn in_unsupported_script(text: &str) -> bool {
    let (dropped, letters) = count_dropped_script_letters(text);
    dropped >= UNSUPPORTED_SCRIPT_LETTERS || (letters > 0 && dropped as f32 >= UNSUPPORTED_SCRIPT_SHARE * letters as f32)
}

/// Joins earlier messages and the message, oldest first, one per line.
fn joined_with_context(text: &str, context: &[String]) -> String {
    let mut joined = context.join("\n");
    joined.push('\n');
    joined.push_str(text);
    joined
}

/// Normalises an input: its text must not be empty afterwards; empty context entries are dropped.
pub fn normalize_input(input: &MessageInput) -> Result<(String, Vec<String>), ClassifyError> {
    let text = normalize(&input.text);
    if text.is_empty() {
        return Err(ClassifyError::InvalidInput(
            "`text` is empty or only whitespace: send the message text".to_string(),
        ));
    }
    let context = input.context.iter().map(|c| normalize(c)).filter(|c| !c.is_empty()).collect();
    Ok((text, context))
}

impl Classify for Classifier {
    fn classify(&self, inputs: &[MessageInput]) -> Result<Vec<Classification>, ClassifyError> {
        let normalized = inputs.iter().map(normalize_input).collect::<Result<Vec<_>, _>>()?;
        let mut sequences = Vec::new();
        for (index, (text, context)) in normalized.iter().enumerate() {
            sequences.extend(self.sequences(index, text, context)?);
        }
        let scores = self.embed_sequences(&sequences)?;

        let mut results = Vec::with_capacity(inputs.len());
        for (index, (text, context)) in normalized.iter().enumerate() {
            let parts: Vec<(&Sequence, &HeadScores)> =
                sequences.iter().zip(&scores).filter(|(s, _)| s.input == index).collect();
            let windows = parts.iter().filter(|(s, _)| s.message).count();
            let combined = self.combine(&parts);
            let message_parts: Vec<(&Sequence, &HeadScores)> = parts.iter().copied().filter(|(s, _)| s.message).collect();
            let alone = (message_parts.len() < parts.len()).then(|| self.combine(&message_parts));
            let outcome = self.rule_outcome(text, context);
            // The context informs the result too, so an unreadable earlier message counts.
            let unsupported_script = std::iter::once(text).chain(context).any(|t| in_unsupported_script(t));
            let message_alone = alone.as_ref().map(|scores| scores.categories.as_slice());
            results.push(self.decision.decide(&combined, message_alone, &outcome, windows, unsupported_script));
        }
        Ok(results)
    }

    // The count reads the normalised text, as the encoder does: characters that normalisation
    // drops cost nothing. A tokenizer failure is an internal error, not a client error. The
    // failures known here come from the model files, such as a token id outside the pruned
    // vocabulary.
    fn token_cost(&self, input: &MessageInput) -> Result<TokenCost, ClassifyError> {
        let max = self.encoder.max_tokens();
        let normalized = normalize(&input.text);
        let text = self.encoder.count_tokens(&normalized).context("failed to count the tokens of a text")?;
        let context_tokens = if input.context.is_empty() { 0 } else { max };
        Ok(TokenCost { text, total: text + context_tokens })
    }

    // The same normalisation and rules as `classify`, without the encoder.
    fn rule_urgency(&self, input: &MessageInput) -> Option<Urgency> {
        let (text, context) = normalize_input(input).ok()?;
        self.rule_outcome(&text, &context).raise.map(|(level, _)| level)
    }

    fn model_info(&self) -> ModelInfo {
        self.decision.model.clone()
    }
}

fn merge_rule_outcomes(mut first: RuleOutcome, second: RuleOutcome) -> RuleOutcome {
    for id in second.fired {
        if !first.fired.contains(&id) {
            first.fired.push(id);
        }
    }
    for category in second.add_categories {
        if !first.add_categories.contains(&category) {
            first.add_categories.push(category);
        }
    }
    if let Some((level, id)) = second.raise {
        if first.raise.as_ref().is_none_or(|(current, _)| level > *current) {
            first.raise = Some((level, id));
        }
    }
    first
}

/// Checks the manifest's `pooled_layers` against the encoder, the heads' input width and the
/// layers recorded in the training configuration. Heads of the same width read other layers
/// without any error, so only that record catches an edit of the field.
fn check_pooled_layers(encoder: &Encoder, manifest: &Manifest) -> anyhow::Result<()> {
    let layers = &manifest.pooled_layers;
    encoder.check_pooled_layers(layers).with_context(|| format!("invalid manifest of {}", manifest.name))?;
    let described = if layers.is_empty() { "the last encoder layer".to_string() } else { format!("encoder layers {layers:?}") };
    let pooled_dim = encoder.pooled_dim(layers);
    if manifest.heads.input_dim != pooled_dim {
        anyhow::bail!(
            "the heads of {} expect {} input values, but pooling {described} gives {pooled_dim}: retrain the model or fix pooled_layers in its manifest",
            manifest.name,
            manifest.heads.input_dim
        );
    }
    let trained: Vec<usize> = match manifest.training.config.get("pooled_layers") {
        None => Vec::new(),
        Some(value) => serde_json::from_value(value.clone())
            .with_context(|| format!("invalid manifest of {}: training.config.pooled_layers is not a list of layers", manifest.name))?,
    };
    if trained != *layers {
        anyhow::bail!(
            "the manifest of {} pools {described}, but its heads were trained on layers {trained:?} (training.config.pooled_layers): restore pooled_layers or retrain the model",
            manifest.name
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_input_drops_empty_context() {
        let input = MessageInput {
            text: " il dit qu'il va les envoyer ".to_string(),
            context: vec![String::new(), " \n\u{200B}".to_string(), "il a des photos de moi".to_string()],
        };
        let (text, context) = normalize_input(&input).unwrap();
        assert_eq!(text, "il dit qu'il va les envoyer");
        assert_eq!(context, ["il a des photos de moi"]);
    }

    #[test]
    fn unsupported_script_share_or_count() {
        assert!(in_unsupported_script("я хочу умереть"));
        assert!(in_unsupported_script("我想自杀"));
        // 20 Cyrillic letters out of 44: under half, but a whole sentence the model cannot read.
        assert!(in_unsupported_script("bonjour je suis ukrainienne, я хочу покончить с собой"));
        assert!(!in_unsupported_script("il m'a écrit « привет » puis il m'a insultée"));
        assert!(!in_unsupported_script("je veux mourir"));
        assert!(!in_unsupported_script("أريد أن أموت الليلة"));
        assert!(!in_unsupported_script("😭😭😭"));
    }

    #[test]
    fn normalize_input_rejects_empty_text() {
        let input = MessageInput { text: "\u{200B} ".to_string(), context: vec!["il a des photos de moi".to_string()] };
        assert!(matches!(normalize_input(&input), Err(ClassifyError::InvalidInput(_))));
    }
}
