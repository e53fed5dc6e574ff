//! Scheduling tests on a started engine with a classifier double whose every call waits for the
//! test's permission, so that each test decides when one forward pass ends and the next begins.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::worker::WARM_UP_TEXT;
use super::{BatchConfig, Batched, Engine, InferError, Observer};
use crate::triage::classification::{Classification, Handoff, LabelScore, ModelInfo, UrgencyResult};
use crate::triage::classifier::{Classify, ClassifyError, MessageInput, TokenCost};
use crate::triage::taxonomy::Urgency;

/// Upper bound on every wait, so that a wrong schedule fails the test instead of hanging it.
/// It is not a speed target: every step here takes microseconds.
const BOUND: Duration = Duration::from_secs(30);

/// Word that the double's rules raise to `critical`, which makes its request urgent.
const CRITICAL_WORD: &str = "critique";
/// Word that makes the double panic.
const PANIC_WORD: &str = "panique";
/// Word that makes the double reject the call's inputs.
const INVALID_WORD: &str = "invalide";
/// Word that makes the double's token count fail.
const UNCOUNTABLE_WORD: &str = "incomptable";

/// A classifier double. Each call other than the warm-up sends its texts on `started`, then
/// waits for one permit. Each word costs one token. A result carries its input's text in
/// `intent.label`, so that tests can check which result went where.
struct Stepped {
    started: mpsc::UnboundedSender<Vec<String>>,
    permits: Mutex<std_mpsc::Receiver<()>>,
}

impl Classify for Stepped {
    fn classify(&self, inputs: &[MessageInput]) -> Result<Vec<Classification>, ClassifyError> {
        if inputs.len() == 1 && inputs[0].text == WARM_UP_TEXT {
            return Ok(inputs.iter().map(labelled).collect());
        }
        let texts: Vec<String> = inputs.iter().map(|input| input.text.clone()).collect();
        let has_word = |word: &str| texts.iter().any(|text| text.split(' ').any(|w| w == word));
        let _ = self.started.send(texts.clone());
        // A test that ends, or fails, drops the sender, and the call ends instead of hanging.
        let permit = self.permits.lock().unwrap_or_else(PoisonError::into_inner).recv();
        if permit.is_err() {
            return Err(ClassifyError::Internal(anyhow::anyhow!("the test no longer grants passes")));
        }
        if has_word(PANIC_WORD) {
            panic!("the double panics as asked");
        }
        if has_word(INVALID_WORD) {
            return Err(ClassifyError::InvalidInput("the double rejects this input".into()));
        }
        Ok(inputs.iter().map(labelled).collect())
    }

    fn token_cost(&self, input: &MessageInput) -> Result<TokenCost, ClassifyError> {
        if input.text.split(' ').any(|word| word == UNCOUNTABLE_WORD) {
            return Err(ClassifyError::Internal(anyhow::anyhow!("the double fails to count the tokens")));
        }
        let words = input.text.split(' ').count();
        Ok(TokenCost { text: words, total: words })
    }

    fn rule_urgency(&self, input: &MessageInput) -> Option<Urgency> {
        input.text.split(' ').any(|word| word == CRITICAL_WORD).then_some(Urgency::Critical)
    }

    fn model_info(&self) -> ModelInfo {
        double_model_info()
    }
}

fn double_model_info() -> ModelInfo {
    ModelInfo { name: "stepped-double".into(), version: "0".into(), base: "none".into(), rules: "test".into() }
}

/// Returns a classification that carries the input's text in `intent.label`.
fn labelled(input: &MessageInput) -> Classification {
    Classification {
        categories: Vec::new(),
        intent: LabelScore { id: "test".into(), label: input.text.clone(), score: 1.0 },
        urgency: UrgencyResult {
            level: "low".into(),
            label: "Faible".into(),
            score: 1.0,
            scores: Default::default(),
            raised_by_rule: None,
            rules_matched: Vec::new(),
        },
        speaker: LabelScore { id: "test".into(), label: "test".into(), score: 1.0 },
        handoff: Handoff { action: "none".into(), reasons: Vec::new() },
        uncertain: false,
        unsupported_script: false,
        resources: Vec::new(),
        model: double_model_info(),
        windows: 1,
    }
}

/// Returns the texts that a request's results carry, in result order.
fn labels(batched: &Batched) -> Vec<String> {
    batched.results.iter().map(|result| result.intent.label.clone()).collect()
}

/// Returns `count` texts of `words` words each, numbered, all different.
fn texts(prefix: &str, count: usize, words: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let mut text = vec![format!("{prefix}{i}")];
            text.extend(std::iter::repeat_n("mot".to_string(), words - 1));
            text.join(" ")
        })
        .collect()
}

type Reply = JoinHandle<Result<Batched, InferError>>;

/// Counts worker restarts.
#[derive(Default)]
struct Restarts(AtomicUsize);

impl Observer for Restarts {
    fn worker_restarted(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A started engine on a [`Stepped`] double, and the test's side of the double.
struct Harness {
    engine: Arc<Engine>,
    restarts: Arc<Restarts>,
    started: mpsc::UnboundedReceiver<Vec<String>>,
    permits: std_mpsc::Sender<()>,
}

impl Harness {
    fn new(max_batch_tokens: usize) -> Harness {
        Harness::with_workers(max_batch_tokens, 1)
    }

    fn with_workers(max_batch_tokens: usize, workers: usize) -> Harness {
        Harness::with_config(BatchConfig {
            max_batch_tokens,
            max_wait: Duration::ZERO,
            queue_size: 16,
            workers,
            max_text_tokens: None,
        })
    }

    fn with_config(config: BatchConfig) -> Harness {
        let (started_sender, started) = mpsc::unbounded_channel();
        let (permits, permit_receiver) = std_mpsc::channel();
        let double = Stepped { started: started_sender, permits: Mutex::new(permit_receiver) };
        let restarts = Arc::new(Restarts::default());
        let engine = Arc::new(Engine::new(config, restarts.clone()));
        engine.start(Arc::new(double)).expect("the double passes its warm-up");
        Harness { engine, restarts, started, permits }
    }

    /// Submits one request and returns the task that waits for its reply. The request is queued
    /// once `queue_depth` counts it or a call shows its texts.
    fn submit(&self, texts: &[String]) -> Reply {
        let engine = self.engine.clone();
        let inputs = texts.iter().map(MessageInput::new).collect();
        // Longer than any test; the waits below are bounded by BOUND instead.
        tokio::spawn(async move { engine.submit(inputs, Duration::from_secs(600)).await })
    }

    /// Waits for the next classifier call to start and returns its texts.
    async fn next_call(&mut self) -> Vec<String> {
        let call = timeout(BOUND, self.started.recv()).await.expect("a classifier call starts within the bound");
        call.expect("the double is alive")
    }

    /// Lets the current classifier call return.
    fn finish_call(&self) {
        self.permits.send(()).expect("the double waits for permits");
    }

    /// Waits for the next call, checks its texts, and lets it return.
    async fn run_call(&mut self, expected: &[String], description: &str) {
        assert_eq!(self.next_call().await, expected, "the next call runs {description}");
        self.finish_call();
    }

    /// Submits the large request and waits for its first pass, which covers `first_pass` inputs.
    /// Then submits the `queued` requests one at a time, each once the queue counts the one
    /// before, so that they arrive in this order. The first pass is still running on return.
    async fn queue_behind_first_pass<const N: usize>(
        &mut self,
        large: &[String],
        first_pass: usize,
        queued: [&[String]; N],
    ) -> (Reply, [Reply; N]) {
        let large_reply = self.submit(large);
        assert_eq!(self.next_call().await, large[..first_pass], "the first call runs the first pass");
        let mut replies = Vec::new();
        for texts in queued {
            replies.push(self.submit(texts));
            self.wait_for_queue_depth(replies.len()).await;
        }
        (large_reply, replies.try_into().expect("one reply per queued request"))
    }

    async fn wait_for_queue_depth(&self, depth: usize) {
        let reached = async {
            while self.engine.queue_depth() != depth {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        timeout(BOUND, reached).await.unwrap_or_else(|_| panic!("the queue depth never reached {depth}"));
    }

    /// Waits until the one worker has died once and its replacement has passed its warm-up.
    async fn wait_for_restart(&self) {
        let reached = async {
            while self.restarts.0.load(Ordering::SeqCst) != 1 || self.engine.status().alive != 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        timeout(BOUND, reached).await.expect("the worker is restarted within the bound");
    }
}

async fn reply(handle: Reply) -> Result<Batched, InferError> {
    timeout(BOUND, handle).await.expect("the reply comes within the bound").expect("the submit task ends normally")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_request_runs_between_passes() {
    let mut harness = Harness::new(10);
    // Eight inputs of 5 tokens under a budget of 10: four passes of two inputs.
    let large_texts = texts("grand", 8, 5);
    let urgent_texts = vec![format!("{CRITICAL_WORD} ce soir")];
    let (large, [urgent]) = harness.queue_behind_first_pass(&large_texts, 2, [&urgent_texts]).await;
    harness.finish_call();

    harness.run_call(&urgent_texts, "the urgent request after the first pass").await;
    let urgent = reply(urgent).await.expect("the urgent request gets its result");
    assert_eq!(labels(&urgent), urgent_texts);
    assert_eq!(urgent.batch_size, 1);
    assert!(!large.is_finished(), "three passes of the large request have not run yet");

    for pass in 1..4 {
        harness.run_call(&large_texts[2 * pass..2 * pass + 2], "the next pass of the large request").await;
    }
    let large = reply(large).await.expect("the large request gets its results");
    assert_eq!(labels(&large), large_texts, "results stay in input order");
    assert_eq!(large.batch_size, 8);
    assert_eq!(harness.engine.queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_request_runs_between_long_passes() {
    let mut harness = Harness::new(600);
    // Three texts above one 512-token window, one per pass: the long lane.
    let large_texts = texts("long", 3, 520);
    let later_long_texts = texts("autre", 1, 530);
    let short_texts = vec!["une question courte".to_string()];
    let (large, [later_long, short]) =
        harness.queue_behind_first_pass(&large_texts, 1, [&later_long_texts, &short_texts]).await;
    harness.finish_call();

    harness.run_call(&short_texts, "the short request after the first pass").await;
    harness.run_call(&large_texts[1..2], "the second pass of the large request").await;
    harness.run_call(&large_texts[2..3], "the last pass, since a long request never runs in between").await;
    harness.run_call(&later_long_texts, "the later long request").await;

    assert_eq!(labels(&reply(short).await.unwrap()), short_texts);
    assert_eq!(labels(&reply(large).await.unwrap()), large_texts);
    assert_eq!(labels(&reply(later_long).await.unwrap()), later_long_texts);
    assert_eq!(harness.engine.queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_request_runs_between_short_passes() {
    let mut harness = Harness::new(10);
    // Every text fits one window, so the large request is in the short lane, as a batch of
    // chat messages sent to `/v1/classify/batch` is.
    let large_texts = texts("lot", 4, 5);
    let short_texts = vec!["bonjour".to_string()];
    let (large, [short]) = harness.queue_behind_first_pass(&large_texts, 2, [&short_texts]).await;
    harness.finish_call();

    harness.run_call(&short_texts, "the short request after the first pass").await;
    harness.run_call(&large_texts[2..4], "the last pass of the large request").await;
    assert_eq!(labels(&reply(short).await.unwrap()), short_texts);
    assert_eq!(labels(&reply(large).await.unwrap()), large_texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_batch_lets_short_in() {
    let mut harness = Harness::new(10);
    // One critical text makes the whole large request urgent: three passes of two inputs.
    let mut large_texts = texts("grand", 6, 5);
    large_texts[5] = format!("{CRITICAL_WORD} a b c d");
    // Two short requests of 6 tokens, which do not fit in one batch of 10 together.
    let short_texts: Vec<Vec<String>> = (0..2).map(|i| texts(&format!("court{i}-"), 1, 6)).collect();
    let urgent_texts = vec![format!("{CRITICAL_WORD} maintenant")];
    let (large, [first_short, second_short, urgent]) =
        harness.queue_behind_first_pass(&large_texts, 2, [&short_texts[0], &short_texts[1], &urgent_texts]).await;
    harness.finish_call();

    let together = [urgent_texts.clone(), short_texts[0].clone()].concat();
    harness.run_call(&together, "the urgent request, then the older short one").await;
    assert_eq!(labels(&reply(urgent).await.unwrap()), urgent_texts);
    assert_eq!(labels(&reply(first_short).await.unwrap()), short_texts[0]);
    assert!(!large.is_finished(), "two passes of the urgent large request have not run yet");

    harness.run_call(&large_texts[2..4], "the second pass of the urgent large request").await;
    harness.run_call(&short_texts[1], "the second short request, one batch per pass").await;
    assert_eq!(labels(&reply(second_short).await.unwrap()), short_texts[1]);
    harness.run_call(&large_texts[4..6], "the last pass of the urgent large request").await;
    assert_eq!(labels(&reply(large).await.unwrap()), large_texts);
    assert_eq!(harness.engine.queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_short_before_urgent_long() {
    let mut harness = Harness::new(600);
    // Urgent texts of 600 tokens: each is above one 512-token window and fills a pass alone.
    let critical_long = |prefix: &str| vec![format!("{CRITICAL_WORD} {}", texts(prefix, 1, 599)[0])];
    let running_texts = critical_long("encours");
    let long_texts = [critical_long("long0-"), critical_long("long1-")];
    let urgent_short_texts = [vec![format!("{CRITICAL_WORD} aide0")], vec![format!("{CRITICAL_WORD} aide1")]];
    let short_texts = vec!["une question courte".to_string()];
    let queued = [&long_texts[0][..], &long_texts[1], &short_texts, &urgent_short_texts[0], &urgent_short_texts[1]];
    let (running, [first_long, second_long, short, first_urgent, second_urgent]) =
        harness.queue_behind_first_pass(&running_texts, 1, queued).await;
    harness.finish_call();
    assert_eq!(labels(&reply(running).await.unwrap()), running_texts);

    let together = urgent_short_texts.concat();
    harness.run_call(&together, "both urgent short requests, in arrival order").await;
    assert_eq!(labels(&reply(first_urgent).await.unwrap()), urgent_short_texts[0]);
    assert_eq!(labels(&reply(second_urgent).await.unwrap()), urgent_short_texts[1]);
    harness.run_call(&long_texts[0], "the older urgent long request").await;
    harness.run_call(&long_texts[1], "the newer urgent long request").await;
    harness.run_call(&short_texts, "the short request that is not urgent, after every urgent one").await;

    assert_eq!(labels(&reply(first_long).await.unwrap()), long_texts[0]);
    assert_eq!(labels(&reply(second_long).await.unwrap()), long_texts[1]);
    assert_eq!(labels(&reply(short).await.unwrap()), short_texts);
    assert_eq!(harness.engine.queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_interleaved_batch_per_pass() {
    let mut harness = Harness::new(10);
    // One input of 10 tokens per pass, three passes.
    let large_texts = texts("grand", 3, 10);
    // Urgent requests of 6 tokens: two do not fit in one batch of 10.
    let urgent_texts: Vec<Vec<String>> =
        (0..3).map(|i| vec![format!("{CRITICAL_WORD} urgent{i} a b c d")]).collect();
    let queued = [&urgent_texts[0][..], &urgent_texts[1], &urgent_texts[2]];
    let (large, urgent) = harness.queue_behind_first_pass(&large_texts, 1, queued).await;
    harness.finish_call();

    harness.run_call(&urgent_texts[0], "the first urgent request").await;
    harness.run_call(&large_texts[1..2], "a pass of the large request between two urgent batches").await;
    harness.run_call(&urgent_texts[1], "the second urgent request").await;
    harness.run_call(&large_texts[2..3], "the last pass of the large request").await;
    harness.run_call(&urgent_texts[2], "the third urgent request, after the large one").await;

    for (answer, expected) in urgent.into_iter().zip(&urgent_texts) {
        assert_eq!(&labels(&reply(answer).await.unwrap()), expected);
    }
    assert_eq!(labels(&reply(large).await.unwrap()), large_texts);
    assert_eq!(harness.engine.queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_between_passes_fails_alone() {
    let mut harness = Harness::new(10);
    let large_texts = texts("grand", 4, 5);
    let valid_texts = vec![format!("{CRITICAL_WORD} valide")];
    let invalid_texts = vec![format!("{CRITICAL_WORD} {INVALID_WORD}")];
    let (large, [valid, invalid]) =
        harness.queue_behind_first_pass(&large_texts, 2, [&valid_texts, &invalid_texts]).await;
    harness.finish_call();

    let together = [valid_texts.clone(), invalid_texts.clone()].concat();
    harness.run_call(&together, "both urgent requests in one batch").await;
    harness.run_call(&valid_texts, "the valid request again on its own").await;
    harness.run_call(&invalid_texts, "the invalid request again on its own").await;
    harness.run_call(&large_texts[2..4], "the last pass of the large request").await;

    assert_eq!(labels(&reply(valid).await.unwrap()), valid_texts);
    let rejected = reply(invalid).await.unwrap_err();
    assert!(matches!(rejected, InferError::InvalidInput(_)), "{rejected:?}");
    assert_eq!(labels(&reply(large).await.unwrap()), large_texts);
    assert_eq!(harness.engine.queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_between_passes_restarts_worker() {
    let mut harness = Harness::new(10);
    let large_texts = texts("grand", 4, 5);
    let panicking_texts = vec![format!("{CRITICAL_WORD} {PANIC_WORD}")];
    let (large, [panicking]) = harness.queue_behind_first_pass(&large_texts, 2, [&panicking_texts]).await;
    harness.finish_call();

    harness.run_call(&panicking_texts, "the urgent request that panics").await;
    let error = reply(panicking).await.unwrap_err();
    assert!(matches!(error, InferError::Internal(_)), "{error:?}");
    let error = reply(large).await.unwrap_err();
    assert!(matches!(error, InferError::Internal(_)), "the interrupted request dies with its worker: {error:?}");
    harness.wait_for_restart().await;

    let after_texts = vec!["après".to_string()];
    let after = harness.submit(&after_texts);
    harness.run_call(&after_texts, "a new request on the restarted worker").await;
    assert_eq!(labels(&reply(after).await.unwrap()), after_texts);
    assert_eq!(harness.engine.queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_interrupted_request() {
    let mut harness = Harness::new(10);
    let large_texts = texts("grand", 4, 5);
    let urgent_texts = vec![format!("{CRITICAL_WORD} ce soir")];
    let (large, [urgent]) = harness.queue_behind_first_pass(&large_texts, 2, [&urgent_texts]).await;
    let engine = harness.engine.clone();
    let closing = tokio::task::spawn_blocking(move || engine.close());
    let closed = async {
        while !harness.engine.status().closed {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    timeout(BOUND, closed).await.expect("close starts within the bound");
    harness.finish_call();

    harness.run_call(&urgent_texts, "the urgent request after the first pass").await;
    harness.run_call(&large_texts[2..4], "the last pass of the large request").await;
    assert_eq!(labels(&reply(urgent).await.unwrap()), urgent_texts);
    assert_eq!(labels(&reply(large).await.unwrap()), large_texts);
    timeout(BOUND, closing).await.expect("close returns within the bound").unwrap();
    let rejected = harness.engine.submit(vec![MessageInput::new("trop tard")], BOUND).await.unwrap_err();
    assert_eq!(rejected, InferError::NotReady);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_worker_does_not_block_passes() {
    // The idle second worker keeps the intake locked while it waits for a request. The busy
    // worker must not wait for that lock between passes, or its second pass would start only
    // after a new request.
    let mut harness = Harness::with_workers(10, 2);
    let large_texts = texts("grand", 4, 5);
    let large = harness.submit(&large_texts);
    harness.run_call(&large_texts[0..2], "the first pass of the large request").await;
    harness.run_call(&large_texts[2..4], "the second pass, with no other request sent").await;
    assert_eq!(labels(&reply(large).await.unwrap()), large_texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_token_count_is_internal() {
    // A token limit is set: the failed count must not read as a text above it.
    let config = BatchConfig { max_batch_tokens: 10, max_wait: Duration::ZERO, queue_size: 16, workers: 1, max_text_tokens: Some(5) };
    let mut harness = Harness::with_config(config);
    let failing_texts = vec!["bonjour".to_string(), format!("{UNCOUNTABLE_WORD} texte")];
    let error = reply(harness.submit(&failing_texts)).await.unwrap_err();
    assert!(matches!(error, InferError::Internal(_)), "{error:?}");
    assert_eq!(harness.engine.queue_depth(), 0);

    // The failed request never reached the classifier: the next call runs the next request.
    let after_texts = vec!["après".to_string()];
    let after = harness.submit(&after_texts);
    harness.run_call(&after_texts, "the request sent after the failed one").await;
    assert_eq!(labels(&reply(after).await.unwrap()), after_texts);
}
