//! The sentence encoder: XLM-R tokenizer, the BERT forward pass of [`super::bert`], mean pooling
//! under the attention mask and L2 normalisation, as multilingual-e5-small is meant to be used.
//!
//! Every input gets the `query: ` prefix. A batch is padded to its longest member and goes
//! through one forward pass. Padding is masked out of both attention and pooling, so a text's
//! vector does not depend on the batch it is in (up to float rounding).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Tensor;

use super::bert::{layer_tensor_names, Bert, BertConfig};
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
        let layers = encoder.model.layers().len();
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

    /// Splits a text into overlapping windows of at most `max_tokens` tokens each.
    ///
    /// Each window is `<s> query: <chunk> </s>`; consecutive chunks share `overlap` tokens. A
    /// text that fits returns exactly one window, identical to [`Encoder::tokenize`].
    pub fn windows(&self, text: &str, overlap: usize) -> Result<Vec<TokenIds>> {
        let content = self.encode_plain(text)?;
        let chunk_len = self.max_tokens - self.prefix_ids.len() - 2;
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

    /// Embeds token sequences (each with special tokens, at most `max_tokens` long) in one
    /// forward pass and returns one unit-norm vector per sequence.
    pub fn embed_ids(&self, sequences: &[TokenIds]) -> Result<Vec<Vec<f32>>> {
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
        let mut vectors = vec![Vec::new(); sequences.len()];
        for group in length_groups(sequences) {
            let members: Vec<TokenIds> = group.iter().map(|&i| sequences[i].clone()).collect();
            let (hidden, batch) = self.model.forward(&members)?;
            let pooled = mean_pool(&hidden, &batch.mask)?;
            let rows: Vec<Vec<f32>> = l2_normalize(&pooled)?.to_vec2()?;
            for (&i, row) in group.iter().zip(rows) {
                vectors[i] = row;
            }
        }
        Ok(vectors)
    }
}

/// Most padded tokens (longest member times members) in one forward pass. It bounds the
/// attention scores of a pass to about 12 heads × 1024 × 512 floats (25 MB).
const PADDED_TOKEN_BUDGET: usize = 1024;

/// Largest share of padding accepted in a forward pass, over the real tokens.
const MAX_PADDING_RATIO: f64 = 0.25;

/// Splits sequence indices into forward passes of similar lengths.
///
/// A batch is padded to its longest member, so one long message in a batch of short ones
/// multiplies the work of all the others. Indices are sorted by length and cut into groups whose
/// padded size stays within [`PADDED_TOKEN_BUDGET`] and whose padding stays under
/// [`MAX_PADDING_RATIO`] of the real tokens (plus a few tokens of slack for short messages).
pub fn length_groups(sequences: &[TokenIds]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| sequences[i].len());
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut real_tokens = 0;
    for i in order {
        let len = sequences[i].len();
        if let Some(group) = groups.last_mut() {
            let padded = len * (group.len() + 1);
            let allowed_padding = ((real_tokens + len) as f64 * MAX_PADDING_RATIO) as usize + 8;
            if padded <= PADDED_TOKEN_BUDGET && padded <= real_tokens + len + allowed_padding {
                group.push(i);
                real_tokens += len;
                continue;
            }
        }
        groups.push(vec![i]);
        real_tokens = len;
    }
    groups
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
    fn length_groups_split_long_from_short() {
        let sequences: Vec<TokenIds> = [20, 22, 300, 21, 512, 25, 19].iter().map(|&n| vec![1; n]).collect();
        let groups = length_groups(&sequences);

        let mut seen: Vec<usize> = groups.concat();
        seen.sort();
        assert_eq!(seen, (0..sequences.len()).collect::<Vec<_>>());
        assert_eq!(groups[0], vec![6, 0, 3, 1, 5]);
        assert_eq!(groups[1], vec![2]);
        assert_eq!(groups[2], vec![4]);
    }

    #[test]
    fn length_groups_respect_the_token_budget() {
        let sequences: Vec<TokenIds> = (0..40).map(|_| vec![1; 100]).collect();
        let groups = length_groups(&sequences);

        assert!(groups.iter().all(|g| g.len() * 100 <= PADDED_TOKEN_BUDGET));
        assert_eq!(groups.len(), 4);
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
