//! Helpers shared by the HTTP test binaries: the real model loaded once, in-process requests,
//! log capture, and classifier doubles for the queue mechanics (overload, timeout, panic,
//! worker restart), which the real model cannot produce on demand.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use cybertriage::http::{self, AppState, Config};
use cybertriage::model::base::default_models_dir;
use cybertriage::triage::classification::{
    CategoryScore, Classification, Handoff, LabelScore, ModelInfo, UrgencyResult,
};
use cybertriage::triage::classifier::{
    default_model_dir, Classifier, Classify, ClassifyError, MessageInput, TokenCost,
};
use cybertriage::triage::taxonomy;

// ---------------------------------------------------------------------------------------------
// The real model

/// Returns the committed model, loaded once per test binary (about 0.8 GB and a few seconds).
pub fn real_classifier() -> Arc<dyn Classify> {
    static MODEL: OnceLock<Arc<dyn Classify>> = OnceLock::new();
    MODEL.get_or_init(load_real_classifier).clone()
}

fn load_real_classifier() -> Arc<dyn Classify> {
    let models_dir = default_models_dir();
    let classifier = Classifier::load(&models_dir, &default_model_dir(&models_dir))
        .expect("the committed model loads (run `cybertriage fetch-base` once for the base encoder)");
    Arc::new(classifier)
}

/// Returns the default configuration with a timeout long enough for a loaded machine: the test
/// binaries run many model workers at once on few cores, and no test here is about speed.
pub fn test_config() -> Config {
    Config { timeout: std::time::Duration::from_secs(600), ..Config::default() }
}

/// Builds a started service on the real model.
pub fn real_app(config: Config) -> (Router, AppState) {
    app_with(config, real_classifier())
}

/// Builds a started service on `classifier`.
pub fn app_with(config: Config, classifier: Arc<dyn Classify>) -> (Router, AppState) {
    let state = AppState::new(config);
    state.start(classifier).expect("the classifier passes its warm-up");
    (http::router(state.clone()), state)
}

// ---------------------------------------------------------------------------------------------
// Requests

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// Returns the `error.code` of an error body, after checking the body's shape.
    pub fn error_code(&self) -> String {
        let body = self.json();
        let error = body["error"].as_object().unwrap_or_else(|| panic!("not an error body: {body}"));
        assert_eq!(error.len(), 2, "an error holds exactly code and message: {body}");
        assert!(!error["message"].as_str().unwrap().is_empty());
        error["code"].as_str().unwrap().to_string()
    }

    pub fn error_message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap().to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.expect("the router never fails");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("the body is readable").to_bytes();
    Answer { status, headers, body }
}

pub async fn get(app: &Router, path: &str) -> Answer {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

pub async fn post_json(app: &Router, path: &str, body: &Value) -> Answer {
    post_raw(app, path, serde_json::to_vec(body).unwrap()).await
}

pub async fn post_raw(app: &Router, path: &str, body: impl Into<Body>) -> Answer {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    send(app, request).await
}

pub async fn classify(app: &Router, text: &str) -> Answer {
    post_json(app, "/v1/classify", &serde_json::json!({ "text": text })).await
}

// ---------------------------------------------------------------------------------------------
// Log capture

/// Everything logged by this test binary, at every level, including `log` records.
#[derive(Clone)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber on first use; later calls return the same buffer.
pub fn logs() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init()
            .expect("no other subscriber in this test binary");
        Logs(buffer)
    })
    .clone()
}

// ---------------------------------------------------------------------------------------------
// Classifier doubles

/// Builds a classification whose scores derive from the text, so equal texts give equal results.
pub fn fake_classification(input: &MessageInput) -> Classification {
    let seed = input.text.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let mut categories: Vec<CategoryScore> = taxonomy::CATEGORIES
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let score = ((seed.wrapping_add(i as u32 * 977)) % 1000) as f32 / 1000.0;
            CategoryScore { id: label.id.into(), label: label.label.into(), score, detected: score > 0.5, added_by_rule: false }
        })
        .collect();
    categories.sort_by(|a, b| b.score.total_cmp(&a.score));
    let level = taxonomy::Urgency::from_index(seed as usize % 4).unwrap();
    Classification {
        categories,
        intent: LabelScore { id: "seek_help".into(), label: "Demande d'aide".into(), score: 0.9 },
        urgency: UrgencyResult {
            level: level.id().into(),
            label: level.label().into(),
            score: 0.8,
            scores: taxonomy::URGENCIES.iter().map(|l| (l.id.to_string(), 0.25)).collect::<BTreeMap<_, _>>(),
            raised_by_rule: None,
            rules_matched: Vec::new(),
        },
        speaker: LabelScore { id: "young_person".into(), label: "Jeune concerné·e".into(), score: 0.7 },
        handoff: Handoff { action: "none".into(), reasons: Vec::new() },
        uncertain: false,
        unsupported_script: false,
        resources: Vec::new(),
        model: fake_model_info(),
        windows: 1,
    }
}

pub fn fake_model_info() -> ModelInfo {
    ModelInfo { name: "test-double".into(), version: "0".into(), base: "none".into(), rules: "test".into() }
}

/// A text whose classification makes the double fail in the way the text names.
pub const PANIC_TEXT: &str = "double: panic please";
pub const INVALID_TEXT: &str = "double: reject this input";
pub const INTERNAL_TEXT: &str = "double: fail internally";
pub const UNCOUNTABLE_TEXT: &str = "double: fail to count the tokens";
/// A text that the double's rules raise to `critical`, as the real rules raise explicit
/// suicidal wording, so that the queue runs its request first.
pub const CRITICAL_TEXT: &str = "double: critical by rule";
/// What the double puts in its internal error, which must reach the log but not the client.
pub const INTERNAL_DETAIL: &str = "simulated model failure 4711";

/// A controllable classifier double.
///
/// - `hold()` closes a gate: classify calls block in the worker until `release()`.
/// - Texts equal to [`PANIC_TEXT`], [`INVALID_TEXT`] or [`INTERNAL_TEXT`] make it panic, reject
///   the input, or fail with an internal error.
/// - [`UNCOUNTABLE_TEXT`] makes its token count fail with an internal error.
/// - `hold_rewarm()` makes the warm-up of a restarted worker block until `release()`.
/// - [`CRITICAL_TEXT`] is the one text that its rules raise to `critical`.
#[derive(Default)]
pub struct Fake {
    gate: Gate,
    hold_rewarm: AtomicBool,
    warmed_up: AtomicUsize,
    /// Number of inputs of each classify call, warm-ups excluded.
    pub calls: Mutex<Vec<usize>>,
    /// Texts of the inputs of every classify call, in the order classified, warm-ups excluded.
    pub texts: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    /// Number of calls currently blocked at the gate.
    waiting: Mutex<usize>,
    waiting_changed: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        if !*closed {
            return;
        }
        *self.waiting.lock().unwrap() += 1;
        self.waiting_changed.notify_all();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
        *self.waiting.lock().unwrap() -= 1;
    }
}

const WARM_UP_PREFIX: &str = "Bonjour, j'ai une question";

impl Fake {
    pub fn new() -> Arc<Self> {
        Arc::new(Fake::default())
    }

    pub fn hold(&self) {
        *self.gate.closed.lock().unwrap() = true;
    }

    pub fn hold_rewarm(&self) {
        self.hold_rewarm.store(true, Ordering::SeqCst);
        self.hold();
    }

    pub fn release(&self) {
        *self.gate.closed.lock().unwrap() = false;
        self.gate.opened.notify_all();
    }

    /// Blocks the calling thread until `count` calls wait at the closed gate.
    pub fn wait_for_held(&self, count: usize) {
        let mut waiting = self.gate.waiting.lock().unwrap();
        while *waiting < count {
            waiting = self.gate.waiting_changed.wait(waiting).unwrap();
        }
    }

    pub fn calls(&self) -> Vec<usize> {
        self.calls.lock().unwrap().clone()
    }

    pub fn texts(&self) -> Vec<String> {
        self.texts.lock().unwrap().clone()
    }
}

impl Classify for Fake {
    fn classify(&self, inputs: &[MessageInput]) -> Result<Vec<Classification>, ClassifyError> {
        let warm_up = inputs.len() == 1 && inputs[0].text.starts_with(WARM_UP_PREFIX);
        if warm_up {
            let first = self.warmed_up.fetch_add(1, Ordering::SeqCst) == 0;
            if !first && self.hold_rewarm.load(Ordering::SeqCst) {
                self.gate.pass();
            }
            return Ok(inputs.iter().map(fake_classification).collect());
        }
        self.calls.lock().unwrap().push(inputs.len());
        self.texts.lock().unwrap().extend(inputs.iter().map(|input| input.text.clone()));
        if !self.hold_rewarm.load(Ordering::SeqCst) {
            self.gate.pass();
        }
        for input in inputs {
            match input.text.as_str() {
                PANIC_TEXT => panic!("the double panics as asked"),
                INVALID_TEXT => return Err(ClassifyError::InvalidInput("the double rejects this input".into())),
                INTERNAL_TEXT => return Err(ClassifyError::Internal(anyhow::anyhow!(INTERNAL_DETAIL))),
                _ => {}
            }
        }
        Ok(inputs.iter().map(fake_classification).collect())
    }

    fn token_cost(&self, input: &MessageInput) -> Result<TokenCost, ClassifyError> {
        if input.text == UNCOUNTABLE_TEXT {
            return Err(ClassifyError::Internal(anyhow::anyhow!(INTERNAL_DETAIL)));
        }
        let text = input.text.split_whitespace().count() + 2;
        let context = input.context.iter().map(|c| c.split_whitespace().count()).sum::<usize>();
        Ok(TokenCost { text, total: text + context })
    }

    fn rule_urgency(&self, input: &MessageInput) -> Option<taxonomy::Urgency> {
        (input.text == CRITICAL_TEXT).then_some(taxonomy::Urgency::Critical)
    }

    fn model_info(&self) -> ModelInfo {
        fake_model_info()
    }
}
