//! Fine-tuning of the encoder's top layers together with temporary heads.
//!
//! The layers below the tuned ones stay frozen, so their output for each training text is
//! computed once and cached on disk. Each epoch then only runs the tuned layers, forward and
//! backward, with differentiable layer norm and softmax ([`Mode::Training`]). The tuned layers
//! are saved under their Hugging Face names, and the encoder loads them over the base tensors.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bert::{Batch, Layer, Mode};
use super::encoder::{l2_normalize, mean_pool, Encoder};

/// File of the tuned layers in a model folder.
pub const ENCODER_FILE: &str = "encoder.safetensors";

/// Manifest entry naming the tuned layers a classifier needs on top of the base encoder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunedEncoder {
    /// File in the model folder, with tensors named as in the base weights.
    pub file: String,
    /// Index of the first tuned layer; every layer from it to the last is tuned.
    pub first_layer: usize,
    /// sha256 of the file, checked at load.
    pub sha256: String,
}

/// Trainable copies of the top layers of an encoder.
pub struct TrainableLayers {
    pub first: usize,
    vars: Vec<Vec<Var>>,
    eps: f64,
}

impl TrainableLayers {
    /// Copies the layers `first..` of the encoder into trainable variables.
    pub fn from_encoder(encoder: &Encoder, first: usize) -> Result<Self> {
        let layers = encoder.bert().layers();
        if first >= layers.len() {
            bail!("cannot tune from layer {first}: the encoder has {} layers", layers.len());
        }
        let vars = layers[first..]
            .iter()
            .map(|layer| layer.tensors().into_iter().map(|t| Ok(Var::from_tensor(t)?)).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        Ok(TrainableLayers { first, vars, eps: encoder.bert().config().layer_norm_eps })
    }

    pub fn all_vars(&self) -> Vec<Var> {
        self.vars.iter().flatten().cloned().collect()
    }

    /// Returns the current weights as layers (sharing storage with the variables).
    pub fn layers(&self) -> Result<Vec<Layer>> {
        self.vars
            .iter()
            .map(|vars| Layer::from_tensors(&vars.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>(), self.eps))
            .collect()
    }

    /// Copies the current weights, for keeping the best epoch.
    pub fn snapshot(&self) -> Result<Vec<Tensor>> {
        Ok(self.all_vars().iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?)
    }

    pub fn restore(&self, snapshot: &[Tensor]) -> Result<()> {
        for (var, value) in self.all_vars().iter().zip(snapshot) {
            var.set(value)?;
        }
        Ok(())
    }

    /// Runs the tuned layers on cached hidden states and returns unit-norm sentence embeddings
    /// `[batch, hidden]`.
    pub fn embed(&self, encoder: &Encoder, hidden: &[&Tensor], mode: Mode) -> Result<Tensor> {
        let (mut x, batch) = pad_hidden(hidden)?;
        for layer in self.layers()? {
            x = layer.forward(&x, &batch.attention_bias, encoder.bert().config(), mode)?;
        }
        Ok(l2_normalize(&mean_pool(&x, &batch.mask)?)?)
    }

    /// Embeds many cached texts in batches of 32 with the fused inference kernels.
    pub fn embed_all(&self, encoder: &Encoder, hidden: &[Tensor]) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..hidden.len()).collect();
        order.sort_by_key(|&i| hidden[i].dim(0).unwrap_or(0));
        let mut out = vec![Vec::new(); hidden.len()];
        for chunk in order.chunks(32) {
            let inputs: Vec<&Tensor> = chunk.iter().map(|&i| &hidden[i]).collect();
            let rows: Vec<Vec<f32>> = self.embed(encoder, &inputs, Mode::Inference)?.detach().to_vec2()?;
            for (&i, row) in chunk.iter().zip(rows) {
                out[i] = row;
            }
        }
        Ok(out)
    }

    /// Writes the tuned layers to `path` and returns the manifest entry.
    pub fn save(&self, path: &Path) -> Result<TunedEncoder> {
        let hidden = self.vars[0][0].as_tensor().dim(0)?;
        let mut tensors = HashMap::new();
        for (offset, layer) in self.layers()?.iter().enumerate() {
            tensors.extend(layer.to_named_tensors(self.first + offset, hidden)?);
        }
        candle_core::safetensors::save(&tensors, path).with_context(|| format!("failed to write {}", path.display()))?;
        let bytes = fs::read(path)?;
        Ok(TunedEncoder {
            file: path.file_name().and_then(|n| n.to_str()).unwrap_or(ENCODER_FILE).to_string(),
            first_layer: self.first,
            sha256: hex::encode(Sha256::digest(&bytes)),
        })
    }
}

/// Reads the tuned layers named by a manifest entry, checking the file's sha256.
pub fn load_tuned(model_dir: &Path, tuned: &TunedEncoder) -> Result<HashMap<String, Tensor>> {
    let path = model_dir.join(&tuned.file);
    let bytes = fs::read(&path).with_context(|| format!("failed to read the tuned encoder layers {}", path.display()))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != tuned.sha256 {
        bail!(
            "{} has sha256 {actual}, but the manifest expects {}; restore the file or retrain with `cybertriage train`",
            path.display(),
            tuned.sha256
        );
    }
    Ok(candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?)
}

/// Pads `[len, hidden]` tensors into `[batch, longest, hidden]` with the matching mask.
fn pad_hidden(hidden: &[&Tensor]) -> Result<(Tensor, Batch)> {
    let lengths: Vec<usize> = hidden.iter().map(|t| t.dim(0)).collect::<candle_core::Result<_>>()?;
    let longest = lengths.iter().copied().max().unwrap_or(0);
    let padded = hidden
        .iter()
        .zip(&lengths)
        .map(|(t, &len)| t.pad_with_zeros(0, 0, longest - len))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let x = Tensor::stack(&padded, 0)?;
    let batch = Batch::from_lengths(&lengths, x.device())?;
    Ok((x, batch))
}

/// On-disk cache of the hidden states that enter the first tuned layer, keyed by the text's
/// sha256, per base checksum and layer. Lives outside the repository.
pub struct HiddenCache {
    path: PathBuf,
    states: HashMap<String, Tensor>,
    dirty: bool,
}

impl HiddenCache {
    pub fn open(dir: &Path, base_checksum: &str, layer: usize) -> Result<Self> {
        let path = dir.join(format!("hidden-{layer}-{}.safetensors", &base_checksum[..16.min(base_checksum.len())]));
        let states = if path.exists() { candle_core::safetensors::load(&path, &Device::Cpu)? } else { HashMap::new() };
        Ok(HiddenCache { path, states, dirty: false })
    }

    /// Returns, per text, the `[tokens, hidden]` states entering layer `layer`, computing the
    /// missing ones with the frozen layers below it.
    pub fn states(&mut self, encoder: &Encoder, layer: usize, texts: &[String]) -> Result<Vec<Tensor>> {
        let keys: Vec<String> = texts.iter().map(|t| hex::encode(Sha256::digest(t.as_bytes()))).collect();
        let mut missing: Vec<usize> = (0..texts.len()).filter(|&i| !self.states.contains_key(&keys[i])).collect();
        missing.sort_by_key(|&i| texts[i].len());
        missing.dedup_by_key(|i| keys[*i].clone());
        let bert = encoder.bert();
        for (done, chunk) in missing.chunks(16).enumerate() {
            let sequences = chunk.iter().map(|&i| encoder.tokenize(&texts[i])).collect::<Result<Vec<_>>>()?;
            let (ids, seq, batch) = bert.batch(&sequences)?;
            let hidden = bert.embed_tokens(&ids, sequences.len(), seq)?;
            let hidden = bert.run_layers(hidden, &batch, 0, layer)?;
            for (row, (&i, sequence)) in chunk.iter().zip(&sequences).enumerate() {
                let state = hidden.get(row)?.narrow(0, 0, sequence.len())?.contiguous()?;
                self.states.insert(keys[i].clone(), state);
            }
            self.dirty = true;
            if done % 20 == 0 {
                tracing::info!(done = (done + 1) * 16, total = missing.len(), layer, "computing frozen hidden states");
            }
        }
        Ok(keys.iter().map(|k| self.states[k].clone()).collect())
    }

    pub fn save(&self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent)?;
        }
        candle_core::safetensors::save(&self.states, &self.path)
            .with_context(|| format!("failed to write {}", self.path.display()))
    }
}

/// Two AdamW optimisers stepped on one backward pass: a small learning rate for the encoder
/// layers and the heads' own rate for the heads.
pub struct TwoRateOptimizer {
    layers: AdamW,
    heads: AdamW,
}

impl TwoRateOptimizer {
    pub fn new(layer_vars: Vec<Var>, layer_lr: f64, head_vars: Vec<Var>, head_lr: f64, weight_decay: f64) -> Result<Self> {
        Ok(TwoRateOptimizer {
            layers: AdamW::new(layer_vars, ParamsAdamW { lr: layer_lr, weight_decay: 0.01, ..Default::default() })?,
            heads: AdamW::new(head_vars, ParamsAdamW { lr: head_lr, weight_decay, ..Default::default() })?,
        })
    }

    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.layers.step(&grads)?;
        self.heads.step(&grads)?;
        Ok(())
    }
}

/// Shuffles example indices into batches of similar lengths, so batches carry less padding than
/// with a plain shuffle. Indices are sorted by length within groups of eight batches, and then
/// the batches are shuffled.
pub fn length_batches(lengths: &[usize], batch_size: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(rng);
    let bucket = batch_size * 8;
    let mut batches = Vec::new();
    for group in order.chunks_mut(bucket) {
        group.sort_by_key(|&i| lengths[i]);
        batches.extend(group.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(rng);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn length_batches_cover_every_index_once() {
        let lengths: Vec<usize> = (0..103).map(|i| (i * 37) % 50).collect();
        let mut rng = StdRng::seed_from_u64(1);
        let batches = length_batches(&lengths, 8, &mut rng);
        let mut seen: Vec<usize> = batches.concat();
        seen.sort();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| b.len() <= 8));
    }
}
