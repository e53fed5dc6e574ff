//! `manifest.json` of a classifier model folder: which base encoder it was trained on, the
//! label lists with their French names, the decision thresholds, and how it was trained.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::base::BaseInfo;
use super::finetune::TunedEncoder;
use super::heads::HeadsConfig;
use crate::triage::taxonomy::{Label, CATEGORIES, INTENTS, SPEAKERS, URGENCIES};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const RULES_FILE: &str = "rules.json";
pub const RESOURCES_FILE: &str = "resources.json";
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub version: String,
    pub base: BaseRef,
    pub heads: HeadsConfig,
    pub labels: LabelLists,
    pub thresholds: Thresholds,
    pub training: TrainingRecord,
    /// Fine-tuned top layers of the encoder, absent when only the heads were trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<TunedEncoder>,
    /// Layer counts whose mean-pooled states make the heads' input, in order (see
    /// [`super::encoder::Encoder::pooled_ids`]). Absent: the last layer alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pooled_layers: Vec<usize>,
}

/// The base encoder the heads were trained on. A different checksum means different
/// embeddings, so the heads would be meaningless on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRef {
    pub name: String,
    pub checksum: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelLists {
    pub categories: Vec<OwnedLabel>,
    pub intents: Vec<OwnedLabel>,
    pub urgencies: Vec<OwnedLabel>,
    pub speakers: Vec<OwnedLabel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnedLabel {
    pub id: String,
    pub label: String,
}

impl LabelLists {
    pub fn from_taxonomy() -> Self {
        let own = |labels: &[Label]| labels.iter().map(|l| OwnedLabel { id: l.id.into(), label: l.label.into() }).collect();
        LabelLists {
            categories: own(&CATEGORIES),
            intents: own(&INTENTS),
            urgencies: own(&URGENCIES),
            speakers: own(&SPEAKERS),
        }
    }
}

/// Decision thresholds, tuned on the dev split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Minimum sigmoid score for a category to be detected, keyed by category id.
    pub categories: BTreeMap<String, f32>,
    /// Urgency is the highest level whose cumulative probability (that level or above) reaches
    /// its threshold, keyed by level id (`medium`, `high`, `critical`); `low` otherwise.
    pub urgency: BTreeMap<String, f32>,
    /// Fraction of the highest category score that a category's score must also reach to be
    /// detected, so that a strong concern hides weak side ones. 0 turns the cutoff off, and
    /// manifests written before it existed read as 0.
    #[serde(default)]
    pub category_relative_cutoff: f32,
    /// A detected category is confident when its score exceeds its threshold by this margin.
    pub uncertain_category_margin: f32,
    /// The result is uncertain when the two most probable urgency levels differ by less than this.
    pub uncertain_urgency_margin: f32,
}

impl Thresholds {
    /// Returns, per category in taxonomy order, whether the heads' scores detect it: the score
    /// reaches the category's threshold (0.5 when the manifest has none) and the relative cutoff.
    /// Rules and the `none` exclusion come after this, in the decision layer.
    pub fn detect(&self, scores: &[f32]) -> Vec<bool> {
        let top = top_score(scores);
        CATEGORIES
            .iter()
            .zip(scores)
            .map(|(category, &score)| {
                let threshold = self.categories.get(category.id).copied().unwrap_or(0.5);
                clears(score, threshold, self.category_relative_cutoff, top)
            })
            .collect()
    }
}

/// Returns the highest category score of one message, which the relative cutoff scales.
pub fn top_score(scores: &[f32]) -> f32 {
    scores.iter().copied().fold(0.0f32, f32::max)
}

/// Returns whether a category score reaches both its threshold and `relative_cutoff` times the
/// message's top score.
pub fn clears(score: f32, threshold: f32, relative_cutoff: f32, top: f32) -> bool {
    score >= threshold && score >= relative_cutoff * top
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// sha256 over the training files' names and bytes, in name order.
    pub data_sha256: String,
    pub examples: usize,
    pub dev_examples: usize,
    pub config: serde_json::Value,
    pub dev_metrics: serde_json::Value,
}

impl Manifest {
    pub fn read(model_dir: &Path) -> Result<Self> {
        let path = model_dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read the model manifest {}", path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text).with_context(|| format!("{} is invalid", path.display()))?;
        if manifest.format != MANIFEST_FORMAT {
            bail!("{} has format {}, this build reads format {MANIFEST_FORMAT}", path.display(), manifest.format);
        }
        if manifest.labels != LabelLists::from_taxonomy() {
            bail!(
                "{} was trained for another label scheme than this build's; retrain with `cybertriage train`",
                path.display()
            );
        }
        for category in &CATEGORIES {
            if !manifest.thresholds.categories.contains_key(category.id) {
                bail!("{} has no threshold for category {}", path.display(), category.id);
            }
        }
        Ok(manifest)
    }

    pub fn write(&self, model_dir: &Path) -> Result<()> {
        let path = model_dir.join(MANIFEST_FILE);
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))
    }

    /// Fails with a message naming both checksums unless `base` is the encoder the heads were
    /// trained on.
    pub fn check_base(&self, base: &BaseInfo) -> Result<()> {
        if base.checksum != self.base.checksum {
            bail!(
                "base encoder mismatch: the model {} {} was trained on {} with checksum {}, but the base \
                 encoder found has checksum {} (source {}). Run `cybertriage fetch-base --force` to restore \
                 the pinned base, or retrain with `cybertriage train`",
                self.name,
                self.version,
                self.base.name,
                self.base.checksum,
                base.checksum,
                base.source
            );
        }
        Ok(())
    }
}
