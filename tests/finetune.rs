//! Fine-tuned encoder layers: saving, loading over the real base encoder, and the sha256 pin.
//! Run `cybertriage fetch-base` first (`.ci/run` does).

use std::path::PathBuf;

use cybertriage::model::base::{default_models_dir, PinnedBase};
use cybertriage::model::encoder::Encoder;
use cybertriage::model::finetune::{HiddenCache, TrainableLayers, TunedEncoder, ENCODER_FILE};

const TEXTS: [&str; 3] = [
    "il a des photos de moi et il dit qu'il va les envoyer",
    "on se moque de moi dans le groupe de la classe",
    "ma fille passe ses nuits sur son téléphone",
];

fn base_dir() -> PathBuf {
    PinnedBase::load().unwrap().output_dir(&default_models_dir())
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cybertriage-finetune-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies the last layer into trainable variables and shifts the bias of its final layer norm,
/// so that the saved layer differs from the base one. (A shift of the dense output bias would
/// not do: the layer norm after it removes any constant shift.)
fn shifted_last_layer(encoder: &Encoder) -> TrainableLayers {
    let layers = TrainableLayers::from_encoder(encoder, 11).unwrap();
    let vars = layers.all_vars();
    let norm_bias = &vars[11];
    norm_bias.set(&(norm_bias.as_tensor() + 0.05).unwrap()).unwrap();
    layers
}

fn max_gap(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn tuned_layers_load_over_base() {
    let base = Encoder::load(&base_dir()).unwrap();
    let layers = shifted_last_layer(&base);
    let dir = scratch_dir("load");
    let tuned = layers.save(&dir.join(ENCODER_FILE)).unwrap();
    assert_eq!(tuned.first_layer, 11);

    let texts: Vec<String> = TEXTS.iter().map(|t| t.to_string()).collect();
    let mut cache = HiddenCache::open(&dir, &base.info().checksum, 11).unwrap();
    let states = cache.states(&base, 11, &texts).unwrap();
    let from_training = layers.embed_all(&base, &states).unwrap();

    let loaded = Encoder::load_tuned(&base_dir(), &dir, &tuned).unwrap();
    let from_loaded = loaded.embed(&TEXTS).unwrap();
    let from_base = base.embed(&TEXTS).unwrap();

    let gap = max_gap(&from_training, &from_loaded);
    assert!(gap < 1e-4, "training and loaded embeddings differ by {gap}");
    let shift = max_gap(&from_base, &from_loaded);
    assert!(shift > 1e-3, "the tuned layer did not change the embeddings (max gap {shift})");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tampered_tuned_file_is_rejected() {
    let base = Encoder::load(&base_dir()).unwrap();
    let dir = scratch_dir("tampered");
    let tuned = shifted_last_layer(&base).save(&dir.join(ENCODER_FILE)).unwrap();
    let wrong = TunedEncoder { sha256: "0".repeat(64), ..tuned };

    let error = Encoder::load_tuned(&base_dir(), &dir, &wrong).err().expect("a wrong sha256 must be rejected");
    assert!(error.to_string().contains("sha256"), "unexpected error: {error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
