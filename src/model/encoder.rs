//! The sentence encoder: XLM-R tokenizer, candle's BERT, mean pooling under the attention mask
//! and L2 normalisation, as multilingual-e5-small is meant to be used.
//!
//! Every input gets the `query: ` prefix. A batch is padded to its longest member and goes
//! through one forward pass; padding is masked out of both attention and pooling, so a text's
//! vector does not depend on the batch it is in (up to float rounding).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::base::{BaseInfo, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

/// Prefix that multilingual-e5 expects on queries and classification inputs.
pub const QUERY_PREFIX: &str = "query: ";
/// Embedding dimension of multilingual-e5-small.
pub const EMBEDDING_DIM: usize = 384;

/// Token sequence with its special tokens, ready for the model.
pub type TokenIds = Vec<u32>;

pub struct Encoder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    info: BaseInfo,
    /// Maximum tokens per sequence, special tokens included (512 for this model).
    max_tokens: usize,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    /// Token ids of the `query:` prefix, without special tokens.
    prefix_ids: Vec<u32>,
}

impl Encoder {
    /// Loads a complete base folder written by `fetch-base`.
    pub fn load(dir: &Path) -> Result<Self> {
        let info = BaseInfo::read(dir)?;
        let config_path = dir.join(CONFIG_FILE);
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(&config_path).with_context(|| format!("failed to read {}", config_path.display()))?,
        )
        .with_context(|| format!("{} is not a BERT config", config_path.display()))?;

        let mut tokenizer = Tokenizer::from_file(dir.join(TOKENIZER_FILE))
            .map_err(|e| anyhow!("failed to load {}: {e}", dir.join(TOKENIZER_FILE).display()))?;
        let token_id = |token: &str| {
            tokenizer.token_to_id(token).ok_or_else(|| anyhow!("the tokenizer has no {token} token"))
        };
        let (bos_id, eos_id, pad_id) = (token_id("<s>")?, token_id("</s>")?, token_id("<pad>")?);
        let max_tokens = config.max_position_embeddings;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| anyhow!("failed to configure truncation: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token: "<pad>".into(),
            ..Default::default()
        }));
        let prefix_ids = tokenizer
            .encode(QUERY_PREFIX.trim_end(), false)
            .map_err(|e| anyhow!("failed to tokenize the query prefix: {e}"))?
            .get_ids()
            .to_vec();

        let device = Device::Cpu;
        let weights = dir.join(WEIGHTS_FILE);
        // SAFETY: the file is memory-mapped read-only; fetch-base writes it once and never
        // rewrites it in place (a new base replaces the folder by rename).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device)? };
        let model = BertModel::load(vb, &config).with_context(|| format!("failed to load {}", weights.display()))?;

        Ok(Encoder { model, tokenizer, device, info, max_tokens, bos_id, eos_id, pad_id, prefix_ids })
    }

    pub fn info(&self) -> &BaseInfo {
        &self.info
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokenizes `query: <text>` with special tokens, truncated to the model's maximum.
    pub fn tokenize(&self, text: &str) -> Result<TokenIds> {
        let encoding = self
            .tokenizer
            .encode(format!("{QUERY_PREFIX}{text}"), true)
            .map_err(|e| anyhow!("tokenization failed: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Number of tokens of `query: <text>` with special tokens, before truncation.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.content_ids(text)?.len() + self.prefix_ids.len() + 2)
    }

    fn content_ids(&self, text: &str) -> Result<Vec<u32>> {
        let mut tokenizer = self.tokenizer.clone();
        tokenizer.with_truncation(None).map_err(|e| anyhow!("failed to disable truncation: {e}"))?;
        let encoding = tokenizer.encode(text, false).map_err(|e| anyhow!("tokenization failed: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Splits a text into overlapping windows of at most `max_tokens` tokens each.
    ///
    /// Each window is `<s> query: <chunk> </s>`; consecutive chunks share `overlap` tokens. A
    /// text that fits returns exactly one window, identical to [`Encoder::tokenize`].
    pub fn windows(&self, text: &str, overlap: usize) -> Result<Vec<TokenIds>> {
        let content = self.content_ids(text)?;
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
            let mut ids = Vec::with_capacity(end - start + self.prefix_ids.len() + 2);
            ids.push(self.bos_id);
            ids.extend_from_slice(&self.prefix_ids);
            ids.extend_from_slice(&content[start..end]);
            ids.push(self.eos_id);
            windows.push(ids);
            if end == content.len() {
                break;
            }
            start += step;
        }
        Ok(windows)
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
        let batch = sequences.len();
        let mut ids = Vec::with_capacity(batch * longest);
        let mut mask = Vec::with_capacity(batch * longest);
        for sequence in sequences {
            ids.extend_from_slice(sequence);
            ids.extend(std::iter::repeat_n(self.pad_id, longest - sequence.len()));
            mask.extend(std::iter::repeat_n(1u32, sequence.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - sequence.len()));
        }
        let ids = Tensor::from_vec(ids, (batch, longest), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch, longest), &self.device)?;
        let token_types = ids.zeros_like()?;

        let hidden = self.model.forward(&ids, &token_types, Some(&mask))?;
        let pooled = mean_pool(&hidden, &mask)?;
        let normalized = l2_normalize(&pooled)?;
        Ok(normalized.to_vec2()?)
    }
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
