//! Near-duplicates between the training and evaluation sets: pairs of messages whose encoder
//! embeddings have a cosine similarity above a threshold.
//!
//! A paraphrase or a copy with a typo of a training message in the evaluation set inflates the
//! scores without saying anything about unseen messages, so each pair is reported at its
//! evaluation line. Pairs that are exact duplicates (see
//! [`normalize_text`](super::dataset::normalize_text)) are left to the duplicate-text check.

use anyhow::Result;

use super::dataset::{normalize_text, Dataset, Record, Split};
use super::problem::{Problem, ProblemKind, Violation};
use crate::model::encoder::Encoder;

/// Texts per forward pass of the encoder.
pub const BATCH_SIZE: usize = 32;

/// Embeds `texts` into unit-norm vectors, returned in the order of `texts`.
///
/// Texts are sorted by length before batching, so that each batch pads to a similar length.
/// `on_batch` receives the number of texts embedded by each batch, for progress reports.
pub fn embed_texts(encoder: &Encoder, texts: &[&str], mut on_batch: impl FnMut(usize)) -> Result<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());

    let mut vectors = vec![Vec::new(); texts.len()];
    for batch in order.chunks(BATCH_SIZE) {
        let batch_texts: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
        for (&i, vector) in batch.iter().zip(encoder.embed(&batch_texts)?) {
            vectors[i] = vector;
        }
        on_batch(batch.len());
    }
    Ok(vectors)
}

/// A training and an evaluation vector whose cosine similarity is above the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimilarPair {
    pub train: usize,
    pub eval: usize,
    pub cosine: f32,
}

/// Returns every pair with cosine similarity strictly above `threshold`, ordered by evaluation
/// index and then by decreasing similarity. The vectors must have unit norm, so that the dot
/// product is the cosine.
pub fn similar_pairs(train: &[Vec<f32>], eval: &[Vec<f32>], threshold: f32) -> Vec<SimilarPair> {
    let mut pairs = Vec::new();
    for (eval_index, e) in eval.iter().enumerate() {
        let start = pairs.len();
        for (train_index, t) in train.iter().enumerate() {
            let cosine: f32 = e.iter().zip(t).map(|(a, b)| a * b).sum();
            if cosine > threshold {
                pairs.push(SimilarPair { train: train_index, eval: eval_index, cosine });
            }
        }
        pairs[start..].sort_by(|a, b| b.cosine.total_cmp(&a.cosine));
    }
    pairs
}

/// Embeds every training and evaluation text and reports the pairs above `threshold`.
/// `on_batch` receives the number of texts embedded by each batch, out of
/// [`texts_to_embed`] in all.
pub fn near_duplicates(
    dataset: &Dataset,
    encoder: &Encoder,
    threshold: f32,
    mut on_batch: impl FnMut(usize),
) -> Result<Vec<Violation>> {
    let with_text = |split| dataset.records(split).filter(|r| r.text.is_some()).collect::<Vec<&Record>>();
    let (train, eval) = (with_text(Split::Train), with_text(Split::Eval));
    if train.is_empty() || eval.is_empty() {
        return Ok(Vec::new());
    }
    let texts: Vec<&str> = train.iter().chain(&eval).filter_map(|r| r.text.as_deref()).collect();
    let mut vectors = embed_texts(encoder, &texts, &mut on_batch)?;
    let eval_vectors = vectors.split_off(train.len());

    let mut violations = Vec::new();
    for pair in similar_pairs(&vectors, &eval_vectors, threshold) {
        let (train_record, eval_record) = (train[pair.train], eval[pair.eval]);
        if normalize_text(train_record.text.as_deref().unwrap_or_default())
            == normalize_text(eval_record.text.as_deref().unwrap_or_default())
        {
            continue;
        }
        // The cosine is printed in full because a rounded value just above the threshold
        // would read as equal to it.
        let message = format!(
            "near-duplicate of the training line {} (cosine {} > {threshold}): rewrite this evaluation message so that it differs in content, or remove it",
            train_record.location, pair.cosine
        );
        violations.push(Violation {
            location: eval_record.location.clone(),
            problem: Problem::in_field(ProblemKind::NearDuplicate, "text", message),
        });
    }
    Ok(violations)
}

/// Returns the number of texts that [`near_duplicates`] embeds: 0 unless both splits have a text.
pub fn texts_to_embed(dataset: &Dataset) -> usize {
    let count = |split| dataset.records(split).filter(|r| r.text.is_some()).count();
    let (train, eval) = (count(Split::Train), count(Split::Eval));
    if train == 0 || eval == 0 {
        0
    } else {
        train + eval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_pairs_keeps_only_above_threshold() {
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let train = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![s, s]];
        let eval = vec![vec![1.0, 0.0], vec![0.0, -1.0]];
        let pairs = similar_pairs(&train, &eval, 0.5);
        assert_eq!(pairs.len(), 2, "{pairs:?}");
        assert_eq!((pairs[0].train, pairs[0].eval), (0, 0));
        assert!((pairs[0].cosine - 1.0).abs() < 1e-6);
        assert_eq!((pairs[1].train, pairs[1].eval), (2, 0));
        assert!((pairs[1].cosine - s).abs() < 1e-6);
    }

    #[test]
    fn threshold_is_strict() {
        let pairs = similar_pairs(&[vec![1.0, 0.0]], &[vec![1.0, 0.0]], 1.0);
        assert!(pairs.is_empty());
    }
}
