//! `cybertriage eval` run as a binary on the committed model and `eval/testset.jsonl`. The
//! three files must be written, and the regression guard must stop a model made deliberately
//! worse. That model is a copy of the committed one with raised decision thresholds, so it
//! detects fewer concerns and predicts lower urgency.
//!
//! Needs the base encoder under `models/base/` (`cybertriage fetch-base`). To keep the test
//! short on a CPU, it evaluates every eighth example of the test set, which still contains high
//! and critical ones. The full set is for the CI eval run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cybertriage");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Prepares the binary to run in the repository root, free of any `CYBERTRIAGE_*` setting of
/// the calling shell.
fn cybertriage() -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CYBERTRIAGE_") {
            command.env_remove(key);
        }
    }
    command.current_dir(repo()).env("RUST_LOG", "warn");
    command
}

/// Keeps every eighth example of the test set, in a file under `dir`.
fn test_subset(dir: &Path) -> PathBuf {
    let full = fs::read_to_string(repo().join("eval/testset.jsonl")).unwrap();
    let lines: Vec<&str> = full.lines().filter(|l| !l.trim().is_empty()).step_by(8).collect();
    let has = |level: &str| lines.iter().any(|l| serde_json::from_str::<Value>(l).unwrap()["urgency"] == level);
    assert!(has("critical"), "the subset needs critical examples");
    assert!(has("high"), "the subset needs high examples");
    let path = dir.join("subset.jsonl");
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// Runs `cybertriage eval` with the given arguments after the global ones.
fn eval(args: &[&str]) -> Output {
    cybertriage()
        .arg("--models-dir")
        .arg(repo().join("models"))
        .arg("eval")
        .args(["--bootstrap", "100"])
        .args(args)
        .output()
        .expect("the binary runs")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Copies the committed model folder with every decision threshold raised.
fn worse_model(dir: &Path) -> PathBuf {
    let source = repo().join("models/cybertriage-fr");
    let target = dir.join("worse-model");
    fs::create_dir_all(&target).unwrap();
    for entry in fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
    let manifest_path = target.join("manifest.json");
    let mut manifest = read_json(&manifest_path);
    let thresholds = &mut manifest["thresholds"];
    for (_, value) in thresholds["categories"].as_object_mut().unwrap() {
        *value = 0.99.into();
    }
    // Urgency levels need this much cumulative probability: the model alone will rarely go
    // above low; only the rules can still raise it.
    for (_, value) in thresholds["urgency"].as_object_mut().unwrap() {
        *value = 0.999.into();
    }
    fs::write(&manifest_path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    target
}

#[test]
fn guard_stops_worse_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = test_subset(dir.path());
    let data = data.to_str().unwrap();
    let good_out = dir.path().join("good");
    let output = eval(&["--data", data, "--out", good_out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    for file in ["report.json", "report.html", "errors.jsonl"] {
        assert!(good_out.join(file).is_file(), "{file} missing");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("critical_recall"), "{stdout}");
    assert!(stdout.contains("severe_under_triage"), "{stdout}");
    let report = read_json(&good_out.join("report.json"));
    assert_eq!(report["model"]["name"], "cybertriage-fr");
    assert_eq!(report["examples"].as_u64(), report["data"]["examples"].as_u64());
    assert!(report["model"]["manifest_sha256"].as_str().is_some_and(|s| s.len() == 64));
    let html = fs::read_to_string(good_out.join("report.html")).unwrap();
    assert!(html.contains("<html lang=\"fr\">"));
    assert!(!html.contains("<script"));

    // The same model against its own figures passes.
    let baseline = good_out.join("report.json");
    let again = dir.path().join("again");
    let output = eval(&["--data", data, "--out", again.to_str().unwrap(), "--baseline", baseline.to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("Regression guard passed"));

    let worse = worse_model(dir.path());
    let worse_out = dir.path().join("worse");
    let output = eval(&[
        "--data",
        data,
        "--model",
        worse.to_str().unwrap(),
        "--out",
        worse_out.to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
        "--tolerance",
        "0.01",
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("REGRESSION"), "{}", describe(&output));
    let report = read_json(&worse_out.join("report.json"));
    assert_eq!(report["baseline"]["passed"], false);
    assert!(!report["baseline"]["failures"].as_array().unwrap().is_empty());
    let html = fs::read_to_string(worse_out.join("report.html")).unwrap();
    assert!(html.contains("Régression de sécurité"));
}

#[test]
fn eval_rejects_bad_arguments() {
    let output = eval(&["--tolerance", "2"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("fraction between 0 and 1"));

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let output = cybertriage().args(["eval", "--data", missing.to_str().unwrap(), "--out"]).arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.jsonl"));

    let bad = dir.path().join("bad.jsonl");
    fs::write(&bad, "{\"id\":\"x\",\"text\":\"secret words\",\"categories\":[\"nope\"],\"intent\":\"other\",\"urgency\":\"low\",\"speaker\":\"other\"}\n").unwrap();
    let output = cybertriage().args(["eval", "--data", bad.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stderr.contains(":1:"), "{stderr}");
    assert!(stderr.contains("`nope` is not a valid category"), "{stderr}");
    assert!(!stderr.contains("secret words"), "an error must not echo the message text");
}

#[test]
fn eval_rejects_repeated_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("repeated.jsonl");
    let valid = r#"{"id":"a","text":"secret words","categories":["none"],"intent":"other","urgency":"low","speaker":"other"}"#;
    let repeated = r#"{"id":"b","text":"secret words","text":"other words","categories":["none"],"intent":"other","urgency":"low","speaker":"other"}"#;
    fs::write(&data, format!("{valid}
{repeated}
")).unwrap();
    let output = cybertriage().args(["eval", "--data", data.to_str().unwrap(), "--out"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stderr.contains("repeated.jsonl:2: field `text` appears twice"), "{stderr}");
    assert!(!stderr.contains("words"), "an error must not echo the message text: {stderr}");
}
