//! The evaluation pipeline end to end on hand-made predictions. A scripted classifier returns
//! chosen mistakes on invented messages, and the three report files are checked against what
//! those mistakes must produce.
//!
//! The sample report is left in `target/tmp/eval_sample_report/` so that a person can open
//! `report.html` and look at it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use cybertriage::eval::baseline::compare;
use cybertriage::eval::example::Example;
use cybertriage::eval::perturb::strip_accents;
use cybertriage::eval::report_json::{DataIdentity, ModelIdentity};
use cybertriage::eval::run::{evaluate, write_outputs, Evaluation, Options};
use cybertriage::triage::classification::{
    CategoryScore, Classification, Handoff, LabelScore, ModelInfo, UrgencyResult,
};
use cybertriage::triage::classifier::{ClassifyError, Classify, MessageInput, TokenCost};
use cybertriage::triage::taxonomy::{index_of, CATEGORIES, INTENTS, SPEAKERS, URGENCIES};
use serde_json::Value;

/// One invented message: gold labels, then the scripted prediction.
struct Case {
    id: &'static str,
    text: &'static str,
    categories: &'static [&'static str],
    intent: &'static str,
    urgency: &'static str,
    speaker: &'static str,
    tags: &'static [&'static str],
    predicted: Prediction,
}

#[derive(Clone)]
struct Prediction {
    categories: &'static [&'static str],
    intent: &'static str,
    urgency: &'static str,
    speaker: &'static str,
}

const fn p(
    categories: &'static [&'static str],
    intent: &'static str,
    urgency: &'static str,
    speaker: &'static str,
) -> Prediction {
    Prediction { categories, intent, urgency, speaker }
}

macro_rules! case {
    ($id:literal, $text:literal, $cats:expr, $intent:literal, $urgency:literal, $speaker:literal, $tags:expr, $pred:expr) => {
        Case {
            id: $id,
            text: $text,
            categories: $cats,
            intent: $intent,
            urgency: $urgency,
            speaker: $speaker,
            tags: $tags,
            predicted: $pred,
        }
    };
}

/// Lists the invented messages. Each prediction equals the gold labels except for these
/// mistakes, by id:
/// c2 critical → low (under-triaged critical), h2 high → low (severe), h3 high → medium,
/// m2 medium → low, l2 low → medium (over-triage), m3 misses `sexism`, l3 adds `scam`,
/// m4 wrong intent, l4 wrong speaker.
fn cases() -> Vec<Case> {
    vec![
        case!("c1", "ce soir j'arrête tout, je veux plus me réveiller", &["self_harm"], "seek_help", "critical", "young_person", &["indirect"],
            p(&["self_harm"], "seek_help", "critical", "young_person")),
        case!("c2", "jvai tout arreter pour de bon jcrois", &["self_harm"], "other", "critical", "young_person", &["sms", "indirect"],
            p(&["none"], "other", "low", "young_person")),
        case!("c3", "il veut me voir samedi et il dit de rien dire à mes parents", &["grooming"], "seek_help", "critical", "young_person", &[],
            p(&["grooming"], "seek_help", "critical", "young_person")),
        case!("h1", "un mec menace d'envoyer mes photos à toute ma classe si je paie pas", &["sextortion"], "seek_help", "high", "young_person", &[],
            p(&["sextortion"], "seek_help", "high", "young_person")),
        case!("h2", "ma fille reçoit des messages bizarres d'un adulte qui lui demande des photos", &["grooming"], "seek_help", "high", "parent", &[],
            p(&["grooming"], "seek_help", "low", "parent")),
        case!("h3", "des nudes de moi tournent sur un compte ficha", &["intimate_images"], "seek_help", "high", "young_person", &["sms"],
            p(&["intimate_images"], "seek_help", "medium", "young_person")),
        case!("h4", "toute la classe m'insulte tous les jours depuis des semaines et me dit d'aller me pendre", &["harassment", "self_harm"], "seek_help", "high", "young_person", &["multi", "quote"],
            p(&["harassment", "self_harm"], "seek_help", "high", "young_person")),
        case!("m1", "on m'a piraté mon compte insta et quelqu'un poste à ma place", &["identity_theft"], "seek_help", "medium", "young_person", &[],
            p(&["identity_theft"], "seek_help", "medium", "young_person")),
        case!("m2", "g perdu 50 euros sur un faux site de skins", &["scam"], "seek_help", "medium", "young_person", &["sms"],
            p(&["scam"], "seek_help", "low", "young_person")),
        case!("m3", "ils me traitent de pute dans le groupe de la classe", &["harassment", "sexism"], "seek_help", "medium", "young_person", &["multi", "quote"],
            p(&["harassment"], "seek_help", "medium", "young_person")),
        case!("m4", "mon adresse a été publiée sur un serveur discord", &["privacy"], "seek_help", "medium", "young_person", &[],
            p(&["privacy"], "advice", "medium", "young_person")),
        case!("m5", "on reçoit des commentaires racistes sous chaque vidéo de mon fils", &["hate_speech"], "seek_help", "medium", "parent", &[],
            p(&["hate_speech"], "seek_help", "medium", "parent")),
        case!("m6", "une élève de ma classe se fait harceler, que puis-je faire ?", &["harassment"], "advice", "medium", "other", &["witness"],
            p(&["harassment"], "advice", "medium", "other")),
        case!("m7", "mon frère a vu une vidéo très violente et il fait des cauchemars", &["shocking_content"], "seek_help", "medium", "other", &["witness"],
            p(&["shocking_content"], "seek_help", "medium", "other")),
        case!("l1", "bonjour", &["none"], "greeting", "low", "young_person", &["short"],
            p(&["none"], "greeting", "low", "young_person")),
        case!("l2", "je vais te tuer si tu spoil la fin mdr", &["none"], "other", "low", "young_person", &["hard_negative", "sms"],
            p(&["threats"], "other", "medium", "young_person")),
        case!("l3", "c'est quoi exactement le cyberharcèlement ?", &["harassment"], "information", "low", "young_person", &[],
            p(&["harassment", "scam"], "information", "low", "young_person")),
        case!("l4", "à quel âge donner un premier téléphone à mon enfant ?", &["screen_use"], "advice", "low", "parent", &[],
            p(&["screen_use"], "advice", "low", "young_person")),
        case!("l5", "comment protéger mon compte instagram ?", &["identity_theft"], "advice", "low", "young_person", &[],
            p(&["identity_theft"], "advice", "low", "young_person")),
        case!("l6", "merci beaucoup pour votre aide", &["none"], "greeting", "low", "young_person", &["short"],
            p(&["none"], "greeting", "low", "young_person")),
        case!("l7", "je veux parler à quelqu'un", &["none"], "talk_to_counselor", "low", "young_person", &["short"],
            p(&["none"], "talk_to_counselor", "low", "young_person")),
        case!("l8", "vous êtes ouverts le dimanche ?", &["none"], "information", "low", "other", &["short"],
            p(&["none"], "information", "low", "other")),
        case!("l9", "comment répondre à des propos homophobes sous un post sans que ça dégénère", &["hate_speech"], "advice", "low", "young_person", &["counter_speech"],
            p(&["hate_speech"], "advice", "low", "young_person")),
        case!("l10", "my son spends all night on his phone what can I do", &["screen_use"], "advice", "low", "parent", &["non_fr"],
            p(&["screen_use"], "advice", "low", "parent")),
    ]
}

/// Returns the scripted prediction of each known text. A text it does not find, even once
/// lowercased and stripped of accents, gets a confident "nothing to see" prediction. So SMS
/// spellings and typos lower the figures, and accents and case changes do not.
struct ScriptedClassifier {
    answers: HashMap<String, Prediction>,
}

fn key(text: &str) -> String {
    strip_accents(&text.to_lowercase())
}

impl ScriptedClassifier {
    fn new(cases: &[Case]) -> Self {
        ScriptedClassifier { answers: cases.iter().map(|c| (key(c.text), c.predicted.clone())).collect() }
    }
}

fn classification(prediction: &Prediction) -> Classification {
    let label = |labels: &[cybertriage::triage::taxonomy::Label], id: &str| {
        labels[index_of(labels, id).expect("known id")].label.to_string()
    };
    let mut categories: Vec<CategoryScore> = CATEGORIES
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let detected = prediction.categories.contains(&c.id);
            // Spread the scores so the reliability bins are not all in one place.
            let score = if detected { 0.62 + 0.025 * i as f32 } else { 0.02 + 0.02 * i as f32 };
            CategoryScore { id: c.id.into(), label: c.label.into(), score, detected, added_by_rule: false }
        })
        .collect();
    categories.sort_by(|a, b| b.score.total_cmp(&a.score));
    let level = index_of(&URGENCIES, prediction.urgency).unwrap();
    let scores: BTreeMap<String, f32> = URGENCIES
        .iter()
        .enumerate()
        .map(|(i, u)| (u.id.to_string(), if i == level { 0.7 } else { 0.1 }))
        .collect();
    Classification {
        categories,
        intent: LabelScore { id: prediction.intent.into(), label: label(&INTENTS, prediction.intent), score: 0.81 },
        urgency: UrgencyResult {
            level: prediction.urgency.into(),
            label: label(&URGENCIES, prediction.urgency),
            score: 0.7,
            scores,
            raised_by_rule: None,
            rules_matched: Vec::new(),
        },
        speaker: LabelScore { id: prediction.speaker.into(), label: label(&SPEAKERS, prediction.speaker), score: 0.93 },
        handoff: Handoff { action: "none".into(), reasons: vec![] },
        uncertain: false,
        unsupported_script: false,
        resources: vec![],
        model: model_info(),
        windows: 1,
    }
}

fn model_info() -> ModelInfo {
    ModelInfo { name: "scripted".into(), version: "0.0.1".into(), base: "none".into(), rules: "scripted".into() }
}

impl Classify for ScriptedClassifier {
    fn classify(&self, inputs: &[MessageInput]) -> Result<Vec<Classification>, ClassifyError> {
        const UNKNOWN: Prediction = p(&["none"], "other", "low", "young_person");
        Ok(inputs.iter().map(|i| classification(self.answers.get(&key(&i.text)).unwrap_or(&UNKNOWN))).collect())
    }

    fn token_cost(&self, input: &MessageInput) -> Result<TokenCost, ClassifyError> {
        Ok(TokenCost { text: input.text.len(), total: input.text.len() })
    }

    fn model_info(&self) -> ModelInfo {
        model_info()
    }
}

fn examples(cases: &[Case]) -> Vec<Example> {
    let strings = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    cases
        .iter()
        .map(|c| Example {
            id: c.id.into(),
            text: c.text.into(),
            categories: strings(c.categories),
            intent: c.intent.into(),
            urgency: c.urgency.into(),
            speaker: c.speaker.into(),
            tags: strings(c.tags),
        })
        .collect()
}

fn run(cases: &[Case], perturb: bool) -> Evaluation {
    let examples = examples(cases);
    let data = DataIdentity { path: "hand-made.jsonl".into(), sha256: "0".repeat(64), examples: examples.len() };
    let model = ModelIdentity::new(model_info(), std::path::Path::new("/nonexistent")).unwrap();
    let options = Options { batch_size: 5, seed: 42, bootstrap: 200, perturb, progress: false };
    evaluate(&ScriptedClassifier::new(cases), &examples, data, model, &options).unwrap()
}

fn sample_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("eval_sample_report")
}

#[test]
fn report_files_show_scripted_mistakes() {
    let cases = cases();
    let evaluation = run(&cases, true);
    let out = sample_dir();
    write_outputs(&out, &evaluation).unwrap();

    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for key in [
        "macro_f1",
        "micro_f1",
        "exact_match",
        "categories",
        "intent",
        "speaker",
        "urgency",
        "confusion",
        "critical",
        "under_triage_rate",
        "severe_under_triage",
        "calibration",
        "slices",
        "throughput",
        "model",
        "data",
        "confidence_intervals",
        "perturbation",
    ] {
        assert!(report.get(key).is_some(), "report.json lacks `{key}`");
    }
    // 3 critical, one (c2) predicted low: recall 2/3. h2 and c2 are severe, of 7 high or critical.
    assert_eq!(report["critical"]["recall"].as_f64().unwrap(), 2.0 / 3.0);
    assert_eq!(report["severe_under_triage"], 2);
    assert_eq!(report["severe_under_triage_rate"].as_f64().unwrap(), 2.0 / 7.0);
    // Under-triaged: c2, h2, h3, m2 out of 24.
    assert_eq!(report["under_triage_rate"].as_f64().unwrap(), 4.0 / 24.0);
    assert_eq!(report["confusion"]["matrix"][3], serde_json::json!([1, 0, 0, 2]));
    assert_eq!(report["intent"]["accuracy"].as_f64().unwrap(), 23.0 / 24.0);
    assert!(report["calibration"]["categories"]["ece"].as_f64().is_some());
    assert_eq!(report["calibration"]["urgency"]["bins"].as_array().unwrap().len(), 10);

    let slice = |id: &str| report["slices"].as_array().unwrap().iter().find(|s| s["id"] == id).cloned();
    let sms = slice("tag:sms").expect("sms slice");
    assert_eq!(sms["examples"], 4);
    assert_eq!(sms["severe_under_triage"], 1);
    assert!(slice("speaker:parent").is_some());
    assert!(slice("length:1-5").is_some());
    assert!(slice("tag:friendly_grooming").is_none(), "empty slices are left out");

    let interval = &report["confidence_intervals"]["critical_recall"];
    assert!(interval["low"].as_f64().unwrap() <= 2.0 / 3.0);
    assert!(interval["high"].as_f64().unwrap() >= 2.0 / 3.0);

    // The scripted classifier ignores accents and case but not SMS spellings or typos.
    let variants = report["perturbation"]["variants"].as_array().unwrap();
    let fall = |kind: &str, figure: &str| {
        let variant = variants.iter().find(|v| v["kind"] == kind).unwrap();
        variant["falls"].as_array().unwrap().iter().find(|f| f["figure"] == figure).unwrap()["change"].as_f64()
    };
    assert_eq!(fall("accents", "macro_f1"), Some(0.0));
    assert_eq!(fall("case", "urgency_accuracy"), Some(0.0));
    assert!(fall("typos", "urgency_accuracy").unwrap() < 0.0);
    assert!(variants.iter().any(|v| v["kind"] == "all"));

    // errors.jsonl: the under-triaged critical first, then the severe under-triage.
    let errors: Vec<Value> = std::fs::read_to_string(out.join("errors.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let originals: Vec<&Value> = errors.iter().filter(|e| e["variant"] == "original").collect();
    let ids: Vec<&str> = originals.iter().map(|e| e["id"].as_str().unwrap()).collect();
    // Missed categories (m3, l2 missed `none`) before other errors; higher gold urgency first.
    assert_eq!(ids, ["c2", "h2", "h3", "m2", "m3", "l2", "m4", "l3", "l4"]);
    assert_eq!(errors[0]["id"], "c2");
    assert_eq!(errors[0]["danger"], "under_triage_critical");
    assert_eq!(errors[0]["mistakes"][0], "urgency_under:critical>low");
    assert_eq!(errors[0]["text"], "jvai tout arreter pour de bon jcrois");
    assert_eq!(errors[0]["predicted"]["categories"], serde_json::json!(["none"]));
    assert!(errors[0]["scores"]["categories"]["self_harm"].as_f64().is_some());
    let dangers: Vec<&str> = errors.iter().map(|e| e["danger"].as_str().unwrap()).collect();
    let rank = |d: &str| ["under_triage_critical", "severe_under_triage", "under_triage", "missed_category", "other"]
        .iter()
        .position(|x| *x == d)
        .unwrap();
    assert!(dangers.windows(2).all(|w| rank(w[0]) <= rank(w[1])), "{dangers:?}");

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<html lang=\"fr\">"));
    assert_eq!(html.matches("<svg").count(), 3, "F1 bars, urgency heatmap, reliability diagram");
    for needle in ["Rappel des urgences critiques", "Cyberharcèlement", "Urgence prédite", "IC 95 %", "Robustesse"] {
        assert!(html.contains(needle), "report.html lacks {needle:?}");
    }
    // Self-contained: no script, no external file, no link out.
    for needle in ["<script", " src=", " href=", "url(", "@import", "<link"] {
        assert!(!html.contains(needle), "report.html holds {needle:?}");
    }
    // The page names examples by id; their texts stay in errors.jsonl.
    for case in &cases {
        assert!(!html.contains(case.text), "report.html shows the text of {}", case.id);
    }
}

#[test]
fn same_seed_gives_the_same_figures() {
    let cases = cases();
    let strip = |e: Evaluation| {
        let mut value = serde_json::to_value(&e.report).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("throughput");
        object.remove("generated_at");
        (value, serde_json::to_value(&e.errors).unwrap())
    };
    assert_eq!(strip(run(&cases, true)), strip(run(&cases, true)));
}

#[test]
fn guard_fails_on_missed_critical() {
    let cases = cases();
    let good = run(&cases, false);
    let baseline = serde_json::to_value(&good.report).unwrap();

    let mut same = run(&cases, false);
    assert!(same.compare_with("baseline.json", &baseline, 0.0).passed);

    // Worse model: c1 is now predicted low as well.
    let mut worse_cases = cases;
    worse_cases[0].predicted = p(&["self_harm"], "seek_help", "low", "young_person");
    let mut worse = run(&worse_cases, false);
    let comparison = worse.compare_with("baseline.json", &baseline, 0.0);
    assert!(!comparison.passed);
    let failed: Vec<&str> = comparison.failures.iter().map(|f| f.figure.as_str()).collect();
    assert_eq!(failed, ["critical_recall", "severe_under_triage_rate"]);
    // A tolerance above one critical case in three lets it through.
    let current = serde_json::to_value(&worse.report).unwrap();
    assert!(compare("baseline.json", &baseline, &current, 0.34).passed);
}
