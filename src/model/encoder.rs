//! The sentence encoder: XLM-R tokenizer, the BERT forward pass of [`super::bert`], mean pooling
//! under the attention mask and L2 normalisation, as multilingual-e5-small is meant to be used.
//!
//! Every input gets the `query: ` prefix. A batch goes through the packed inference path of
//! [`Bert::forward_packed`], which has no padding, so a text's vector does not depend on the
//! batch it is in (up to float rounding).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Tensor;

use super::bert::{check_taps, layer_tensor_names, Bert, BertConfig};
use super::finetune::{load_tuned, TunedEncoder};
use super::vocab::BaseTokenizer;

use super::base::{BaseInfo, CONFIG_FILE, WEIGHTS_FILE};

/// Prefix that multilingual-e5 expects on queries and classification inputs.
pub const QUERY_PREFIX: &str = "query: ";
/// Embedding dimension of multilingual-e5-small.
pub const EMBEDDING_DIM: usize = 384;

/// Token sequence with its special tokens, ready for the model.
pub type TokenIds = Vec<u32>;

pub struct Encoder {
    model: Bert,
    /// Tokenizer pruned to the scripts the helpline reads, which still returns original ids.
    tokenizer: BaseTokenizer,
    info: BaseInfo,
    /// Maximum tokens per sequence, special tokens included (512 for this model).
    max_tokens: usize,
    bos_id: u32,
    eos_id: u32,
    /// Token ids of the `query:` prefix, without special tokens.
    prefix_ids: Vec<u32>,
    /// Fine-tuned layers loaded over the base ones, if any.
    tuned: Option<TunedEncoder>,
}

impl Encoder {
    /// Loads a complete base folder written by `fetch-base`.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, &HashMap::new())
    }

    /// Loads a base folder with the fine-tuned top layers that a classifier's manifest names.
    pub fn load_tuned(dir: &Path, model_dir: &Path, tuned: &TunedEncoder) -> Result<Self> {
        let overrides = load_tuned(model_dir, tuned)?;
        let mut encoder = Self::load_with(dir, &overrides)?;
        // From the config: `layers()` would build candle copies of every layer.
        let layers = encoder.model.config().num_hidden_layers;
        let expected: HashSet<String> = (tuned.first_layer..layers).flat_map(layer_tensor_names).collect();
        if let Some(name) = overrides.keys().find(|name| !expected.contains(*name)) {
            bail!("{} contains {name}, which is not a tensor of layers {}..{layers}", tuned.file, tuned.first_layer);
        }
        if overrides.len() != expected.len() {
            bail!("{} contains {} tensors, expected {}", tuned.file, overrides.len(), expected.len());
        }
        encoder.tuned = Some(tuned.clone());
        Ok(encoder)
    }

    /// Loads a base folder with some of its tensors replaced, e.g. fine-tuned top layers.
    pub fn load_with(dir: &Path, overrides: &HashMap<String, Tensor>) -> Result<Self> {
        let info = BaseInfo::read(dir)?;
        let config_path = dir.join(CONFIG_FILE);
        let config: BertConfig = serde_json::from_str(
            &std::fs::read_to_string(&config_path).with_context(|| format!("failed to read {}", config_path.display()))?,
        )
        .with_context(|| format!("{} is not a BERT config", config_path.display()))?;

        // Truncation, special tokens and padding are applied here, not by the tokenizer, so
        // that one tokenizer serves both truncated inputs and windows.
        let tokenizer = BaseTokenizer::load(dir)?;
        let token_id =
            |token: &str| tokenizer.token_id(token).ok_or_else(|| anyhow!("the tokenizer has no {token} token"));
        let (bos_id, eos_id) = (token_id("<s>")?, token_id("</s>")?);
        let max_tokens = config.max_position_embeddings;
        let prefix_ids = tokenizer.encode(QUERY_PREFIX.trim_end()).context("failed to tokenize the query prefix")?;

        let weights = dir.join(WEIGHTS_FILE);
        let model =
            Bert::load(config, &weights, overrides).with_context(|| format!("failed to load {}", weights.display()))?;

        Ok(Encoder { model, tokenizer, info, max_tokens, bos_id, eos_id, prefix_ids, tuned: None })
    }

    /// Returns the transformer itself, for training code that runs parts of it.
    pub fn bert(&self) -> &Bert {
        &self.model
    }

    /// Returns the fine-tuned layers this encoder was loaded with, if any.
    pub fn tuned(&self) -> Option<&TunedEncoder> {
        self.tuned.as_ref()
    }

    pub fn info(&self) -> &BaseInfo {
        &self.info
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokenizes `query: <text>` with special tokens, truncated to the model's maximum.
    pub fn tokenize(&self, text: &str) -> Result<TokenIds> {
        let content = self.encode_plain(&format!("{QUERY_PREFIX}{text}"))?;
        let kept = content.len().min(self.max_tokens - 2);
        Ok(self.wrap(&content[..kept]))
    }

    /// Number of tokens of `query: <text>` with special tokens, before truncation.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.encode_plain(&format!("{QUERY_PREFIX}{text}"))?.len() + 2)
    }

    fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// Surrounds content ids with `<s>` and `</s>`, as the XLM-R post-processor does.
    fn wrap(&self, content: &[u32]) -> TokenIds {
        let mut ids = Vec::with_capacity(content.len() + 2);
        ids.push(self.bos_id);
        ids.extend_from_slice(content);
        ids.push(self.eos_id);
        ids
    }

    /// Returns how many text tokens fit in one sequence beside `<s>`, the `query:` prefix and
    /// `</s>`.
    fn chunk_len(&self) -> usize {
        self.max_tokens - self.prefix_ids.len() - 2
    }

    /// Splits a text into overlapping windows of at most `max_tokens` tokens each.
    ///
    /// Each window is `<s> query: <chunk> </s>`; consecutive chunks share `overlap` tokens. A
    /// text that fits returns exactly one window, identical to [`Encoder::tokenize`].
    pub fn windows(&self, text: &str, overlap: usize) -> Result<Vec<TokenIds>> {
        let content = self.encode_plain(text)?;
        let chunk_len = self.chunk_len();
        if content.len() <= chunk_len {
            return Ok(vec![self.tokenize(text)?]);
        }
        if overlap >= chunk_len {
            bail!("window overlap {overlap} must be smaller than the chunk length {chunk_len}");
        }
        let step = chunk_len - overlap;
        let mut windows = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + chunk_len).min(content.len());
            let mut chunk = self.prefix_ids.clone();
            chunk.extend_from_slice(&content[start..end]);
            windows.push(self.wrap(&chunk));
            if end == content.len() {
                break;
            }
            start += step;
        }
        Ok(windows)
    }

    /// Tokenizes the last `max_tokens` tokens of a text, special tokens and prefix included, and
    /// returns whether the text had to be cut to fit.
    pub fn tail(&self, text: &str) -> Result<(TokenIds, bool)> {
        let content = self.encode_plain(text)?;
        let chunk_len = self.chunk_len();
        if content.len() <= chunk_len {
            return Ok((self.tokenize(text)?, false));
        }
        let mut chunk = self.prefix_ids.clone();
        chunk.extend_from_slice(&content[content.len() - chunk_len..]);
        Ok((self.wrap(&chunk), true))
    }

    /// Decodes token ids back to text, skipping special tokens and the `query:` prefix.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = self.tokenizer.decode(ids, true)?;
        let trimmed = text.trim_start();
        Ok(trimmed.strip_prefix(QUERY_PREFIX.trim_end()).unwrap_or(trimmed).trim_start().to_string())
    }

    /// Embeds texts (truncated to the maximum length) into unit-norm vectors, one forward pass.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let sequences = texts.iter().map(|t| self.tokenize(t)).collect::<Result<Vec<_>>>()?;
        self.embed_ids(&sequences)
    }

    /// Embeds token sequences (each with special tokens, at most `max_tokens` long) and returns
    /// one unit-norm vector per sequence. Sequences go through forward passes of at most
    /// [`TOKEN_BUDGET`] tokens (see [`length_groups`]).
    pub fn embed_ids(&self, sequences: &[TokenIds]) -> Result<Vec<Vec<f32>>> {
        self.pooled_ids(sequences, &[])
    }

    /// Checks layer counts for [`Encoder::pooled_ids`]: empty, or strictly increasing from 1 to
    /// the number of layers.
    pub fn check_pooled_layers(&self, layers: &[usize]) -> Result<()> {
        if layers.is_empty() {
            return Ok(());
        }
        check_taps(layers, self.model.config().num_hidden_layers)
    }

    /// Returns the length of the vectors that [`Encoder::pooled_ids`] gives for these layers.
    pub fn pooled_dim(&self, layers: &[usize]) -> usize {
        self.model.config().hidden_size * layers.len().max(1)
    }

    /// Pools the states after each layer count in `layers` (strictly increasing, from 1 to the
    /// number of layers) as [`Encoder::embed_ids`] pools the last one, and concatenates the
    /// unit-norm means in that order. No layers means the last one alone, the e5 embedding.
    pub fn pooled_ids(&self, sequences: &[TokenIds], layers: &[usize]) -> Result<Vec<Vec<f32>>> {
        let last = [self.model.config().num_hidden_layers];
        let taps = if layers.is_empty() { &last[..] } else { layers };
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        let longest = sequences.iter().map(Vec::len).max().unwrap_or(0);
        if longest > self.max_tokens {
            bail!("a sequence has {longest} tokens, more than the model's {}", self.max_tokens);
        }
        if sequences.iter().any(Vec::is_empty) {
            bail!("cannot embed an empty token sequence");
        }
        let h = self.model.config().hidden_size;
        let mut vectors = vec![Vec::new(); sequences.len()];
        for group in length_groups(sequences) {
            let members: Vec<TokenIds> = group.iter().map(|&i| sequences[i].clone()).collect();
            let states = self.model.forward_packed_taps(&members, taps)?;
            let mut start = 0;
            for &i in &group {
                let len = sequences[i].len();
                vectors[i] = states.iter().flat_map(|hidden| pool_and_normalize(&hidden[start * h..(start + len) * h], h)).collect();
                start += len;
            }
        }
        Ok(vectors)
    }
}

/// Maximum number of tokens in one forward pass. The activations of a pass take about 15 KB per token
/// (hidden size 384), so 1,024 tokens need about 16 MB.
pub const TOKEN_BUDGET: usize = 1024;

/// Splits sequence indices into forward passes of at most [`TOKEN_BUDGET`] tokens (a longer
/// sequence goes alone).
///
/// The packed forward pass has no padding, so lengths need not match within a pass. Indices are
/// still sorted by length, so a batch of similar messages gives the same passes whatever its
/// order.
pub fn length_groups(sequences: &[TokenIds]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| sequences[i].len());
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut tokens = 0;
    for i in order {
        let len = sequences[i].len();
        match groups.last_mut() {
            Some(group) if tokens + len <= TOKEN_BUDGET => {
                group.push(i);
                tokens += len;
            }
            _ => {
                groups.push(vec![i]);
                tokens = len;
            }
        }
    }
    groups
}

/// Mean of the token states `[len, h]` of one sequence, scaled to unit L2 norm: the same as
/// [`mean_pool`] then [`l2_normalize`] on a padded batch.
fn pool_and_normalize(states: &[f32], h: usize) -> Vec<f32> {
    let mut sum = vec![0f32; h];
    for row in states.chunks_exact(h) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v;
        }
    }
    let count = (states.len() / h) as f32;
    let mean: Vec<f32> = sum.iter().map(|s| s / count).collect();
    let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    mean.iter().map(|v| v / norm).collect()
}

/// Averages token states `[batch, seq, dim]` over the positions where `mask` is 1.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?;
    summed.broadcast_div(&counts)
}

/// Scales each row of `[batch, dim]` to unit L2 norm.
pub fn l2_normalize(vectors: &Tensor) -> candle_core::Result<Tensor> {
    let norms = vectors.sqr()?.sum_keepdim(1)?.sqrt()?;
    vectors.broadcast_div(&norms.clamp(1e-12, f64::MAX)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn length_groups_fill_passes_in_length_order() {
        let sequences: Vec<TokenIds> = [20, 22, 300, 21, 512, 25, 19, 600, 700].iter().map(|&n| vec![1; n]).collect();
        let groups = length_groups(&sequences);

        let mut seen: Vec<usize> = groups.concat();
        seen.sort();
        assert_eq!(seen, (0..sequences.len()).collect::<Vec<_>>());
        assert_eq!(groups, vec![vec![6, 0, 3, 1, 5, 2, 4], vec![7], vec![8]]);
    }

    #[test]
    fn length_groups_respect_the_token_budget() {
        let sequences: Vec<TokenIds> = (0..40).map(|_| vec![1; 100]).collect();
        let groups = length_groups(&sequences);

        assert!(groups.iter().all(|g| g.len() * 100 <= TOKEN_BUDGET));
        assert_eq!(groups.len(), 4);
    }

    #[test]
    fn pool_and_normalize_matches_the_tensor_functions() {
        let device = Device::Cpu;
        let states = [1f32, 2., -3., 0.5, 4., 4., 2., -1., 0.25];
        let hidden = Tensor::from_slice(&states, (1, 3, 3), &device).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1]], &device).unwrap();
        let expected: Vec<Vec<f32>> = l2_normalize(&mean_pool(&hidden, &mask).unwrap()).unwrap().to_vec2().unwrap();
        let ours = pool_and_normalize(&states, 3);
        for (a, b) in ours.iter().zip(&expected[0]) {
            assert!((a - b).abs() < 1e-6, "{a} against {b}");
        }
    }

    #[test]
    fn mean_pool_ignores_padding() {
        let device = Device::Cpu;
        let hidden = Tensor::new(&[[[1f32, 2.], [3., 4.], [100., 100.]]], &device).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 0]], &device).unwrap();
        let pooled: Vec<Vec<f32>> = mean_pool(&hidden, &mask).unwrap().to_vec2().unwrap();
        assert_eq!(pooled, vec![vec![2.0, 3.0]]);
    }

    #[test]
    fn l2_normalize_gives_unit_rows() {
        let device = Device::Cpu;
        let vectors = Tensor::new(&[[3f32, 4.], [0., 2.]], &device).unwrap();
        let rows: Vec<Vec<f32>> = l2_normalize(&vectors).unwrap().to_vec2().unwrap();
        assert_eq!(rows, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
    }
}
