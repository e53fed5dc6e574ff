//! Hashed lexical features: TF-IDF over character n-grams and word n-grams of the folded text
//! (lower case, no accents), hashed into a fixed number of buckets.
//!
//! They complement the sentence embedding on what it blurs in chat-style French: SMS
//! spellings (« jsp », « g »), slang and platform names. The IDF vector is learnt from the
//! training data and saved with the heads.

use candle_core::{Device, Tensor};

use crate::triage::rules::fold;

/// Character n-gram lengths, taken inside words padded with spaces.
const CHAR_NGRAMS: std::ops::RangeInclusive<usize> = 2..=5;

/// Sparse feature vector: (bucket, weight) pairs, L2-normalised.
pub type SparseFeatures = Vec<(u32, f32)>;

/// Returns the raw term counts of a text, bucketed, in bucket order. The order is fixed so that
/// sums over the terms, such as the L2 norm, give the same bits on every call.
fn term_counts(text: &str, buckets: usize) -> Vec<(u32, f32)> {
    let folded = fold(text);
    let words: Vec<&str> = folded
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .collect();
    let mut counts: std::collections::BTreeMap<u32, f32> = std::collections::BTreeMap::new();
    let mut add = |kind: u8, term: &str| {
        let bucket = (fnv1a(kind, term.as_bytes()) % buckets as u64) as u32;
        *counts.entry(bucket).or_insert(0.0) += 1.0;
    };
    for word in &words {
        add(b'w', word);
        let padded: Vec<char> = format!(" {word} ").chars().collect();
        for n in CHAR_NGRAMS {
            for gram in padded.windows(n) {
                add(b'c', &gram.iter().collect::<String>());
            }
        }
    }
    for pair in words.windows(2) {
        add(b'b', &format!("{} {}", pair[0], pair[1]));
    }
    counts.into_iter().collect()
}

fn fnv1a(kind: u8, bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for &byte in std::iter::once(&kind).chain(bytes) {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash
}

/// Learnt IDF weights over the hashed buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Lexical {
    pub idf: Vec<f32>,
}

impl Lexical {
    /// Learns smoothed IDF weights, `ln((1 + n) / (1 + df)) + 1`, from training texts.
    pub fn fit(texts: &[String], buckets: usize) -> Self {
        let mut document_frequency = vec![0f32; buckets];
        for text in texts {
            for (bucket, _) in term_counts(text, buckets) {
                document_frequency[bucket as usize] += 1.0;
            }
        }
        let n = texts.len() as f32;
        let idf = document_frequency.iter().map(|df| ((1.0 + n) / (1.0 + df)).ln() + 1.0).collect();
        Lexical { idf }
    }

    pub fn buckets(&self) -> usize {
        self.idf.len()
    }

    /// Returns the sublinear TF-IDF vector of a text, L2-normalised, in bucket order.
    pub fn features(&self, text: &str) -> SparseFeatures {
        let mut features: SparseFeatures = term_counts(text, self.buckets())
            .into_iter()
            .map(|(bucket, count)| (bucket, (1.0 + count.ln()) * self.idf[bucket as usize]))
            .collect();
        let norm = features.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (_, weight) in &mut features {
                *weight /= norm;
            }
        }
        features
    }

    /// Stacks sparse vectors into a dense `[rows, buckets]` tensor.
    pub fn dense(&self, rows: &[&SparseFeatures], device: &Device) -> candle_core::Result<Tensor> {
        let buckets = self.buckets();
        let mut values = vec![0f32; rows.len() * buckets];
        for (row, features) in rows.iter().enumerate() {
            for &(bucket, weight) in features.iter() {
                values[row * buckets + bucket as usize] = weight;
            }
        }
        Tensor::from_vec(values, (rows.len(), buckets), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_unit_norm_and_accent_blind() {
        let lexical = Lexical::fit(&["il me harcèle".to_string(), "bonjour".to_string()], 1024);
        let a = lexical.features("Il me HARCÈLE");
        let b = lexical.features("il me harcele");
        assert_eq!(a, b);
        let norm: f32 = a.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn features_are_bitwise_stable() {
        // A long text has hundreds of terms, so a sum taken in a varying order would differ in
        // its last bits between calls.
        let text = "ils m'insultent tous les jours dans le groupe de la classe et ils postent des photos \
                    de moi avec des commentaires, je sais plus quoi faire, j'ai peur d'aller au college";
        let lexical = Lexical::fit(&[text.to_string(), "bonjour".to_string()], 16_384);
        let first = lexical.features(text);
        for _ in 0..50 {
            let again = lexical.features(text);
            let bits = |f: &SparseFeatures| f.iter().map(|(b, w)| (*b, w.to_bits())).collect::<Vec<_>>();
            assert_eq!(bits(&again), bits(&first), "the same text must give the same features, bit for bit");
        }
    }

    #[test]
    fn empty_text_has_no_features() {
        let lexical = Lexical::fit(&["a b".to_string()], 64);
        assert!(lexical.features("").is_empty());
        let dense = lexical.dense(&[&lexical.features("")], &Device::Cpu).unwrap();
        assert_eq!(dense.dims(), &[1, 64]);
    }

    #[test]
    fn rare_terms_weigh_more() {
        let texts: Vec<String> = ["le chat", "le chien", "le poisson"].iter().map(|s| s.to_string()).collect();
        let lexical = Lexical::fit(&texts, 1 << 16);
        let common = lexical.idf[(fnv1a(b'w', b"le") % (1 << 16)) as usize];
        let rare = lexical.idf[(fnv1a(b'w', b"chat") % (1 << 16)) as usize];
        assert!(rare > common);
    }
}
