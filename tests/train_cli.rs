//! `cybertriage train` run as a binary with the real base encoder on a small slice of
//! `training-data/`. Training must be reproducible: two runs with the same data and seed, each
//! with its own embedding cache, write the same weights and manifest, byte for byte. Another
//! seed must give other weights, so that the comparison can fail.
//!
//! Needs the base encoder under `models/base/` (`cybertriage fetch-base`). The slice (every
//! 40th example of each file) and 3 epochs keep each run under a minute on 2 cores.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cybertriage");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes every 40th line of each training file into `dir`, and returns the number of examples.
fn training_slice(dir: &Path) -> usize {
    fs::create_dir_all(dir).unwrap();
    let mut examples = 0;
    for entry in fs::read_dir(repo().join("training-data")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "jsonl") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).step_by(40).collect();
        examples += lines.len();
        fs::write(dir.join(path.file_name().unwrap()), lines.join("\n") + "\n").unwrap();
    }
    examples
}

/// Trains into `<root>/model` with its own cache under `root`, and returns the weight file and
/// the manifest as bytes.
fn train(root: &Path, data: &Path, seed: &str) -> (Vec<u8>, Vec<u8>) {
    let model = root.join("model");
    fs::create_dir_all(&model).unwrap();
    for file in ["rules.json", "resources.json"] {
        fs::copy(repo().join("models/cybertriage-fr").join(file), model.join(file)).unwrap();
    }
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CYBERTRIAGE_") {
            command.env_remove(key);
        }
    }
    let output = command
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .arg("train")
        .arg("--models-dir")
        .arg(repo().join("models"))
        .arg("--data-dir")
        .arg(data)
        .arg("--model-dir")
        .arg(&model)
        .arg("--cache-dir")
        .arg(root.join("cache"))
        .args(["--epochs", "3", "--folds", "2", "--pooled-layers", "8,12", "--seed", seed])
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "train failed: {}", String::from_utf8_lossy(&output.stderr));
    (fs::read(model.join("heads.safetensors")).unwrap(), fs::read(model.join("manifest.json")).unwrap())
}

#[test]
fn same_data_and_seed_give_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let examples = training_slice(&data);
    assert!(examples >= 150, "the slice holds {examples} examples");

    let (heads, manifest) = train(&dir.path().join("first"), &data, "13");
    let (heads_again, manifest_again) = train(&dir.path().join("second"), &data, "13");
    assert!(heads == heads_again, "two runs with seed 13 wrote different weights");
    assert_eq!(String::from_utf8(manifest).unwrap(), String::from_utf8(manifest_again).unwrap());

    let (other_heads, _) = train(&dir.path().join("other"), &data, "14");
    assert!(heads != other_heads, "seed 14 wrote the same weights as seed 13");
}
