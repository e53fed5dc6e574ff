//! The inference queue: a bounded queue in front of model worker threads that group concurrent
//! requests into batches.
//!
//! Invariants:
//! - A request is urgent when the rules raise one of its inputs to `critical`
//!   ([`Classify::rule_urgency`]), checked once when it is submitted.
//! - A request that finds [`BatchConfig::queue_size`] requests waiting gets
//!   [`InferError::Overloaded`] at once, without waiting, unless it is urgent: urgent requests
//!   are refused only at twice that number, so a queue full of other requests does not turn
//!   them away. Requests that a worker has taken off the channel but not yet batched still
//!   count as waiting.
//! - Workers take requests in four groups: urgent requests whose texts fit in one encoder
//!   window, other urgent requests, other requests whose texts fit in one window, then the
//!   rest. Each group keeps arrival order. This changes only the order of work, never a result.
//! - Between two forward passes of a request that needs several, a worker runs at most one batch
//!   of waiting urgent requests, then short ones, whether or not the running request is urgent.
//!   That batch is a single pass and takes only requests that fit in one, so these may
//!   overtake a request that needs several passes in their own group. A forward pass that has
//!   started is never interrupted.
//! - A batch has at most [`BatchConfig::max_batch_tokens`] encoder tokens, except a single
//!   input that is larger on its own, which runs alone.
//! - A lone request on an idle worker runs at once; the wait window applies only once a worker
//!   already holds two or more requests.
//! - Every submitted request gets exactly one reply, or its caller sees the channel close
//!   (when the worker died), which [`Engine::submit`] turns into [`InferError::Internal`].
//! - Workers run on plain OS threads, never on the async executor. A worker that panics is
//!   replaced by a new one, which first classifies a warm-up message; the engine is not ready
//!   while any worker is missing.
//!
//! Nothing here reads, logs or stores message text.

mod batch;
#[cfg(test)]
mod tests;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::triage::classification::Classification;
use crate::triage::classifier::{Classify, ClassifyError, MessageInput};
use crate::triage::taxonomy::Urgency;

use batch::Intake;

/// Sizes and delays of the queue and its batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Maximum number of encoder tokens in one forward pass, summed over its inputs.
    pub max_batch_tokens: usize,
    /// How long a worker that already has two or more requests waits for more.
    pub max_wait: Duration,
    /// Number of waiting requests at which a new request gets [`InferError::Overloaded`]. An
    /// urgent request is refused only at twice that number. Requests being computed do not count.
    pub queue_size: usize,
    /// Number of model worker threads sharing the one model.
    pub workers: usize,
    /// Maximum encoder tokens of one input's text, or no limit. A request with a longer text
    /// gets [`InferError::TooLong`] before any encoder work.
    pub max_text_tokens: Option<usize>,
}

/// Default token limit of one text: at most four 512-token windows. Training messages joined
/// into 4,000 characters, the default character limit, took 980 to 1,130 tokens. Emoji or a
/// repeated accented letter can take one token per character, and 4,000 of them need 11 windows.
pub const DEFAULT_MAX_TEXT_TOKENS: usize = 1536;

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch_tokens: 1024,
            max_wait: Duration::from_millis(2),
            queue_size: 128,
            workers: 1,
            max_text_tokens: Some(DEFAULT_MAX_TEXT_TOKENS),
        }
    }
}

/// Reason a submitted request got no classification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferError {
    #[error("the queue is full")]
    Overloaded,
    #[error("the model is not loaded, or the engine is closed")]
    NotReady,
    #[error("no result within the request timeout")]
    Timeout,
    /// The classifier rejected an input; the message is meant for the client.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// One or more texts have more tokens than [`BatchConfig::max_text_tokens`] allows.
    /// `inputs` lists every one of them, in input order, and is never empty.
    #[error("{} of the request's inputs have more tokens than the limit of {limit}", inputs.len())]
    TooLong { inputs: Vec<TooLongInput>, limit: usize },
    /// The model failed or its worker died; the message is for the log only.
    #[error("{0}")]
    Internal(String),
}

impl From<ClassifyError> for InferError {
    fn from(error: ClassifyError) -> Self {
        match error {
            ClassifyError::InvalidInput(message) => InferError::InvalidInput(message),
            ClassifyError::Internal(error) => InferError::Internal(format!("{error:#}")),
        }
    }
}

/// An input whose text is above the token limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLongInput {
    /// Index of the input in the request's inputs.
    pub input: usize,
    /// Tokens of its normalised text, special tokens included.
    pub tokens: usize,
}

/// Result of one request: its classifications, in input order.
#[derive(Debug, Clone)]
pub struct Batched {
    pub results: Vec<Classification>,
    /// Number of inputs that the worker classified together with this request's, its own
    /// included.
    pub batch_size: usize,
}

/// Receives the engine's measurements, for metrics. Calls come from worker threads and must
/// not block.
pub trait Observer: Send + Sync + 'static {
    /// Records one call of [`Classify::classify`]: its inputs, their token cost and its duration.
    fn batch_done(&self, _inputs: usize, _tokens: usize, _elapsed: Duration) {}
    fn worker_restarted(&self) {}
    /// Records one urgent request taken in by a worker: the rules raise one of its inputs to
    /// `critical`.
    fn request_prioritized(&self) {}
}

/// An observer that ignores everything.
pub struct NoObserver;

impl Observer for NoObserver {}

/// Readiness as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The model was loaded and warmed up once.
    pub started: bool,
    /// Workers running now; below `workers` while one is being restarted.
    pub alive: usize,
    /// Requests waiting for a worker now.
    pub queue_depth: usize,
    pub workers: usize,
    pub closed: bool,
}

impl Status {
    pub fn is_ready(&self) -> bool {
        self.started && !self.closed && self.alive == self.workers
    }
}

/// One request waiting in the queue.
struct Job {
    inputs: Vec<MessageInput>,
    /// The rules raise one of the inputs to `critical`.
    urgent: bool,
    deadline: Instant,
    reply: oneshot::Sender<Result<Batched, InferError>>,
}

/// State shared by the engine handle and its worker threads.
struct Shared {
    config: BatchConfig,
    intake: Mutex<Intake>,
    depth: AtomicUsize,
    /// The classifier the workers run, set by [`Engine::start`]. Its rules mark urgent requests.
    classifier: OnceLock<Arc<dyn Classify>>,
    alive: AtomicUsize,
    started: AtomicBool,
    closed: AtomicBool,
    observer: Arc<dyn Observer>,
}

impl Shared {
    fn intake(&self) -> std::sync::MutexGuard<'_, Intake> {
        // A worker that panicked while holding the lock left the receiver and the lanes intact:
        // requests are only moved between them, never half-updated.
        self.intake.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn dequeued(&self) {
        self.depth.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The queue and its workers. Requests can be submitted before [`Engine::start`]; they get
/// [`InferError::NotReady`] until then.
pub struct Engine {
    shared: Arc<Shared>,
    sender: Mutex<Option<SyncSender<Job>>>,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
}

impl Engine {
    pub fn new(config: BatchConfig, observer: Arc<dyn Observer>) -> Engine {
        let (sender, receiver) = mpsc::sync_channel(2 * config.queue_size.max(1));
        let shared = Arc::new(Shared {
            config,
            intake: Mutex::new(Intake::new(receiver)),
            depth: AtomicUsize::new(0),
            classifier: OnceLock::new(),
            alive: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            observer,
        });
        Engine { shared, sender: Mutex::new(Some(sender)), supervisors: Mutex::new(Vec::new()) }
    }

    pub fn config(&self) -> &BatchConfig {
        &self.shared.config
    }

    /// Warms the classifier up with one message on the calling thread, then starts the
    /// workers. Fails, and starts nothing, when the warm-up fails or panics.
    pub fn start(&self, classifier: Arc<dyn Classify>) -> anyhow::Result<()> {
        anyhow::ensure!(!self.shared.started.swap(true, Ordering::SeqCst), "the engine is already started");
        if let Err(error) = worker::warm_up(classifier.as_ref()) {
            self.shared.started.store(false, Ordering::SeqCst);
            return Err(error);
        }
        // Until the warm-up passes, `submit` finds no classifier and returns NotReady.
        let _ = self.shared.classifier.set(classifier.clone());
        let mut supervisors = self.supervisors.lock().unwrap_or_else(PoisonError::into_inner);
        for index in 0..self.shared.config.workers {
            // Counted before the thread exists, so that the engine is ready as soon as this returns.
            self.shared.alive.fetch_add(1, Ordering::SeqCst);
            let (shared, classifier) = (self.shared.clone(), classifier.clone());
            let handle = std::thread::Builder::new()
                .name(format!("model-supervisor-{index}"))
                .spawn(move || worker::supervise(shared, classifier, index))?;
            supervisors.push(handle);
        }
        Ok(())
    }

    pub fn status(&self) -> Status {
        Status {
            started: self.shared.started.load(Ordering::SeqCst),
            alive: self.shared.alive.load(Ordering::SeqCst),
            queue_depth: self.shared.depth.load(Ordering::SeqCst),
            workers: self.shared.config.workers,
            closed: self.shared.closed.load(Ordering::SeqCst),
        }
    }

    /// Requests waiting for a worker now.
    pub fn queue_depth(&self) -> usize {
        self.shared.depth.load(Ordering::SeqCst)
    }

    /// Queues the inputs as one request and waits for their classifications, at most `timeout`
    /// from now, queue wait included.
    pub async fn submit(&self, inputs: Vec<MessageInput>, timeout: Duration) -> Result<Batched, InferError> {
        let Some(classifier) = self.shared.classifier.get() else { return Err(InferError::NotReady) };
        let urgent = inputs.iter().any(|input| classifier.rule_urgency(input) == Some(Urgency::Critical));
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job { inputs, urgent, deadline: Instant::now() + timeout, reply })?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(InferError::Internal("the model worker stopped before returning a result".into())),
            Err(_) => Err(InferError::Timeout),
        }
    }

    fn enqueue(&self, job: Job) -> Result<(), InferError> {
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = sender.as_ref() else { return Err(InferError::NotReady) };
        // Counted before sending so that a worker's decrement can never come first. The count,
        // not the channel's capacity, bounds the queue: a worker moves every queued request off
        // the channel into its lanes, and those requests still wait.
        let queue_size = self.shared.config.queue_size.max(1);
        let limit = if job.urgent { 2 * queue_size } else { queue_size };
        if self.shared.depth.fetch_add(1, Ordering::SeqCst) >= limit {
            self.shared.depth.fetch_sub(1, Ordering::SeqCst);
            return Err(InferError::Overloaded);
        }
        match sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.shared.depth.fetch_sub(1, Ordering::SeqCst);
                match error {
                    TrySendError::Full(_) => Err(InferError::Overloaded),
                    TrySendError::Disconnected(_) => Err(InferError::NotReady),
                }
            }
        }
    }

    /// Rejects new requests, lets the workers finish the queued ones, and waits for them to
    /// exit. Blocks: call it from a blocking context.
    ///
    /// NOTE: a classifier call that never returns keeps this waiting as well.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        drop(self.sender.lock().unwrap_or_else(PoisonError::into_inner).take());
        let supervisors = std::mem::take(&mut *self.supervisors.lock().unwrap_or_else(PoisonError::into_inner));
        for handle in supervisors {
            let _ = handle.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Without a sender the workers drain the queue and exit; they are not joined here, so
        // dropping an engine never blocks an async task.
        self.shared.closed.store(true, Ordering::SeqCst);
        drop(self.sender.get_mut().unwrap_or_else(PoisonError::into_inner).take());
    }
}
