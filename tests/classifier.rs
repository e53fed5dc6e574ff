//! The committed default model (models/cybertriage-fr) on the real encoder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use cybertriage::model::base::default_models_dir;
use cybertriage::model::manifest::Manifest;
use cybertriage::triage::classification::Classification;
use cybertriage::triage::classifier::{default_model_dir, Classifier, Classify, ClassifyError, MessageInput};
use cybertriage::triage::taxonomy::Urgency;

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| {
        let models = default_models_dir();
        Classifier::load(&models, &default_model_dir(&models)).expect("run `cybertriage fetch-base` first")
    })
}

fn classify(text: &str) -> Classification {
    classifier().classify(&[MessageInput::new(text)]).unwrap().remove(0)
}

fn score(result: &Classification, category: &str) -> f32 {
    result.categories.iter().find(|c| c.id == category).unwrap().score
}

#[test]
fn sextortion_deadline_is_urgent() {
    let result = classify("un mec menace de publier mes nudes si je paye pas avant ce soir");
    assert_eq!(result.categories[0].id, "sextortion");
    assert!(result.categories[0].detected);
    assert!(["high", "critical"].contains(&result.urgency.level.as_str()), "{:?}", result.urgency);
    assert!(["now", "soon"].contains(&result.handoff.action.as_str()), "{:?}", result.handoff);
}

#[test]
fn suicidal_wording_is_critical() {
    let result = classify("jai envie d'en finir");
    assert!(result.detected_categories().contains(&"self_harm"), "{:?}", result.categories);
    assert_eq!(result.urgency.level, "critical");
    assert_eq!(result.handoff.action, "now");
    assert!(result.resources.iter().any(|r| r.links.contains(&"tel_3114".to_string())));
}

#[test]
fn rule_raises_and_reports_itself() {
    // Explicit wording in a message the heads may read as mild: the rule must raise it.
    let result = classify("merci pour tout, ce soir je vais me suicider");
    assert_eq!(result.urgency.level, "critical");
    if result.urgency.raised_by_rule.is_some() {
        assert!(result.handoff.reasons.iter().any(|r| r.starts_with("rule:")));
    }
    assert!(result.detected_categories().contains(&"self_harm"));
}

#[test]
fn rule_urgency_matches_classify() {
    let cases = [
        (MessageInput::new("jai envie d'en finir"), Some(Urgency::Critical)),
        (MessageInput::new("il va publier mes nudes si je paye pas avant ce soir"), Some(Urgency::High)),
        (MessageInput::new("bonjour, c'est gratuit de vous écrire ?"), None),
        // The rules also read the context and the message joined, as `classify` does.
        (
            MessageInput { text: "voilà c'est tout".into(), context: vec!["jai envie d'en finir".into()] },
            Some(Urgency::Critical),
        ),
        (MessageInput::new(" \u{200B} "), None),
    ];
    for (input, expected) in cases {
        assert_eq!(classifier().rule_urgency(&input), expected, "{:?}", input.text);
        if expected == Some(Urgency::Critical) {
            let result = classifier().classify(std::slice::from_ref(&input)).unwrap().remove(0);
            assert_eq!(result.urgency.level, "critical", "{:?}", input.text);
        }
    }
}

#[test]
fn greeting_is_low_and_none() {
    let result = classify("bonjour, c'est gratuit de vous écrire ?");
    assert_eq!(result.detected_categories(), vec!["none"]);
    assert_eq!(result.urgency.level, "low");
    assert_eq!(result.handoff.action, "none");
}

#[test]
fn thresholds_decide_detection() {
    let result = classify("quelqu'un a piraté mon compte insta et poste des trucs à ma place");
    let thresholds = &classifier().manifest().thresholds;
    let top = result.categories[0].score;
    for category in &result.categories {
        if result.urgency.raised_by_rule.is_none() {
            let above_threshold = category.score >= thresholds.categories[&category.id];
            let above_cutoff = category.score >= thresholds.category_relative_cutoff * top;
            if !(above_threshold && above_cutoff) {
                assert!(!category.detected, "{category:?} detected below its threshold or the cutoff");
            }
            assert!(!category.added_by_rule, "{category:?} marked as added by a rule that did not fire");
        }
    }
    assert!(result.detected_categories().contains(&"identity_theft"), "{:?}", result.categories);
}

#[test]
fn model_names_heads_and_rules() {
    use sha2::{Digest, Sha256};

    let model_dir = default_model_dir(&default_models_dir());
    let heads = std::fs::read(model_dir.join("heads.safetensors")).unwrap();
    let heads_sha256 = format!("{:x}", Sha256::digest(&heads));
    let rules: serde_json::Value = serde_json::from_slice(&std::fs::read(model_dir.join("rules.json")).unwrap()).unwrap();

    let model = classify("bonjour").model;
    let (_, checksum) = model.version.split_once('+').expect("model.version has no `+` before the heads checksum");
    assert_eq!(checksum, &heads_sha256[..8], "the manifest's version names other heads");
    assert_eq!(model.rules, rules["version"].as_str().unwrap());
}

#[test]
fn batch_equals_singles() {
    let texts = [
        "ils m'insultent tous les jours sur snap",
        "Bonjour, mon fils de 12 ans joue 6 heures par jour à Fortnite, que faire ?",
        "un adulte sur roblox m'a donné des robux et veut me voir samedi, il dit de rien dire",
        "merci beaucoup",
    ];
    let inputs: Vec<MessageInput> = texts.iter().map(|t| MessageInput::new(*t)).collect();
    let batched = classifier().classify(&inputs).unwrap();
    for (text, batch_result) in texts.iter().zip(&batched) {
        let single = classify(text);
        assert_eq!(single.urgency.level, batch_result.urgency.level, "{text}");
        assert_eq!(single.detected_categories(), batch_result.detected_categories(), "{text}");
        for (a, b) in single.categories.iter().zip(&batch_result.categories) {
            assert!((a.score - b.score).abs() < 1e-3, "{text}: {a:?} vs {b:?}");
        }
    }
}

#[test]
fn long_message_is_windowed() {
    // The concern comes after more than 512 tokens of neutral text: truncation would drop it and
    // leave the score unchanged, windows must not. NOTE: the concern is diluted in a window that
    // is mostly neutral text, so its score stays far below that of the sentence alone.
    let opening = "Bonjour, je vous écris au sujet de ma fille de 14 ans. ";
    let filler = "Nous habitons dans une petite ville, elle va au collège à pied avec ses amies et fait du basket le mercredi. ".repeat(30);
    let ending = "Hier soir elle m'a dit qu'un homme rencontré sur Snapchat menace de publier ses photos intimes si elle ne lui envoie pas d'argent avant vendredi.";
    let without_ending = classify(&format!("{opening}{filler}"));
    let result = classify(&format!("{opening}{filler}{ending}"));
    assert!(result.windows >= 2, "{} windows", result.windows);
    assert!(
        score(&result, "sextortion") > score(&without_ending, "sextortion") * 3.0,
        "the last window must count: with the ending {}, without {}",
        score(&result, "sextortion"),
        score(&without_ending, "sextortion")
    );
}

#[test]
fn context_changes_reading() {
    let text = "il dit qu'il va les envoyer a tout le monde ce soir";
    let alone = classify(text);
    let input = MessageInput { text: text.to_string(), context: vec!["il a des photos de moi".to_string()] };
    let with_context = classifier().classify(&[input]).unwrap().remove(0);
    assert!(
        score(&with_context, "intimate_images") > score(&alone, "intimate_images") + 0.1,
        "context should raise intimate_images: alone {} with context {}",
        score(&alone, "intimate_images"),
        score(&with_context, "intimate_images")
    );
    // Context never removes a concern, even when it lifts another category so high that this
    // one falls under the relative cutoff.
    for category in alone.detected_categories() {
        assert!(with_context.detected_categories().contains(&category), "{category} detected alone, lost with context");
    }
    // Context may raise urgency, never lower it. Levels are compared in their order, not as strings.
    let level = |result: &Classification| Urgency::from_id(&result.urgency.level).unwrap();
    assert!(level(&with_context) >= level(&alone), "alone {:?}, with context {:?}", alone.urgency, with_context.urgency);
}

#[test]
fn unsupported_script_is_handed_to_a_human() {
    // "I want to die, I can't take it any more" in Russian: the pruned vocabulary reads none of it.
    let russian = classify("я хочу умереть, больше не могу");
    assert!(russian.unsupported_script);
    assert!(russian.uncertain);
    assert!(["now", "soon"].contains(&russian.handoff.action.as_str()), "{:?}", russian.handoff);
    assert!(russian.handoff.reasons.contains(&"unsupported_script".to_string()), "{:?}", russian.handoff);

    // A French greeting before a sentence in Russian ("I want to kill myself"), and an earlier
    // message in Russian, are flagged as well.
    let mixed = classify("bonjour je suis ukrainienne, я хочу покончить с собой");
    assert!(mixed.unsupported_script);
    assert!(["now", "soon"].contains(&mixed.handoff.action.as_str()), "{:?}", mixed.handoff);
    let input = MessageInput { text: "ok".to_string(), context: vec!["я хочу умереть".to_string()] };
    let context = classifier().classify(&[input]).unwrap().remove(0);
    assert!(context.unsupported_script);
    assert!(["now", "soon"].contains(&context.handoff.action.as_str()), "{:?}", context.handoff);

    // A French message that quotes a word in Cyrillic stays readable.
    let french = classify("un mec m'a écrit « привет » puis il m'a insultée sur insta");
    assert!(!french.unsupported_script);
    assert!(!french.handoff.reasons.contains(&"unsupported_script".to_string()), "{:?}", french.handoff);
}

#[test]
fn empty_text_is_invalid_input() {
    for text in ["", "   \n\t", "\u{200B}"] {
        let error = classifier().classify(&[MessageInput::new(text)]).unwrap_err();
        assert!(matches!(error, ClassifyError::InvalidInput(_)), "{text:?}: {error}");
    }
}

fn copy_model(to: &Path) -> PathBuf {
    let from = default_model_dir(&default_models_dir());
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to.to_path_buf()
}

#[test]
fn mismatched_base_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_model(dir.path());
    let mut manifest = Manifest::read(&model).unwrap();
    manifest.base.checksum = "0".repeat(64);
    manifest.write(&model).unwrap();
    let error = Classifier::load(&default_models_dir(), &model).err().expect("a mismatched base must be refused");
    let message = error.to_string();
    assert!(message.contains("base encoder mismatch"), "{message}");
    assert!(message.contains(&"0".repeat(64)), "{message}");
}

#[test]
fn pooled_layers_must_match_the_heads() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_model(dir.path());
    let mut manifest = Manifest::read(&model).unwrap();
    // One layer fewer or more changes the heads' input width.
    manifest.pooled_layers = if manifest.pooled_layers.len() <= 1 { vec![6, 12] } else { vec![12] };
    manifest.write(&model).unwrap();
    let error = Classifier::load(&default_models_dir(), &model).err().expect("a pooling that the heads do not expect must be rejected");
    assert!(error.to_string().contains("pooling encoder layers"), "{error:#}");
    manifest.pooled_layers = vec![12, 8];
    manifest.write(&model).unwrap();
    let error = Classifier::load(&default_models_dir(), &model).err().expect("decreasing layers must be rejected");
    assert!(format!("{error:#}").contains("must increase strictly"), "{error:#}");
    // Other layers of the same width fit the heads, so only the training record catches them.
    manifest.pooled_layers = if manifest.pooled_layers.len() == 2 { vec![6, 12] } else { vec![] };
    manifest.training.config["pooled_layers"] = serde_json::json!([8, 12]);
    manifest.heads.input_dim = if manifest.pooled_layers.is_empty() { 384 } else { 768 };
    manifest.write(&model).unwrap();
    let error = Classifier::load(&default_models_dir(), &model).err().expect("layers other than the trained ones must be rejected");
    assert!(error.to_string().contains("its heads were trained on layers [8, 12]"), "{error:#}");
}

/// Maximum time for one run of the binary, so that a run that never exits fails its test
/// instead of hanging it. It is not a speed target: a run takes a few seconds.
const RUN_BOUND: Duration = Duration::from_secs(300);

/// Runs `classify --jsonl` with the extra arguments, one line of stdin per entry.
fn classify_jsonl(args: &[&str], lines: &[&str]) -> std::process::Output {
    let input: String = lines.iter().map(|line| format!("{line}\n")).collect();
    classify_jsonl_bytes(args, input.as_bytes())
}

/// Runs `classify --jsonl` with the extra arguments and `input` as the whole of stdin. Kills
/// the run and fails after [`RUN_BOUND`].
fn classify_jsonl_bytes(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cybertriage"))
        .args(["classify", "--jsonl"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Dropping stdin after the write closes it, so the binary reads to its end.
    child.stdin.take().unwrap().write_all(input).unwrap();
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait_with_output()));
    match receiver.recv_timeout(RUN_BOUND) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("classify --jsonl did not exit within {RUN_BOUND:?}");
        }
    }
}

#[test]
fn cli_classify_jsonl_keeps_order() {
    let output = classify_jsonl(
        &["--batch-size", "2"],
        &[
            r#"{"text": "bonjour"}"#,
            r#"{"id": "msg-7", "text": "jai envie d'en finir"}"#,
            r#"{"text": "il dit qu'il va les envoyer ce soir", "context": ["il a des photos de moi"]}"#,
            r#"{"text": "on m'a piraté mon compte insta", "context": null}"#,
        ],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let raw: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(raw[0].get("id").is_none());
    assert_eq!(raw[1]["id"], "msg-7");
    let lines: Vec<Classification> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    // Without an id, a line is the classification serialized as the HTTP API does: same field
    // order, scores written as f32.
    let first = stdout.lines().next().unwrap();
    assert_eq!(first, serde_json::to_string(&lines[0]).unwrap());
    assert!(stdout.lines().nth(1).unwrap().starts_with(r#"{"id":"msg-7","categories":"#), "{stdout}");
    assert!(lines[3].detected_categories().contains(&"identity_theft"), "{:?}", lines[3].categories);
    assert_eq!(lines[0].urgency.level, "low");
    assert_eq!(lines[1].urgency.level, "critical");
    for field in ["categories", "intent", "urgency", "speaker", "handoff", "uncertain", "resources", "model"] {
        let value = serde_json::to_value(&lines[2]).unwrap();
        assert!(value.get(field).is_some(), "missing contract field {field}");
    }
}

#[test]
fn cli_jsonl_skips_leading_bom() {
    let input = "\u{FEFF}{\"id\": \"a\", \"text\": \"bonjour\"}\r\n{\"id\": \"b\", \"text\": \"merci\"}\r\n";
    let output = classify_jsonl_bytes(&[], input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let ids: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].clone()).collect();
    assert_eq!(ids, ["a", "b"]);

    // A byte-order mark after the start of the input is not skipped.
    let output = classify_jsonl_bytes(&[], "{\"text\": \"bonjour\"}\n\u{FEFF}{\"text\": \"merci\"}\n".as_bytes());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stdin line 2: invalid JSON at column 1"), "{stderr}");
}

#[test]
fn cli_jsonl_invalid_utf8_names_line() {
    let input = b"{\"text\": \"bonjour\"}\n{\"text\": \"kwyjibomarker \xe9t\xe9\"}\n{\"text\": \"merci\"}\n";
    let output = classify_jsonl_bytes(&[], input);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stdin line 2: invalid UTF-8 at byte 25 of the line"), "{stderr}");
    assert!(!stderr.contains("kwyjibomarker"), "the message reached the error: {stderr}");
    assert!(output.stdout.is_empty(), "no result is written before the whole input is read");
}

#[test]
fn trace_logs_keep_message_text_out() {
    // At trace level the tokenizers crate logs each character it normalises, and a directive
    // for one of its modules is more specific than one for the crate: every form is checked.
    for directives in ["trace", "trace,tokenizers=trace", "tokenizers::tokenizer=trace", "tokenizers::tokenizer::normalizer=trace"] {
        let output = Command::new(env!("CARGO_BIN_EXE_cybertriage"))
            .args(["classify", "--context", "ctxmarker", "kwyjibomarker, j'ai été menacée, je veux mourir"])
            .env("RUST_LOG", directives)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let logs = String::from_utf8_lossy(&output.stderr);
        assert!(!logs.contains("kwyjibomarker"), "RUST_LOG={directives}: the message reached the logs");
        assert!(!logs.contains("ctxmarker"), "RUST_LOG={directives}: the context reached the logs");
        assert!(!logs.contains("Replacing char"), "RUST_LOG={directives}: the tokenizer logged message characters");
    }
}

#[test]
fn cli_jsonl_errors_keep_text_out() {
    let cases = [
        (r#"{"text": "kwyjibomarker jveux", "context": "ctxmarker"}"#, "`context` must be a list of strings, found a string"),
        (r#"{"text": "kwyjibomarker", "context": ["ctxmarker", 3]}"#, "`context[1]` must be a string, found a number"),
        (r#"{"text": ["kwyjibomarker"]}"#, "`text` must be a string, found a list"),
        (r#"{"txt": "bonjour"}"#, "unknown field: a line may only have"),
        (r#"{"text": "bonjour", "kwyjibomarker": 1}"#, "unknown field: a line may only have"),
        (r#"{"context": ["ctxmarker"]}"#, "missing field `text`"),
        (r#"{"text": "kwyjibomarker"#, "invalid JSON at column"),
        (r#"["kwyjibomarker"]"#, "expected a JSON object, found a list"),
        (r#"{"text": "kwyjibomarker", "text": "bonjour"}"#, "field `text` appears twice (the second ends at column 32)"),
        (r#"{"text": "bonjour", "kwyjibomarker": 1, "kwyjibomarker": 2}"#, "a key appears twice in one object"),
        (r#"{"id": {"text": "kwyjibomarker", "text": 2}, "text": "bonjour"}"#, "a key appears twice in one object"),
    ];
    for (line, expected) in cases {
        let output = classify_jsonl(&[], &[r#"{"text": "bonjour"}"#, line]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{line}: {stderr}");
        assert!(stderr.contains("stdin line 2: "), "{line}: {stderr}");
        assert!(stderr.contains(expected), "{line}: {stderr}");
        assert!(!stderr.contains("kwyjibomarker"), "{line}: the message reached the error: {stderr}");
        assert!(!stderr.contains("ctxmarker"), "{line}: the context reached the error: {stderr}");
    }
}

#[test]
fn cli_max_chars_stops_long_inputs() {
    let output = classify_jsonl(&["--max-chars", "20"], &[r#"{"text": "bonjour"}"#, r#"{"text": "kwyjibomarker, il me harcèle"}"#]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stdin line 2: `text` has 28 characters, over --max-chars 20"), "{stderr}");
    assert!(!stderr.contains("kwyjibomarker"), "the message reached the error: {stderr}");
    assert!(output.stdout.is_empty(), "a result was written before the error");

    let output = Command::new(env!("CARGO_BIN_EXE_cybertriage"))
        .args(["classify", "--max-chars", "20", "--context", "kwyjibomarker, il a mes photos", "bonjour"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("`context[0]` has 30 characters, over --max-chars 20"), "{stderr}");
    assert!(!stderr.contains("kwyjibomarker"), "the context reached the error: {stderr}");
}
