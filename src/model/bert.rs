//! The BERT forward pass of multilingual-e5-small, written for this service.
//!
//! It differs from a general-purpose BERT in three ways that matter here:
//! - the 250k × 384 word-embedding matrix is never copied into memory: rows are read from the
//!   memory-mapped safetensors file on demand, so only the pages of tokens actually seen count
//!   towards the resident set;
//! - the query, key and value projections of each layer are one fused matrix product;
//! - the top layers can be replaced by fine-tuned tensors from the classifier's model folder,
//!   and the same layer code runs with differentiable layer norm and softmax for training;
//! - inference ([`Bert::forward`]) goes through the packed, inference-only path of
//!   [`super::infer`], which owns the layer weights. The candle layers are rebuilt from them
//!   the first time training code calls [`Bert::layers`].

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use memmap2::Mmap;
use serde::Deserialize;

use super::infer::{self, PackedLayer};

/// The parts of a BERT `config.json` this forward pass uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub hidden_act: Option<String>,
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Choice of layer-norm and softmax implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// candle's fused kernels, which have no backward pass.
    Inference,
    /// Compositions of elementary ops, so gradients flow through them.
    Training,
}

/// A loaded encoder: embeddings plus transformer layers.
pub struct Bert {
    config: BertConfig,
    words: WordTable,
    /// Position embeddings with the (constant) token-type 0 embedding already added.
    positions: Tensor,
    embedding_norm: Norm,
    /// `positions` and `embedding_norm` as plain vectors, for [`Bert::forward_packed`].
    plain: PlainEmbeddings,
    /// The layer weights, once, in the layout of the inference path.
    packed: Vec<PackedLayer>,
    /// The same layers as candle tensors, built on first use by [`Bert::layers`] (training and
    /// the candle forward pass), so that serving keeps one copy of the weights.
    layers: OnceLock<Vec<Layer>>,
    device: Device,
}

/// Position embeddings (`[max positions, hidden]`, token type 0 added) and the embedding
/// layer norm, copied out of their tensors once (under 1 MB).
struct PlainEmbeddings {
    positions: Vec<f32>,
    norm_weight: Vec<f32>,
    norm_bias: Vec<f32>,
}

/// Weight tensors of one transformer layer. Matrices are stored as `[in, out]` so a forward
/// pass multiplies on the right without a transpose.
#[derive(Clone)]
pub struct Layer {
    pub qkv_weight: Tensor,
    pub qkv_bias: Tensor,
    pub attention_out_weight: Tensor,
    pub attention_out_bias: Tensor,
    pub attention_norm: Norm,
    pub intermediate_weight: Tensor,
    pub intermediate_bias: Tensor,
    pub output_weight: Tensor,
    pub output_bias: Tensor,
    pub output_norm: Norm,
}

#[derive(Clone)]
pub struct Norm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

/// Rows of the word-embedding matrix, read from the mapped file.
struct WordTable {
    /// The weights file, read row by row with positioned reads. Mapped rows stayed resident in
    /// the process: after a few long messages they added up to 170 MB of file pages to a
    /// server's resident size, depending on the page cache.
    file: File,
    offset: usize,
    rows: usize,
    dim: usize,
}

/// Checks that layer counts `taps` are not empty and increase strictly within 1..=`layers`.
pub fn check_taps(taps: &[usize], layers: usize) -> Result<()> {
    if taps.is_empty() || taps.windows(2).any(|w| w[0] >= w[1]) || taps[0] == 0 || taps[taps.len() - 1] > layers {
        bail!("pooled layers {taps:?} must increase strictly within 1..={layers}");
    }
    Ok(())
}

/// A padded batch of token sequences, as the layers take it.
pub struct Batch {
    /// `[batch, seq]` with 1 on real tokens and 0 on padding.
    pub mask: Tensor,
    /// `[batch, 1, 1, seq]`: 0 on real tokens, a large negative number on padding.
    pub attention_bias: Tensor,
}

impl Batch {
    /// Builds the mask and attention bias of sequences with these lengths, padded to the longest.
    pub fn from_lengths(lengths: &[usize], device: &Device) -> Result<Self> {
        let longest = lengths.iter().copied().max().unwrap_or(0);
        let mut mask = Vec::with_capacity(lengths.len() * longest);
        let mut bias = Vec::with_capacity(lengths.len() * longest);
        for &len in lengths {
            for position in 0..longest {
                let real = position < len;
                mask.push(if real { 1f32 } else { 0.0 });
                bias.push(if real { 0f32 } else { -1e9 });
            }
        }
        let n = lengths.len();
        Ok(Batch {
            mask: Tensor::from_vec(mask, (n, longest), device)?,
            attention_bias: Tensor::from_vec(bias, (n, 1, 1, longest), device)?,
        })
    }
}

/// Tensor names of one layer in the Hugging Face BERT layout.
pub fn layer_tensor_names(layer: usize) -> Vec<String> {
    let prefix = format!("encoder.layer.{layer}");
    [
        "attention.self.query.weight",
        "attention.self.query.bias",
        "attention.self.key.weight",
        "attention.self.key.bias",
        "attention.self.value.weight",
        "attention.self.value.bias",
        "attention.output.dense.weight",
        "attention.output.dense.bias",
        "attention.output.LayerNorm.weight",
        "attention.output.LayerNorm.bias",
        "intermediate.dense.weight",
        "intermediate.dense.bias",
        "output.dense.weight",
        "output.dense.bias",
        "output.LayerNorm.weight",
        "output.LayerNorm.bias",
    ]
    .iter()
    .map(|name| format!("{prefix}.{name}"))
    .collect()
}

const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

/// Looks tensors up in an override map first, then in the base file.
struct Source<'a> {
    base: &'a candle_core::safetensors::MmapedSafetensors,
    overrides: &'a HashMap<String, Tensor>,
    device: &'a Device,
}

impl Source<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let tensor = match self.overrides.get(name) {
            Some(t) => t.clone(),
            None => self.base.load(name, self.device).with_context(|| format!("missing tensor {name}"))?,
        };
        if tensor.dims() != shape {
            bail!("tensor {name} has shape {:?}, expected {shape:?}", tensor.dims());
        }
        Ok(tensor.to_dtype(DType::F32)?)
    }
}

impl Bert {
    /// Loads the encoder from a safetensors file in the Hugging Face BERT layout. Tensors in
    /// `overrides` (same names) replace the base ones, e.g. fine-tuned top layers.
    pub fn load(config: BertConfig, weights: &Path, overrides: &HashMap<String, Tensor>) -> Result<Self> {
        if let Some(act) = &config.hidden_act {
            if act != "gelu" {
                bail!("unsupported activation {act:?}: this encoder implements gelu only");
            }
        }
        if config.hidden_size % config.num_attention_heads != 0 {
            bail!("hidden size {} is not a multiple of {} heads", config.hidden_size, config.num_attention_heads);
        }
        let device = Device::Cpu;
        // SAFETY: the weights file is mapped read-only; fetch-base writes it once and replaces
        // the whole folder by rename, never rewriting the file in place.
        let base = unsafe { candle_core::safetensors::MmapedSafetensors::new(weights)? };
        let source = Source { base: &base, overrides, device: &device };
        let h = config.hidden_size;
        let words = WordTable::open(weights, config.vocab_size, h)?;

        let positions = source.get("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h])?;
        let token_types = source.get("embeddings.token_type_embeddings.weight", &[2, h])?;
        let positions = positions.broadcast_add(&token_types.get(0)?)?;
        let embedding_norm = Norm {
            weight: source.get("embeddings.LayerNorm.weight", &[h])?,
            bias: source.get("embeddings.LayerNorm.bias", &[h])?,
            eps: config.layer_norm_eps,
        };
        let packed = (0..config.num_hidden_layers)
            .map(|i| PackedLayer::from_layer(&Layer::load(&source, &config, i)?, &config))
            .collect::<Result<Vec<_>>>()?;
        let plain = PlainEmbeddings {
            positions: positions.flatten_all()?.to_vec1()?,
            norm_weight: embedding_norm.weight.to_vec1()?,
            norm_bias: embedding_norm.bias.to_vec1()?,
        };
        Ok(Bert { config, words, positions, embedding_norm, plain, packed, layers: OnceLock::new(), device })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The layers as candle tensors. The first call builds them from the packed weights (about
    /// 85 MB for multilingual-e5-small); inference does not need them.
    pub fn layers(&self) -> &[Layer] {
        self.layers.get_or_init(|| {
            self.packed
                .iter()
                .map(|layer| layer.to_layer(self.config.layer_norm_eps, &self.device))
                .collect::<Result<Vec<_>>>()
                // Only tensor creation from vectors of the right size can fail here.
                .expect("rebuilding candle layers from packed weights")
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Pads `sequences` into one id list (padding is `u32::MAX`), the mask and the attention bias.
    pub fn batch(&self, sequences: &[Vec<u32>]) -> Result<(Vec<u32>, usize, Batch)> {
        let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
        let longest = lengths.iter().copied().max().unwrap_or(0);
        let mut ids = Vec::with_capacity(sequences.len() * longest);
        for sequence in sequences {
            ids.extend_from_slice(sequence);
            ids.extend(std::iter::repeat_n(u32::MAX, longest - sequence.len()));
        }
        Ok((ids, longest, Batch::from_lengths(&lengths, &self.device)?))
    }

    /// Token plus position embeddings after layer norm: `[batch, seq, hidden]`. Padding
    /// positions (`u32::MAX` from [`Bert::batch`]) get zero vectors; the mask hides them.
    pub fn embed_tokens(&self, ids: &[u32], batch: usize, seq: usize) -> Result<Tensor> {
        let h = self.config.hidden_size;
        let mut data = vec![0f32; ids.len() * h];
        for (row, &id) in data.chunks_exact_mut(h).zip(ids) {
            if id != u32::MAX {
                self.words.read_row(id as usize, row)?;
            }
        }
        let words = Tensor::from_vec(data, (batch, seq, h), &self.device)?;
        let positions = self.positions.narrow(0, 0, seq)?;
        let summed = words.broadcast_add(&positions)?;
        Ok(self.embedding_norm.forward(&summed, Mode::Inference)?)
    }

    /// Runs layers `from..to` on hidden states `[batch, seq, hidden]`.
    pub fn run_layers(&self, hidden: Tensor, batch: &Batch, from: usize, to: usize) -> Result<Tensor> {
        let mut hidden = hidden;
        for layer in &self.layers()[from..to] {
            hidden = layer.forward(&hidden, &batch.attention_bias, &self.config, Mode::Inference)?;
        }
        Ok(hidden)
    }

    /// Last hidden states of a batch of token sequences (each at most the model's maximum),
    /// padded to the longest one: `[batch, longest, hidden]`, and the batch's mask. Computed by
    /// [`Bert::forward_packed`].
    pub fn forward(&self, sequences: &[Vec<u32>]) -> Result<(Tensor, Batch)> {
        let h = self.config.hidden_size;
        let packed = self.forward_packed(sequences)?;
        let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
        let longest = lengths.iter().copied().max().unwrap_or(0);
        let mut padded = vec![0f32; lengths.len() * longest * h];
        let mut rows = packed.chunks_exact(h);
        for (sequence, &len) in padded.chunks_exact_mut(longest * h).zip(&lengths) {
            for out in sequence.chunks_exact_mut(h).take(len) {
                out.copy_from_slice(rows.next().expect("packed states hold every token"));
            }
        }
        let hidden = Tensor::from_vec(padded, (lengths.len(), longest, h), &self.device)?;
        Ok((hidden, Batch::from_lengths(&lengths, &self.device)?))
    }

    /// Last hidden states of token sequences (each at most the model's maximum), one sequence
    /// after another with no padding: `[sum of lengths, hidden]`, row-major.
    ///
    /// This is the inference path of the service ([`super::infer`]); it computes the same
    /// function as [`Bert::forward_candle`], up to float rounding.
    pub fn forward_packed(&self, sequences: &[Vec<u32>]) -> Result<Vec<f32>> {
        let last = self.config.num_hidden_layers;
        Ok(self.forward_packed_taps(sequences, &[last])?.pop().expect("one tap requested"))
    }

    /// Runs the layers up to the last of `taps` and returns the packed hidden states after each
    /// layer count in `taps` (1 to the number of layers, increasing), laid out as
    /// [`Bert::forward_packed`] lays them out.
    pub fn forward_packed_taps(&self, sequences: &[Vec<u32>], taps: &[usize]) -> Result<Vec<Vec<f32>>> {
        check_taps(taps, self.config.num_hidden_layers)?;
        let h = self.config.hidden_size;
        let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
        if let Some(&len) = lengths.iter().find(|&&len| len > self.config.max_position_embeddings) {
            bail!("a sequence has {len} tokens, more than the model's {}", self.config.max_position_embeddings);
        }
        let mut x = vec![0f32; lengths.iter().sum::<usize>() * h];
        let mut rows = x.chunks_exact_mut(h);
        for sequence in sequences {
            for (&id, position) in sequence.iter().zip(self.plain.positions.chunks_exact(h)) {
                let row = rows.next().expect("x has a row per token");
                self.words.read_row(id as usize, row)?;
                for (value, p) in row.iter_mut().zip(position) {
                    *value += p;
                }
            }
        }
        let eps = self.config.layer_norm_eps as f32;
        infer::norm_rows(&mut x, h, &self.plain.norm_weight, &self.plain.norm_bias, eps);
        let mut states = Vec::with_capacity(taps.len());
        let last = taps[taps.len() - 1];
        infer::run_layers_tapped(&self.packed[..last], &self.config, &mut x, &lengths, |done, x| {
            if taps.contains(&done) && done != last {
                states.push(x.to_vec());
            }
        })?;
        states.push(x);
        Ok(states)
    }

    /// [`Bert::forward`] through the candle layers of [`Layer::forward`] in
    /// [`Mode::Inference`], on the padded batch: the reference that the packed path is tested
    /// against.
    pub fn forward_candle(&self, sequences: &[Vec<u32>]) -> Result<(Tensor, Batch)> {
        let (ids, seq, batch) = self.batch(sequences)?;
        if seq > self.config.max_position_embeddings {
            bail!("a sequence has {seq} tokens, more than the model's {}", self.config.max_position_embeddings);
        }
        let hidden = self.embed_tokens(&ids, sequences.len(), seq)?;
        let hidden = self.run_layers(hidden, &batch, 0, self.config.num_hidden_layers)?;
        Ok((hidden, batch))
    }
}

impl Layer {
    fn load(source: &Source, config: &BertConfig, index: usize) -> Result<Self> {
        let h = config.hidden_size;
        let i = config.intermediate_size;
        let names = layer_tensor_names(index);
        let get = |k: usize, shape: &[usize]| source.get(&names[k], shape);
        let eps = config.layer_norm_eps;
        // HF stores linear weights as [out, in]; the forward pass wants [in, out].
        let qkv_weight = Tensor::cat(&[get(0, &[h, h])?, get(2, &[h, h])?, get(4, &[h, h])?], 0)?.t()?.contiguous()?;
        let qkv_bias = Tensor::cat(&[get(1, &[h])?, get(3, &[h])?, get(5, &[h])?], 0)?;
        Ok(Layer {
            qkv_weight,
            qkv_bias,
            attention_out_weight: get(6, &[h, h])?.t()?.contiguous()?,
            attention_out_bias: get(7, &[h])?,
            attention_norm: Norm { weight: get(8, &[h])?, bias: get(9, &[h])?, eps },
            intermediate_weight: get(10, &[i, h])?.t()?.contiguous()?,
            intermediate_bias: get(11, &[i])?,
            output_weight: get(12, &[h, i])?.t()?.contiguous()?,
            output_bias: get(13, &[h])?,
            output_norm: Norm { weight: get(14, &[h])?, bias: get(15, &[h])?, eps },
        })
    }

    /// Tensors under their Hugging Face names, in `[out, in]` layout, for saving.
    pub fn to_named_tensors(&self, index: usize, hidden: usize) -> Result<Vec<(String, Tensor)>> {
        let names = layer_tensor_names(index);
        let qkv_t = self.qkv_weight.t()?;
        let tensors = [
            qkv_t.narrow(0, 0, hidden)?,
            self.qkv_bias.narrow(0, 0, hidden)?,
            qkv_t.narrow(0, hidden, hidden)?,
            self.qkv_bias.narrow(0, hidden, hidden)?,
            qkv_t.narrow(0, 2 * hidden, hidden)?,
            self.qkv_bias.narrow(0, 2 * hidden, hidden)?,
            self.attention_out_weight.t()?,
            self.attention_out_bias.clone(),
            self.attention_norm.weight.clone(),
            self.attention_norm.bias.clone(),
            self.intermediate_weight.t()?,
            self.intermediate_bias.clone(),
            self.output_weight.t()?,
            self.output_bias.clone(),
            self.output_norm.weight.clone(),
            self.output_norm.bias.clone(),
        ];
        names
            .into_iter()
            .zip(tensors)
            .map(|(name, t)| Ok((name, t.detach().contiguous()?)))
            .collect()
    }

    /// Returns all weight tensors in a fixed order, for building trainable copies.
    pub fn tensors(&self) -> Vec<&Tensor> {
        vec![
            &self.qkv_weight,
            &self.qkv_bias,
            &self.attention_out_weight,
            &self.attention_out_bias,
            &self.attention_norm.weight,
            &self.attention_norm.bias,
            &self.intermediate_weight,
            &self.intermediate_bias,
            &self.output_weight,
            &self.output_bias,
            &self.output_norm.weight,
            &self.output_norm.bias,
        ]
    }

    /// Rebuilds a layer from tensors given in the order of [`Layer::tensors`].
    pub fn from_tensors(tensors: &[Tensor], eps: f64) -> Result<Self> {
        if tensors.len() != 12 {
            bail!("a layer has 12 tensors, got {}", tensors.len());
        }
        let t = |k: usize| tensors[k].clone();
        Ok(Layer {
            qkv_weight: t(0),
            qkv_bias: t(1),
            attention_out_weight: t(2),
            attention_out_bias: t(3),
            attention_norm: Norm { weight: t(4), bias: t(5), eps },
            intermediate_weight: t(6),
            intermediate_bias: t(7),
            output_weight: t(8),
            output_bias: t(9),
            output_norm: Norm { weight: t(10), bias: t(11), eps },
        })
    }

    /// Applies the transformer layer to `[batch, seq, hidden]`.
    pub fn forward(&self, x: &Tensor, attention_bias: &Tensor, config: &BertConfig, mode: Mode) -> Result<Tensor> {
        let (b, s, h) = x.dims3()?;
        let heads = config.num_attention_heads;
        let d = config.head_dim();
        let flat = x.reshape((b * s, h))?;
        let split = mode == Mode::Inference && b * s <= SPLIT_MATMUL_MAX_ROWS;
        let project = |x: &Tensor, weight: &Tensor, bias: &Tensor| -> Result<Tensor> {
            let product = if split { matmul_on_two_threads(x, weight)? } else { x.matmul(weight)? };
            Ok(product.broadcast_add(bias)?)
        };
        let qkv = project(&flat, &self.qkv_weight, &self.qkv_bias)?;
        // [b*s, 3h] -> [3, b, heads, s, d]
        let qkv = qkv.reshape((b, s, 3, heads, d))?.permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * (1.0 / (d as f64).sqrt()))?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(attention_bias)?;
        let probs = match mode {
            Mode::Inference => candle_nn::ops::softmax_last_dim(&scores)?,
            Mode::Training => softmax_differentiable(&scores)?,
        };
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b * s, h))?;
        let attended = project(&context, &self.attention_out_weight, &self.attention_out_bias)?;
        let x1 = self.attention_norm.forward(&(attended + &flat)?, mode)?;
        let inner = project(&x1, &self.intermediate_weight, &self.intermediate_bias)?.gelu_erf()?;
        let out = project(&inner, &self.output_weight, &self.output_bias)?;
        let x2 = self.output_norm.forward(&(out + &x1)?, mode)?;
        Ok(x2.reshape((b, s, h))?)
    }
}

impl Norm {
    pub fn forward(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        match mode {
            Mode::Inference => candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32),
            Mode::Training => {
                let mean = x.mean_keepdim(D::Minus1)?;
                let centred = x.broadcast_sub(&mean)?;
                let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
                let scaled = centred.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
                scaled.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
            }
        }
    }
}

/// Largest number of token rows for which a weight product is split over two threads.
///
/// On a small input (one short message) the matrix-multiply kernel gains nothing from a second
/// thread, so each half of the weight's columns goes to one rayon thread instead. Larger inputs
/// keep the kernel's own threading.
const SPLIT_MATMUL_MAX_ROWS: usize = 64;

/// Computes `x · weight` as two products over the halves of the weight's columns, in parallel.
fn matmul_on_two_threads(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let columns = weight.dim(1)?;
    let half = columns / 2;
    let (left, right) = rayon::join(
        || x.matmul(&weight.narrow(1, 0, half)?),
        || x.matmul(&weight.narrow(1, half, columns - half)?),
    );
    Ok(Tensor::cat(&[left?, right?], 1)?)
}

/// Softmax over the last dimension built from ops that all have a backward pass. The row
/// maximum is subtracted for stability and detached: it does not change the result.
fn softmax_differentiable(x: &Tensor) -> candle_core::Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let exp = shifted.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)
}

impl WordTable {
    fn open(weights: &Path, rows: usize, dim: usize) -> Result<Self> {
        let file = File::open(weights).with_context(|| format!("failed to open {}", weights.display()))?;
        // SAFETY: see Bert::load; the file is never modified in place.
        let map = unsafe { Mmap::map(&file)? };
        let parsed = safetensors::SafeTensors::deserialize(&map)
            .map_err(|e| anyhow!("{} is not a safetensors file: {e}", weights.display()))?;
        let view = parsed.tensor(WORD_EMBEDDINGS).map_err(|e| anyhow!("missing {WORD_EMBEDDINGS}: {e}"))?;
        if view.dtype() != safetensors::Dtype::F32 || view.shape() != [rows, dim] {
            bail!("{WORD_EMBEDDINGS} must be F32 [{rows}, {dim}], found {:?} {:?}", view.dtype(), view.shape());
        }
        let offset = view.data().as_ptr() as usize - map.as_ptr() as usize;
        Ok(WordTable { file, offset, rows, dim })
    }

    fn read_row(&self, id: usize, out: &mut [f32]) -> Result<()> {
        if id >= self.rows {
            bail!("token id {id} is outside the vocabulary of {}", self.rows);
        }
        let start = self.offset + id * self.dim * 4;
        let mut bytes = vec![0u8; self.dim * 4];
        self.file
            .read_exact_at(&mut bytes, start as u64)
            .with_context(|| format!("failed to read the embedding row of token {id}"))?;
        for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *value = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn tiny_config() -> BertConfig {
        BertConfig {
            vocab_size: 10,
            hidden_size: 8,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 16,
            max_position_embeddings: 16,
            layer_norm_eps: 1e-12,
            hidden_act: Some("gelu".into()),
        }
    }

    fn random_layer(device: &Device) -> Vec<Var> {
        let shapes: [&[usize]; 12] = [&[8, 24], &[24], &[8, 8], &[8], &[8], &[8], &[8, 16], &[16], &[16, 8], &[8], &[8], &[8]];
        shapes
            .iter()
            .map(|shape| Var::from_tensor(&Tensor::randn(0f32, 0.5, *shape, device).unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn training_mode_matches_inference() {
        let device = Device::Cpu;
        let config = tiny_config();
        let vars = random_layer(&device);
        let layer = Layer::from_tensors(&vars.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>(), 1e-12).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 5, 8), &device).unwrap();
        let batch = Batch::from_lengths(&[5, 3], &device).unwrap();

        let fast = layer.forward(&x, &batch.attention_bias, &config, Mode::Inference).unwrap();
        let slow = layer.forward(&x, &batch.attention_bias, &config, Mode::Training).unwrap();
        let gap = (fast - &slow).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(gap < 1e-4, "inference and training outputs differ by {gap}");

        let grads = slow.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for (k, var) in vars.iter().enumerate() {
            let grad = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("tensor {k} got no gradient"));
            let norm = grad.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0, "tensor {k} has a zero gradient");
        }
    }

    #[test]
    fn split_matmul_matches_plain() {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (5, 8), &device).unwrap();
        let weight = Tensor::randn(0f32, 1.0, (8, 13), &device).unwrap();

        let plain = x.matmul(&weight).unwrap();
        let split = matmul_on_two_threads(&x, &weight).unwrap();
        let gap = (plain - split).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(gap < 1e-5, "split and plain products differ by {gap}");
    }

    fn max_gap(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    /// Runs random layers on sequences of these lengths through the candle path (padded) and
    /// the packed path of `infer`, and returns the largest difference over real tokens.
    fn packed_gap(lengths: &[usize]) -> f32 {
        let device = Device::Cpu;
        let config = BertConfig { num_hidden_layers: 2, max_position_embeddings: 128, ..tiny_config() };
        let layers: Vec<Layer> = (0..2)
            .map(|_| {
                let tensors: Vec<Tensor> = random_layer(&device).iter().map(|v| v.as_tensor().clone()).collect();
                Layer::from_tensors(&tensors, 1e-12).unwrap()
            })
            .collect();
        let packed: Vec<PackedLayer> = layers.iter().map(|l| PackedLayer::from_layer(l, &config).unwrap()).collect();
        let longest = *lengths.iter().max().unwrap();
        let x = Tensor::randn(0f32, 1.0, (lengths.len(), longest, 8), &device).unwrap();
        let batch = Batch::from_lengths(lengths, &device).unwrap();

        let mut reference = x.clone();
        for layer in &layers {
            reference = layer.forward(&reference, &batch.attention_bias, &config, Mode::Inference).unwrap();
        }
        let real = |t: &Tensor| -> Tensor {
            let rows: Vec<Tensor> = lengths.iter().enumerate().map(|(b, &len)| t.get(b).unwrap().narrow(0, 0, len).unwrap()).collect();
            Tensor::cat(&rows, 0).unwrap()
        };
        let mut states: Vec<f32> = real(&x).flatten_all().unwrap().to_vec1().unwrap();
        infer::run_layers(&packed, &config, &mut states, lengths).unwrap();
        let states = Tensor::from_vec(states, (lengths.iter().sum::<usize>(), 8), &device).unwrap();
        max_gap(&real(&reference), &states)
    }

    #[test]
    fn packed_path_matches_candle_on_a_short_batch() {
        // Few rows: weight products split by columns.
        let gap = packed_gap(&[5, 3, 1]);
        assert!(gap < 1e-4, "packed and candle outputs differ by {gap}");
    }

    #[test]
    fn packed_path_matches_candle_on_a_long_batch() {
        // Many rows: weight products split by rows, when the pool has several threads.
        let gap = packed_gap(&[120, 97, 7, 64]);
        assert!(gap < 1e-4, "packed and candle outputs differ by {gap}");
    }

    /// Writes random weights for `config` to a safetensors file in `dir`.
    fn random_weights_file(config: &BertConfig, dir: &Path) -> std::path::PathBuf {
        let device = Device::Cpu;
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let mut tensors = HashMap::new();
        let mut add = |name: String, shape: &[usize]| {
            tensors.insert(name, Tensor::randn(0f32, 0.5, shape, &device).unwrap());
        };
        add(WORD_EMBEDDINGS.into(), &[config.vocab_size, h]);
        add("embeddings.position_embeddings.weight".into(), &[config.max_position_embeddings, h]);
        add("embeddings.token_type_embeddings.weight".into(), &[2, h]);
        add("embeddings.LayerNorm.weight".into(), &[h]);
        add("embeddings.LayerNorm.bias".into(), &[h]);
        for layer in 0..config.num_hidden_layers {
            let shapes: [&[usize]; 16] =
                [&[h, h], &[h], &[h, h], &[h], &[h, h], &[h], &[h, h], &[h], &[h], &[h], &[i, h], &[i], &[h, i], &[h], &[h], &[h]];
            for (name, shape) in layer_tensor_names(layer).into_iter().zip(shapes) {
                add(name, shape);
            }
        }
        let path = dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        path
    }

    #[test]
    fn packed_forward_matches_candle_from_a_weights_file() {
        let config = BertConfig { num_hidden_layers: 2, ..tiny_config() };
        let dir = tempfile::tempdir().unwrap();
        let path = random_weights_file(&config, dir.path());
        let bert = Bert::load(config, &path, &HashMap::new()).unwrap();

        let sequences = vec![vec![0, 5, 9, 2, 2, 7, 1], vec![0, 3, 1], vec![4]];
        let (fast, fast_batch) = bert.forward(&sequences).unwrap();
        let (reference, reference_batch) = bert.forward_candle(&sequences).unwrap();
        // Padding rows differ (zeros against computed values): compare under the mask.
        let mask = reference_batch.mask.unsqueeze(2).unwrap();
        let gap = max_gap(&fast.broadcast_mul(&mask).unwrap(), &reference.broadcast_mul(&mask).unwrap());
        assert!(gap < 1e-4, "packed and candle forward passes differ by {gap}");
        assert_eq!(max_gap(&fast_batch.mask, &reference_batch.mask), 0.0);
    }

    #[test]
    fn taps_return_requested_layer_states() {
        let config = BertConfig { num_hidden_layers: 3, ..tiny_config() };
        let dir = tempfile::tempdir().unwrap();
        let path = random_weights_file(&config, dir.path());
        let bert = Bert::load(config.clone(), &path, &HashMap::new()).unwrap();
        let sequences = vec![vec![0, 5, 9, 2, 1], vec![0, 3, 1]];
        let taps = bert.forward_packed_taps(&sequences, &[1, 3]).unwrap();
        assert_eq!(taps.len(), 2);
        assert_eq!(taps[1], bert.forward_packed(&sequences).unwrap());
        // The same file read as a one-layer model stops after the first layer.
        let first_only = Bert::load(BertConfig { num_hidden_layers: 1, ..config }, &path, &HashMap::new()).unwrap();
        assert_eq!(taps[0], first_only.forward_packed(&sequences).unwrap());
        assert_ne!(taps[0], taps[1]);
        for bad in [&[][..], &[0], &[4], &[2, 2], &[3, 1]] {
            assert!(bert.forward_packed_taps(&sequences, bad).is_err(), "taps {bad:?} were accepted");
        }
    }

    #[test]
    fn padding_does_not_change_real_positions() {
        let device = Device::Cpu;
        let config = tiny_config();
        let vars = random_layer(&device);
        let layer = Layer::from_tensors(&vars.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>(), 1e-12).unwrap();
        let short = Tensor::randn(0f32, 1.0, (1, 3, 8), &device).unwrap();
        let padded = short.pad_with_zeros(1, 0, 4).unwrap();

        let alone = layer.forward(&short, &Batch::from_lengths(&[3], &device).unwrap().attention_bias, &config, Mode::Inference).unwrap();
        let bias = Tensor::new(&[0f32, 0., 0., -1e9, -1e9, -1e9, -1e9], &device).unwrap().reshape((1, 1, 1, 7)).unwrap();
        let in_batch = layer.forward(&padded, &bias, &config, Mode::Inference).unwrap().narrow(1, 0, 3).unwrap();
        let gap = (alone - in_batch).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(gap < 1e-5, "padding changed real positions by {gap}");
    }
}
