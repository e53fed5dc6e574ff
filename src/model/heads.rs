//! Classifier heads on top of the frozen sentence embedding: a shared hidden layer, then one
//! linear output per task (categories, intent, urgency, speaker).
//!
//! Category outputs are independent logits (sigmoid, multi-label); the other three are softmax
//! logits. The same `forward` serves training and inference, so what is trained is what runs.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::lexical::{Lexical, SparseFeatures};
use crate::triage::taxonomy::{CATEGORIES, INTENTS, SPEAKERS, URGENCIES};

/// File name of the head weights in a model folder.
pub const HEADS_FILE: &str = "heads.safetensors";

/// Shape of the heads, stored in the model manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadsConfig {
    pub input_dim: usize,
    pub hidden_dim: usize,
    /// Hashed lexical feature buckets, fed to a linear layer beside the embedding MLP.
    pub lexical_buckets: usize,
    /// Number of ensemble members, each trained with a different fold held out.
    #[serde(default = "one_member")]
    pub members: usize,
}

fn one_member() -> usize {
    1
}

/// Total outputs of all heads, the width of the lexical layer.
const OUTPUTS: usize = CATEGORIES.len() + INTENTS.len() + URGENCIES.len() + SPEAKERS.len();

/// Raw outputs for a batch: logits, one row per input.
pub struct HeadOutputs {
    pub categories: Tensor,
    pub intent: Tensor,
    pub urgency: Tensor,
    pub speaker: Tensor,
}

/// Probabilities for one input, in the label order of the taxonomy.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadScores {
    pub categories: Vec<f32>,
    pub intent: Vec<f32>,
    pub urgency: Vec<f32>,
    pub speaker: Vec<f32>,
}

struct Linear {
    weight: Var,
    bias: Var,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.as_tensor().t()?)?.broadcast_add(self.bias.as_tensor())
    }

    /// Glorot-uniform weights and zero bias, drawn from a seeded generator for reproducibility.
    fn init(out_dim: usize, in_dim: usize, rng: &mut StdRng, device: &Device) -> Result<Self> {
        let limit = (6.0 / (in_dim + out_dim) as f32).sqrt();
        let values: Vec<f32> = (0..out_dim * in_dim).map(|_| rng.gen_range(-limit..limit)).collect();
        Ok(Linear {
            weight: Var::from_tensor(&Tensor::from_vec(values, (out_dim, in_dim), device)?)?,
            bias: Var::zeros(out_dim, DType::F32, device)?,
        })
    }
}

pub struct Heads {
    pub config: HeadsConfig,
    /// Per-dimension mean and inverse standard deviation of the training embeddings. e5
    /// embeddings all lie in a narrow cone (pairwise cosines around 0.8), so standardising
    /// them first makes the heads far easier to fit. Not trained by the optimiser.
    input_mean: Tensor,
    input_scale: Tensor,
    pub lexical: Lexical,
    /// Lexical features to all outputs at once, in the order categories, intent, urgency, speaker.
    lexical_linear: Linear,
    hidden: Linear,
    categories: Linear,
    intent: Linear,
    urgency: Linear,
    speaker: Linear,
}

const LAYER_NAMES: [&str; 6] = ["hidden", "categories", "intent", "urgency", "speaker", "lexical"];

impl Heads {
    /// Creates randomly initialised heads for training, standardising inputs with the mean and
    /// standard deviation of `embeddings` (`[examples, input_dim]`).
    pub fn init(config: HeadsConfig, embeddings: &Tensor, lexical: Lexical, rng: &mut StdRng, device: &Device) -> Result<Self> {
        let hidden = config.hidden_dim;
        let input_mean = embeddings.mean(0)?;
        let variance = embeddings.broadcast_sub(&input_mean)?.sqr()?.mean(0)?;
        let input_scale = (variance + 1e-8)?.sqrt()?.recip()?;
        Ok(Heads {
            config,
            input_mean,
            input_scale,
            lexical,
            lexical_linear: Linear::init(OUTPUTS, config.lexical_buckets, rng, device)?,
            hidden: Linear::init(hidden, config.input_dim, rng, device)?,
            categories: Linear::init(CATEGORIES.len(), hidden, rng, device)?,
            intent: Linear::init(INTENTS.len(), hidden, rng, device)?,
            urgency: Linear::init(URGENCIES.len(), hidden, rng, device)?,
            speaker: Linear::init(SPEAKERS.len(), hidden, rng, device)?,
        })
    }

    fn layers(&self) -> [&Linear; 6] {
        [&self.hidden, &self.categories, &self.intent, &self.urgency, &self.speaker, &self.lexical_linear]
    }

    /// Trainable variables, for the optimiser.
    pub fn vars(&self) -> Vec<Var> {
        self.layers().iter().flat_map(|l| [l.weight.clone(), l.bias.clone()]).collect()
    }

    /// Runs the heads on embeddings `[batch, input_dim]` and dense lexical features
    /// `[batch, lexical_buckets]`. `dropout_mask`, when given, multiplies the hidden activations
    /// (training only).
    pub fn forward(&self, embeddings: &Tensor, lexical: &Tensor, dropout_mask: Option<&Tensor>) -> candle_core::Result<HeadOutputs> {
        let standardized = embeddings.broadcast_sub(&self.input_mean)?.broadcast_mul(&self.input_scale)?;
        let mut hidden = self.hidden.forward(&standardized)?.gelu_erf()?;
        if let Some(mask) = dropout_mask {
            hidden = hidden.mul(mask)?;
        }
        let lexical = self.lexical_linear.forward(lexical)?;
        let slice = |start: usize, len: usize| lexical.narrow(1, start, len);
        let intent_start = CATEGORIES.len();
        let urgency_start = intent_start + INTENTS.len();
        let speaker_start = urgency_start + URGENCIES.len();
        Ok(HeadOutputs {
            categories: (self.categories.forward(&hidden)? + slice(0, CATEGORIES.len())?)?,
            intent: (self.intent.forward(&hidden)? + slice(intent_start, INTENTS.len())?)?,
            urgency: (self.urgency.forward(&hidden)? + slice(urgency_start, URGENCIES.len())?)?,
            speaker: (self.speaker.forward(&hidden)? + slice(speaker_start, SPEAKERS.len())?)?,
        })
    }

    /// Returns probabilities for each row of `embeddings`, with the lexical features of the
    /// matching texts.
    pub fn predict(&self, embeddings: &Tensor, lexical: &[&SparseFeatures]) -> Result<Vec<HeadScores>> {
        let lexical = self.lexical.dense(lexical, embeddings.device())?;
        self.predict_dense(embeddings, &lexical)
    }

    /// Returns probabilities for each row of `embeddings`, with the dense lexical features
    /// `[batch, lexical_buckets]` of the matching texts.
    fn predict_dense(&self, embeddings: &Tensor, lexical: &Tensor) -> Result<Vec<HeadScores>> {
        let outputs = self.forward(embeddings, lexical, None)?;
        let categories: Vec<Vec<f32>> = candle_nn::ops::sigmoid(&outputs.categories)?.to_vec2()?;
        let softmax = |t: &Tensor| -> Result<Vec<Vec<f32>>> { Ok(candle_nn::ops::softmax_last_dim(t)?.to_vec2()?) };
        let (intent, urgency, speaker) = (softmax(&outputs.intent)?, softmax(&outputs.urgency)?, softmax(&outputs.speaker)?);
        Ok((0..categories.len())
            .map(|i| HeadScores {
                categories: categories[i].clone(),
                intent: intent[i].clone(),
                urgency: urgency[i].clone(),
                speaker: speaker[i].clone(),
            })
            .collect())
    }

    /// Adds this member's tensors to `tensors`, each name prefixed with `prefix`. The IDF vector
    /// is shared by all members and saved once by [`HeadEnsemble::save`].
    fn insert_tensors(&self, prefix: &str, tensors: &mut HashMap<String, Tensor>) {
        tensors.insert(format!("{prefix}input.mean"), self.input_mean.clone());
        tensors.insert(format!("{prefix}input.scale"), self.input_scale.clone());
        for (name, layer) in LAYER_NAMES.iter().zip(self.layers()) {
            tensors.insert(format!("{prefix}{name}.weight"), layer.weight.as_tensor().clone());
            tensors.insert(format!("{prefix}{name}.bias"), layer.bias.as_tensor().clone());
        }
    }

    /// Takes one member's tensors (names prefixed with `prefix`) and checks every shape against
    /// `config` and the taxonomy.
    fn from_tensors(tensors: &HashMap<String, Tensor>, prefix: &str, config: HeadsConfig, lexical: Lexical, path: &Path) -> Result<Self> {
        let take = |name: &str, out_dim: usize, in_dim: usize| -> Result<Linear> {
            let weight = tensors
                .get(&format!("{prefix}{name}.weight"))
                .with_context(|| format!("{} has no {prefix}{name}.weight", path.display()))?;
            let bias = tensors
                .get(&format!("{prefix}{name}.bias"))
                .with_context(|| format!("{} has no {prefix}{name}.bias", path.display()))?;
            if weight.dims() != [out_dim, in_dim] || bias.dims() != [out_dim] {
                anyhow::bail!(
                    "{}: {prefix}{name} has shape {:?}, expected [{out_dim}, {in_dim}]; the label scheme or head size changed, retrain",
                    path.display(),
                    weight.dims()
                );
            }
            Ok(Linear { weight: Var::from_tensor(weight)?, bias: Var::from_tensor(bias)? })
        };
        let input = |name: &str| -> Result<Tensor> {
            let tensor = tensors.get(&format!("{prefix}{name}")).with_context(|| format!("{} has no {prefix}{name}", path.display()))?;
            if tensor.dims() != [config.input_dim] {
                anyhow::bail!("{}: {prefix}{name} has shape {:?}, expected [{}]", path.display(), tensor.dims(), config.input_dim);
            }
            Ok(tensor.clone())
        };
        let hidden = config.hidden_dim;
        Ok(Heads {
            config,
            input_mean: input("input.mean")?,
            input_scale: input("input.scale")?,
            lexical,
            lexical_linear: take("lexical", OUTPUTS, config.lexical_buckets)?,
            hidden: take("hidden", hidden, config.input_dim)?,
            categories: take("categories", CATEGORIES.len(), hidden)?,
            intent: take("intent", INTENTS.len(), hidden)?,
            urgency: take("urgency", URGENCIES.len(), hidden)?,
            speaker: take("speaker", SPEAKERS.len(), hidden)?,
        })
    }
}

/// Heads trained on different folds of the training data. Their probabilities are averaged,
/// which steadies the scores of messages unlike any training example. All members share one
/// lexical vocabulary (IDF vector).
pub struct HeadEnsemble {
    members: Vec<Heads>,
}

impl HeadEnsemble {
    pub fn new(members: Vec<Heads>) -> Result<Self> {
        let Some(first) = members.first() else { anyhow::bail!("invalid ensemble: no member") };
        if members.iter().any(|m| m.config.input_dim != first.config.input_dim || m.lexical.idf != first.lexical.idf) {
            anyhow::bail!("ensemble members must share the input size and the lexical vocabulary");
        }
        Ok(HeadEnsemble { members })
    }

    pub fn members(&self) -> &[Heads] {
        &self.members
    }

    /// Returns the lexical vocabulary, shared by every member.
    pub fn lexical(&self) -> &Lexical {
        &self.members[0].lexical
    }

    /// Returns the shape recorded in the manifest, with the member count.
    pub fn config(&self) -> HeadsConfig {
        HeadsConfig { members: self.members.len(), ..self.members[0].config }
    }

    /// Returns the mean of the members' probabilities for each row of `embeddings`.
    pub fn predict(&self, embeddings: &Tensor, lexical: &[&SparseFeatures]) -> Result<Vec<HeadScores>> {
        // The members share the vocabulary, so the dense features are built once for all.
        let dense = self.lexical().dense(lexical, embeddings.device())?;
        let mut sum = self.members[0].predict_dense(embeddings, &dense)?;
        for member in &self.members[1..] {
            for (total, scores) in sum.iter_mut().zip(member.predict_dense(embeddings, &dense)?) {
                total.add(&scores);
            }
        }
        let scale = 1.0 / self.members.len() as f32;
        for scores in &mut sum {
            scores.scale(scale);
        }
        Ok(sum)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        let first = &self.members[0];
        let idf = Tensor::new(first.lexical.idf.as_slice(), first.input_mean.device())?;
        tensors.insert("lexical.idf".to_string(), idf);
        for (index, member) in self.members.iter().enumerate() {
            member.insert_tensors(&member_prefix(index, self.members.len()), &mut tensors);
        }
        candle_core::safetensors::save(&tensors, path).with_context(|| format!("failed to write {}", path.display()))
    }

    /// Loads `config.members` members and checks every tensor's shape against `config` and the
    /// taxonomy.
    pub fn load(path: &Path, config: HeadsConfig, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, device)
            .with_context(|| format!("failed to read head weights {}", path.display()))?;
        let idf = tensors.get("lexical.idf").with_context(|| format!("{} has no lexical.idf", path.display()))?;
        if idf.dims() != [config.lexical_buckets] {
            anyhow::bail!("{}: lexical.idf has shape {:?}, expected [{}]", path.display(), idf.dims(), config.lexical_buckets);
        }
        let lexical = Lexical { idf: idf.to_vec1()? };
        let members = (0..config.members.max(1))
            .map(|index| {
                let member_config = HeadsConfig { members: 1, ..config };
                Heads::from_tensors(&tensors, &member_prefix(index, config.members), member_config, lexical.clone(), path)
            })
            .collect::<Result<Vec<_>>>()?;
        let expected = 1 + members.len() * (2 + 2 * LAYER_NAMES.len());
        if tensors.len() != expected {
            anyhow::bail!(
                "{} contains {} tensors, but {} member(s) need {expected}: the manifest and the weights do not match, retrain",
                path.display(),
                tensors.len(),
                members.len()
            );
        }
        HeadEnsemble::new(members)
    }
}

/// Tensor name prefix of ensemble member `index`: none for a single member, so that a
/// single-member file reads like a plain set of heads.
fn member_prefix(index: usize, members: usize) -> String {
    if members <= 1 { String::new() } else { format!("member{index}.") }
}

impl HeadScores {
    fn add(&mut self, other: &HeadScores) {
        let pairs = [
            (&mut self.categories, &other.categories),
            (&mut self.intent, &other.intent),
            (&mut self.urgency, &other.urgency),
            (&mut self.speaker, &other.speaker),
        ];
        for (total, values) in pairs {
            for (t, v) in total.iter_mut().zip(values) {
                *t += v;
            }
        }
    }

    fn scale(&mut self, factor: f32) {
        for values in [&mut self.categories, &mut self.intent, &mut self.urgency, &mut self.speaker] {
            for v in values.iter_mut() {
                *v *= factor;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn save_load_round_trip_keeps_outputs() {
        let device = Device::Cpu;
        let config = HeadsConfig { input_dim: 8, hidden_dim: 5, lexical_buckets: 32, members: 1 };
        let input = Tensor::from_vec((0..16).map(|i| i as f32 / 16.0).collect::<Vec<_>>(), (2, 8), &device).unwrap();
        let texts = ["il me harcèle".to_string(), "bonjour".to_string()];
        let lexical = Lexical::fit(&texts, 32);
        let features: Vec<SparseFeatures> = texts.iter().map(|t| lexical.features(t)).collect();
        let rows: Vec<&SparseFeatures> = features.iter().collect();
        let heads = Heads::init(config, &input, lexical, &mut StdRng::seed_from_u64(1), &device).unwrap();
        let before = heads.predict(&input, &rows).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HEADS_FILE);
        HeadEnsemble::new(vec![heads]).unwrap().save(&path).unwrap();
        let loaded = HeadEnsemble::load(&path, config, &device).unwrap();
        assert_eq!(loaded.predict(&input, &rows).unwrap(), before);
    }

    #[test]
    fn probabilities_have_expected_shapes() {
        let device = Device::Cpu;
        let input = Tensor::rand(0f32, 1.0, (3, 8), &device).unwrap();
        let config = HeadsConfig { input_dim: 8, hidden_dim: 4, lexical_buckets: 16, members: 1 };
        let lexical = Lexical::fit(&["a".to_string()], 16);
        let heads = Heads::init(config, &input, lexical, &mut StdRng::seed_from_u64(2), &device).unwrap();
        let empty = SparseFeatures::new();
        let scores = heads.predict(&input, &[&empty, &empty, &empty]).unwrap();
        assert_eq!(scores.len(), 3);
        assert_eq!(scores[0].categories.len(), CATEGORIES.len());
        assert!((scores[0].urgency.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(scores[0].categories.iter().all(|p| (0.0..=1.0).contains(p)));
    }

    #[test]
    fn wrong_shape_is_rejected() {
        let device = Device::Cpu;
        let input = Tensor::rand(0f32, 1.0, (3, 8), &device).unwrap();
        let config = HeadsConfig { input_dim: 8, hidden_dim: 4, lexical_buckets: 16, members: 1 };
        let lexical = Lexical::fit(&["a".to_string()], 16);
        let heads = Heads::init(config, &input, lexical, &mut StdRng::seed_from_u64(3), &device).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HEADS_FILE);
        HeadEnsemble::new(vec![heads]).unwrap().save(&path).unwrap();
        let error = HeadEnsemble::load(&path, HeadsConfig { input_dim: 8, hidden_dim: 6, lexical_buckets: 16, members: 1 }, &device).err().unwrap();
        assert!(error.to_string().contains("retrain"), "{error}");
    }

    #[test]
    fn ensemble_averages_members_and_round_trips() {
        let device = Device::Cpu;
        let config = HeadsConfig { input_dim: 8, hidden_dim: 4, lexical_buckets: 16, members: 1 };
        let input = Tensor::rand(0f32, 1.0, (2, 8), &device).unwrap();
        let lexical = Lexical::fit(&["il me menace".to_string(), "merci".to_string()], 16);
        let features = [lexical.features("il me menace"), lexical.features("merci")];
        let rows: Vec<&SparseFeatures> = features.iter().collect();
        let members: Vec<Heads> = (0..3)
            .map(|seed| Heads::init(config, &input, lexical.clone(), &mut StdRng::seed_from_u64(seed), &device).unwrap())
            .collect();
        let single: Vec<Vec<HeadScores>> = members.iter().map(|m| m.predict(&input, &rows).unwrap()).collect();
        let ensemble = HeadEnsemble::new(members).unwrap();
        let averaged = ensemble.predict(&input, &rows).unwrap();
        for row in 0..2 {
            for c in 0..CATEGORIES.len() {
                let mean = single.iter().map(|s| s[row].categories[c]).sum::<f32>() / 3.0;
                assert!((averaged[row].categories[c] - mean).abs() < 1e-6);
            }
            assert!((averaged[row].urgency.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HEADS_FILE);
        ensemble.save(&path).unwrap();
        assert_eq!(ensemble.config().members, 3);
        let loaded = HeadEnsemble::load(&path, ensemble.config(), &device).unwrap();
        assert_eq!(loaded.predict(&input, &rows).unwrap(), averaged);
        // A manifest that names fewer members than the file contains is rejected.
        let error = HeadEnsemble::load(&path, HeadsConfig { members: 2, ..config }, &device).err().unwrap();
        assert!(error.to_string().contains("do not match"), "{error}");
    }
}
