//! `cybertriage data check` run as a real binary on small files written to a temporary folder.
//! Each kind of violation must fail the run with a message naming the file, the line and the
//! field. The near-duplicate tests use the real base encoder: run `cybertriage fetch-base` first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use tempfile::TempDir;

/// A training folder and an evaluation file in a temporary folder.
struct Data {
    dir: TempDir,
}

impl Data {
    fn new() -> Data {
        let data = Data { dir: tempfile::tempdir().expect("temporary folder") };
        std::fs::create_dir(data.train_dir()).expect("training folder");
        data
    }

    fn train_dir(&self) -> PathBuf {
        self.dir.path().join("train")
    }

    fn eval_file(&self) -> PathBuf {
        self.dir.path().join("testset.jsonl")
    }

    /// Writes a training file and returns its path.
    fn train(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.train_dir().join(name);
        write_lines(&path, lines);
        path
    }

    /// Writes a training file byte for byte, for encodings that `String` cannot hold.
    fn train_bytes(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.train_dir().join(name);
        std::fs::write(&path, bytes).expect("write data file");
        path
    }

    fn eval(&self, lines: &[String]) -> PathBuf {
        let path = self.eval_file();
        write_lines(&path, lines);
        path
    }

    /// Runs `data check` on the training folder and the evaluation file.
    fn check(&self, extra_args: &[&str]) -> Output {
        if !self.eval_file().exists() {
            self.eval(&[example("eval-default", "bonjour, vous êtes ouverts le dimanche ?")]);
        }
        let output = Command::new(env!("CARGO_BIN_EXE_cybertriage"))
            .args(["data", "check", "--train-dir"])
            .arg(self.train_dir())
            .arg("--eval")
            .arg(self.eval_file())
            .args(extra_args)
            .env_remove("CYBERTRIAGE_TRAIN_DIR")
            .env_remove("CYBERTRIAGE_EVAL_FILE")
            .env_remove("CYBERTRIAGE_NEAR_DUPLICATE_THRESHOLD")
            .env_remove("CYBERTRIAGE_SKIP_NEAR_DUPLICATES")
            .output()
            .expect("failed to run the cybertriage binary");
        output
    }

    /// Runs `data check` without the encoder, for the checks that do not need it.
    fn check_fast(&self) -> Output {
        self.check(&["--skip-near-duplicates"])
    }
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut content = lines.join("\n");
    content.push('\n');
    std::fs::write(path, content).expect("write data file");
}

fn example_value(id: &str, text: &str) -> Value {
    json!({
        "id": id,
        "text": text,
        "categories": ["harassment"],
        "intent": "seek_help",
        "urgency": "medium",
        "speaker": "young_person",
        "tags": ["sms"],
    })
}

fn example(id: &str, text: &str) -> String {
    example_value(id, text).to_string()
}

/// Returns an example with one field replaced (or removed, with `Value::Null` as `value`).
fn example_with(id: &str, field: &str, value: Value) -> String {
    let mut object = example_value(id, "on se moque de moi en classe");
    let map = object.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(field);
    } else {
        map.insert(field.to_string(), value);
    }
    object.to_string()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts that the run failed and printed a violation starting with `prefix`, and returns the line.
fn assert_violation(output: &Output, prefix: &str) -> String {
    let out = stdout(output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "expected a failure, got success:\n{out}\n{stderr}");
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    out.lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{out}\nstderr: {stderr}"))
        .to_string()
}

fn location(path: &Path, line: usize) -> String {
    format!("{}:{line}", path.display())
}

#[test]
fn valid_data_passes_with_counts() {
    let data = Data::new();
    data.train("a.jsonl", &[example("a-1", "ils m'insultent sur snap"), example("a-2", "on a piraté mon compte")]);
    data.eval(&[example("e-1", "mon fils passe ses nuits sur fortnite")]);
    let output = data.check_fast();
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(out.contains("| `harassment` | Cyberharcèlement | 2 | 1 |"), "{out}");
    assert!(out.contains("| `sms` | 2 | 1 |"), "{out}");
    assert!(out.contains("- training: 1 file, 2 lines, 2 valid examples"), "{out}");
    assert!(out.contains("- no violations"), "{out}");
}

#[test]
fn empty_files_fail() {
    let data = Data::new();
    data.train_bytes("empty.jsonl", b"");
    std::fs::write(data.eval_file(), "").expect("write data file");
    let output = data.check_fast();
    let out = stdout(&output);
    assert!(!output.status.success(), "{out}");
    assert!(out.contains("- no valid training example"), "{out}");
    assert!(out.contains("- no valid evaluation example"), "{out}");

    data.train("a.jsonl", &[example("t-1", "on se moque de moi sur snap")]);
    let output = data.check_fast();
    let out = stdout(&output);
    assert!(!output.status.success(), "the evaluation file is still empty: {out}");
    assert!(!out.contains("no valid training example"), "{out}");
    assert!(out.contains("- no valid evaluation example"), "{out}");
}

#[test]
fn invalid_json_names_line() {
    let data = Data::new();
    let path = data.train("a.jsonl", &[example("a-1", "salut"), r#"{"id": "a-2", "text": "oups""#.to_string()]);
    let line = assert_violation(&data.check_fast(), &format!("{}: invalid JSON", location(&path, 2)));
    assert!(line.contains("column"), "{line}");
}

#[test]
fn byte_order_mark_file_passes() {
    let data = Data::new();
    let lines = [example("a-1", "ils m'insultent sur snap"), example("a-2", "on a piraté mon compte")];
    data.train_bytes("a.jsonl", format!("\u{FEFF}{}\r\n", lines.join("\r\n")).as_bytes());
    std::fs::write(data.eval_file(), format!("\u{FEFF}{}\n", example("e-1", "mon fils joue trop"))).unwrap();
    let output = data.check_fast();
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(out.contains("- training: 1 file, 2 lines, 2 valid examples"), "{out}");
    assert!(out.contains("- evaluation: 1 file, 1 line, 1 valid example"), "{out}");
    assert!(out.contains("- no violations"), "{out}");
}

#[test]
fn invalid_utf8_line_is_reported_alone() {
    let data = Data::new();
    // Line 2 has "é" in Latin-1, the byte 0xE9, in its text. The other lines are UTF-8.
    let before_text = br#"{"id":"a-2","text":"ce mec m'a "#;
    let mut bytes = format!("{}\n", example("a-1", "salut")).into_bytes();
    bytes.extend_from_slice(before_text);
    bytes.extend_from_slice(b"\xe9crit toute la nuit\"}\n");
    bytes.extend_from_slice(format!("{}\n", example_with("a-3", "urgency", json!("urgent"))).as_bytes());
    bytes.extend_from_slice(format!("{}\n", example("a-4", "merci")).as_bytes());
    let path = data.train_bytes("a.jsonl", &bytes);

    let output = data.check_fast();
    let out = stdout(&output);
    let byte = before_text.len() + 1;
    let line = assert_violation(&output, &format!("{}: invalid UTF-8 at byte {byte} of the line", location(&path, 2)));
    assert!(line.ends_with("save the file as UTF-8"), "{line}");
    assert_violation(&output, &format!("{}: field `urgency`:", location(&path, 3)));
    assert!(out.contains("- training: 1 file, 4 lines, 2 valid examples"), "{out}");
    assert!(out.contains("- 2 violations (invalid JSON: 1, label not in the scheme: 1)"), "{out}");
    assert!(!out.contains("toute la nuit"), "the text of the invalid line was printed:\n{out}");
}

#[test]
fn repeated_key_is_reported() {
    let data = Data::new();
    let valid = example("a-2", "merci");
    let repeated_field = format!(r#"{{"urgency": "critical", {}"#, &example("a-1", "salut")[1..]);
    let repeated_other = format!(r#"{{"il me suit partout": 1, "il me suit partout": 2, {}"#, &example("a-3", "bonjour")[1..]);
    let path = data.train("a.jsonl", &[repeated_field, valid, repeated_other]);
    let output = data.check_fast();
    let line = assert_violation(&output, &format!("{}: field `urgency` appears twice", location(&path, 1)));
    assert!(line.contains("column"), "{line}");
    assert_violation(&output, &format!("{}: a key appears twice in one object", location(&path, 3)));
    assert!(!stdout(&output).contains("suit partout"), "a key that is not a field name must not be echoed");
}

#[test]
fn blank_line_is_reported() {
    let data = Data::new();
    let path = data.train("a.jsonl", &[example("a-1", "salut"), "  ".to_string(), example("a-2", "merci")]);
    assert_violation(&data.check_fast(), &format!("{}: blank line", location(&path, 2)));
}

#[test]
fn missing_field_is_reported() {
    let data = Data::new();
    let path = data.train("a.jsonl", &[example_with("a-1", "urgency", Value::Null)]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `urgency`:", location(&path, 1)));
    assert!(line.contains("missing"), "{line}");
}

#[test]
fn unknown_field_is_reported() {
    let data = Data::new();
    let path = data.train("a.jsonl", &[example_with("a-1", "urgence", json!("low"))]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `urgence`:", location(&path, 1)));
    assert!(line.contains("unknown field"), "{line}");
}

#[test]
fn wrong_type_is_reported() {
    let data = Data::new();
    let path = data.train("a.jsonl", &[example_with("a-1", "categories", json!("harassment"))]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `categories`:", location(&path, 1)));
    assert!(line.contains("expected a list of strings"), "{line}");
    assert!(line.contains("found a string"), "{line}");
}

#[test]
fn wrong_item_type_is_reported() {
    let data = Data::new();
    let path = data.train("a.jsonl", &[example_with("a-1", "tags", json!(["sms", 4]))]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `tags`:", location(&path, 1)));
    assert!(line.contains("item 2 is a number"), "{line}");
}

#[test]
fn empty_text_is_reported() {
    let data = Data::new();
    let path = data.train("a.jsonl", &[example("a-1", "salut"), example("a-2", "   ")]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `text`:", location(&path, 2)));
    assert!(line.contains("empty"), "{line}");
}

#[test]
fn empty_id_is_reported() {
    let data = Data::new();
    let path = data.train("a.jsonl", &[example("", "salut")]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `id`:", location(&path, 1)));
    assert!(line.contains("empty"), "{line}");
}

#[test]
fn unknown_labels_are_reported_per_field() {
    let cases = [
        ("categories", json!(["bullying"]), "`bullying` is not a valid category"),
        ("intent", json!("help"), "`help` is not a valid intent"),
        ("urgency", json!("urgent"), "`urgent` is not a valid urgency"),
        ("speaker", json!("teacher"), "`teacher` is not a valid speaker"),
        ("tags", json!(["parent"]), "`parent` is not a valid tag"),
    ];
    for (field, value, expected) in cases {
        let data = Data::new();
        let path = data.train("a.jsonl", &[example("a-1", "salut"), example_with("a-2", field, value)]);
        let line = assert_violation(&data.check_fast(), &format!("{}: field `{field}`:", location(&path, 2)));
        assert!(line.contains(expected), "{field}: {line}");
        assert!(line.contains("use one of"), "{field}: {line}");
    }
}

#[test]
fn empty_categories_are_reported() {
    let data = Data::new();
    let path = data.train("a.jsonl", &[example_with("a-1", "categories", json!([]))]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `categories`:", location(&path, 1)));
    assert!(line.contains("empty list"), "{line}");
}

#[test]
fn none_with_other_category_is_reported() {
    let data = Data::new();
    let path = data.train("a.jsonl", &[example_with("a-1", "categories", json!(["none", "threats"]))]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `categories`:", location(&path, 1)));
    assert!(line.contains("`none` is listed with `threats`"), "{line}");
}

#[test]
fn repeated_category_is_reported() {
    let data = Data::new();
    let path = data.train("a.jsonl", &[example_with("a-1", "categories", json!(["scam", "privacy", "scam"]))]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `categories`:", location(&path, 1)));
    assert!(line.contains("`scam` is listed twice"), "{line}");
}

#[test]
fn more_than_three_categories_are_reported() {
    let data = Data::new();
    let categories = json!(["scam", "privacy", "threats", "harassment"]);
    let path = data.train("a.jsonl", &[example_with("a-1", "categories", categories)]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `categories`:", location(&path, 1)));
    assert!(line.contains("4 categories"), "{line}");
}

#[test]
fn duplicate_id_names_both_files() {
    let data = Data::new();
    let first = data.train("a.jsonl", &[example("same-id", "ils m'insultent sur snap")]);
    let eval = data.eval(&[example("e-1", "mon fils joue trop"), example("same-id", "on a piraté mon compte")]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `id`:", location(&eval, 2)));
    assert!(line.contains(&location(&first, 1)), "{line}");
}

#[test]
fn duplicate_text_within_train_names_both_lines() {
    let data = Data::new();
    let first = data.train("a.jsonl", &[example("a-1", "Il Recommence")]);
    let second = data.train("b.jsonl", &[example("b-1", "pk personne m'aide"), example("b-2", "  il recommence ")]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `text`:", location(&second, 2)));
    assert!(line.contains(&format!("same text as {}", location(&first, 1))), "{line}");
}

#[test]
fn duplicate_text_within_eval_names_both_lines() {
    let data = Data::new();
    data.train("a.jsonl", &[example("a-1", "ils m'insultent sur snap")]);
    let eval = data.eval(&[example("e-1", "aide moi"), example("e-2", "AIDE MOI")]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `text`:", location(&eval, 2)));
    assert!(line.contains(&format!("same text as {}", location(&eval, 1))), "{line}");
}

#[test]
fn duplicate_text_across_splits_names_training_line() {
    let data = Data::new();
    let train = data.train("a.jsonl", &[example("a-1", "salut"), example("a-2", "on a piraté mon compte insta")]);
    let eval = data.eval(&[example("e-1", "On a piraté mon compte insta")]);
    let line = assert_violation(&data.check_fast(), &format!("{}: field `text`:", location(&eval, 1)));
    assert!(line.contains(&format!("training line {}", location(&train, 2))), "{line}");
}

#[test]
fn every_violation_is_listed_and_counted() {
    let data = Data::new();
    data.train("a.jsonl", &[example_with("a-1", "urgency", json!("urgent")), example("a-1", "salut")]);
    let output = data.check_fast();
    let out = stdout(&output);
    assert!(!output.status.success());
    assert!(out.contains("- 2 violations (label not in the scheme: 1, duplicate id: 1)"), "{out}");
}

#[test]
fn threshold_out_of_range_is_rejected() {
    let data = Data::new();
    data.train("a.jsonl", &[example("a-1", "salut")]);
    let output = data.check(&["--near-duplicate-threshold", "1.5"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--near-duplicate-threshold must be in (0, 1], got 1.5"), "{stderr}");
}

#[test]
fn near_duplicate_with_typo_is_flagged() {
    let data = Data::new();
    let train = data.train(
        "a.jsonl",
        &[
            example("a-1", "salut"),
            example("a-2", "un mec de ma classe a mis une photo de moi sur insta avec des insultes en dessous"),
        ],
    );
    let eval = data.eval(&[
        example("e-1", "comment on bloque quelqu'un sur roblox"),
        example("e-2", "un mec de ma classe a mis une photo de moi sur insta avec des insultes en dessou"),
    ]);
    let output = data.check(&[]);
    let line = assert_violation(&output, &format!("{}: field `text`:", location(&eval, 2)));
    assert!(line.contains(&format!("near-duplicate of the training line {}", location(&train, 2))), "{line}");
    let cosine: f32 = line
        .split("(cosine ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no cosine in {line}"));
    assert!(cosine > 0.95, "{line}");
    assert!(cosine <= 1.0, "{line}");
    assert!(!stdout(&output).contains(&location(&eval, 1)), "the unrelated message was flagged");
}

#[test]
fn unrelated_messages_are_not_near_duplicates() {
    let data = Data::new();
    data.train("a.jsonl", &[example("a-1", "un mec de ma classe a mis une photo de moi sur insta avec des insultes")]);
    data.eval(&[example("e-1", "mon fils de 11 ans veut un téléphone, à quel âge vous conseillez le premier ?")]);
    let output = data.check(&[]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(out.contains("near-duplicates: checked every training/evaluation pair at cosine > 0.95"), "{out}");
}

#[test]
fn parse_examples_stops_at_first_invalid_line() {
    let data = Data::new();
    let path =
        data.train("a.jsonl", &[example("a-1", "salut"), example_with("a-2", "speaker", json!(3)), "{".to_string()]);
    let error = cybertriage::data::parse_examples(&path, &std::fs::read(&path).unwrap()).unwrap_err().to_string();
    assert!(error.starts_with(&format!("{}: field `speaker`: expected a string", location(&path, 2))), "{error}");

    let valid = data.train("b.jsonl", &[example("b-1", "salut"), example("b-2", "merci")]);
    let examples = cybertriage::data::parse_examples(&valid, &std::fs::read(&valid).unwrap()).unwrap();
    assert_eq!(examples.len(), 2);
    assert_eq!(examples[1].text, "merci");
    assert_eq!(examples[1].tags, ["sms"]);
}
