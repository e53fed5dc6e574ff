//! Model worker threads: run batches, reply to each request, and restart after a panic.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, TryLockError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::triage::classification::Classification;
use crate::triage::classifier::{Classify, MessageInput, TokenCost};

use super::batch::{Admission, Costed};
use super::{Batched, InferError, Shared, TooLongInput};

/// Invented message classified once before a worker counts as ready.
pub(super) const WARM_UP_TEXT: &str = "Bonjour, j'ai une question sur un message reçu hier.";

/// Maximum pause between two failed warm-ups of a restarted worker.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Classifies the warm-up message, turning a panic into an error.
pub(super) fn warm_up(classifier: &dyn Classify) -> Result<()> {
    let input = [MessageInput::new(WARM_UP_TEXT)];
    match catch_unwind(AssertUnwindSafe(|| classifier.classify(&input))) {
        Ok(Ok(results)) if results.len() == 1 => Ok(()),
        Ok(Ok(results)) => bail!("the warm-up returned {} results for 1 input", results.len()),
        Ok(Err(error)) => Err(anyhow!(error).context("the warm-up classification failed")),
        Err(_) => bail!("the classifier panicked during the warm-up"),
    }
}

/// Runs worker `index` on its own thread and replaces it whenever it dies, until the engine
/// closes. The caller has already counted this worker as alive.
pub(super) fn supervise(shared: Arc<Shared>, classifier: Arc<dyn Classify>, index: usize) {
    loop {
        let worker = {
            let (shared, classifier) = (shared.clone(), classifier.clone());
            std::thread::Builder::new()
                .name(format!("model-worker-{index}"))
                .spawn(move || run(&shared, classifier.as_ref()))
        };
        let clean_exit = match worker {
            Ok(handle) => handle.join().is_ok(),
            Err(error) => {
                tracing::error!(worker = index, %error, "failed to start a model worker thread");
                false
            }
        };
        shared.alive.fetch_sub(1, Ordering::SeqCst);
        if clean_exit || shared.closed.load(Ordering::SeqCst) {
            return;
        }
        shared.observer.worker_restarted();
        // The panic payload is not logged: it may quote the input, as str slicing panics do.
        tracing::error!(worker = index, "model worker died; restarting it");
        if !rewarm(&shared, classifier.as_ref(), index) {
            return;
        }
        shared.alive.fetch_add(1, Ordering::SeqCst);
        tracing::info!(worker = index, "model worker restarted");
    }
}

/// Repeats the warm-up with a growing pause until it passes (true) or the engine closes (false).
fn rewarm(shared: &Shared, classifier: &dyn Classify, index: usize) -> bool {
    let mut pause = Duration::from_millis(100);
    loop {
        if shared.closed.load(Ordering::SeqCst) {
            return false;
        }
        match warm_up(classifier) {
            Ok(()) => return true,
            Err(error) => {
                tracing::error!(
                    worker = index,
                    error = format!("{error:#}"),
                    "restarted model worker failed its warm-up"
                );
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

/// Takes requests in with the classifier's token counts.
struct ClassifierAdmission<'a> {
    shared: &'a Shared,
    classifier: &'a dyn Classify,
}

impl Admission for ClassifierAdmission<'_> {
    fn cost(&self, input: &MessageInput) -> Result<TokenCost, InferError> {
        Ok(self.classifier.token_cost(input)?)
    }

    fn dequeued(&self) {
        self.shared.dequeued();
    }

    fn prioritized(&self) {
        self.shared.observer.request_prioritized();
    }
}

/// Runs the worker loop: takes batches until the queue is closed and empty.
fn run(shared: &Shared, classifier: &dyn Classify) {
    let admission = ClassifierAdmission { shared, classifier };
    loop {
        let batch = shared.intake().next_batch(&shared.config, &admission);
        let Some(batch) = batch else { return };
        let mut between_passes = || run_interleaved(shared, classifier, &admission);
        execute(shared, classifier, batch, &mut between_passes);
    }
}

/// Runs one batch of waiting urgent and short requests between two forward passes of a larger
/// batch. Does nothing when none waits, or when another worker has the intake locked.
///
/// This is how a request that needs many passes, such as a large `/v1/classify/batch` request,
/// stops delaying chat messages by more than about one pass. Short requests come in too
/// because a critical message that no rule reads is not in the urgent lane, and most chat
/// messages are short. They come in even when the running request is urgent itself. Its
/// results return only when its last pass ends, so holding short requests back would make a
/// critical message that no rule reads wait for the whole request, often past the timeout. Letting
/// them in delays the urgent request by at most one single pass per pass boundary, the bound
/// that every request has. Urgent requests still go first in the interleaved batch.
///
/// Fairness bound: it runs at most one batch per call, and the caller calls it once between two
/// passes, so the larger batch runs at least every other pass. The interleaved batch is a
/// single pass under the token budget (see [`Intake::next_interleaved`]), so a request of n
/// passes waits for at most n - 1 interleaved passes. Two exceptions cost more: an urgent
/// request with a single input above the budget takes a longer pass, and after an invalid
/// input each request of the interleaved batch is classified again on its own. Interleaved
/// batches are not interleaved in turn.
///
/// [`Intake::next_interleaved`]: super::batch::Intake::next_interleaved
fn run_interleaved(shared: &Shared, classifier: &dyn Classify, admission: &dyn Admission) {
    // A worker that has the intake locked is waiting for a request or forming a batch, and it
    // takes urgent requests first. Waiting for the lock here could stall this worker until a new
    // request arrives.
    let mut intake = match shared.intake.try_lock() {
        Ok(intake) => intake,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return,
    };
    let batch = intake.next_interleaved(&shared.config, admission);
    drop(intake);
    if let Some(batch) = batch {
        execute(shared, classifier, batch, &mut || {});
    }
}

/// Classifies the inputs of every request in the batch together and replies to each request.
/// Calls `between_passes` between two forward passes of the batch.
///
/// When the classifier rejects the combined inputs, each request is classified again on its
/// own, so that one invalid input fails only its own request.
fn execute(shared: &Shared, classifier: &dyn Classify, batch: Vec<Costed>, between_passes: &mut dyn FnMut()) {
    let batch: Vec<Costed> = batch
        .into_iter()
        .filter(|costed| !costed.job.reply.is_closed())
        .filter_map(|costed| reject_too_long(shared, costed))
        .collect();
    let mut inputs = Vec::new();
    let mut costs = Vec::new();
    let mut replies = Vec::new();
    for Costed { job, costs: job_costs } in batch {
        let start = inputs.len();
        inputs.extend(job.inputs);
        costs.extend(job_costs.iter().map(|cost| cost.total));
        replies.push((job.reply, start..inputs.len()));
    }
    if inputs.is_empty() {
        return;
    }

    let abandoned = || replies.iter().all(|(reply, _)| reply.is_closed());
    match classify_chunked(shared, classifier, &inputs, &costs, &abandoned, between_passes) {
        Ok(results) => {
            let mut results = results.into_iter();
            for (reply, range) in replies {
                let own: Vec<Classification> = results.by_ref().take(range.len()).collect();
                let _ = reply.send(Ok(Batched { results: own, batch_size: inputs.len() }));
            }
        }
        Err(InferError::InvalidInput(_)) if replies.len() > 1 => {
            for (reply, range) in replies {
                if reply.is_closed() {
                    continue;
                }
                let abandoned = || reply.is_closed();
                let answer = classify_range(shared, classifier, &inputs, &costs, range, &abandoned, between_passes);
                let _ = reply.send(answer);
            }
        }
        Err(error) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// Fails a request with a text above the token limit with [`InferError::TooLong`], which names
/// every such text, and drops it from the batch, so that its windows never take encoder time.
/// Returns the other requests.
fn reject_too_long(shared: &Shared, costed: Costed) -> Option<Costed> {
    let Some(limit) = shared.config.max_text_tokens else { return Some(costed) };
    // The counts were taken when the request was queued, so no text is tokenized again here.
    let mut too_long = Vec::new();
    for (input, cost) in costed.costs.iter().enumerate() {
        if cost.text > limit {
            too_long.push(TooLongInput { input, tokens: cost.text });
        }
    }
    if too_long.is_empty() {
        return Some(costed);
    }
    let _ = costed.job.reply.send(Err(InferError::TooLong { inputs: too_long, limit }));
    None
}

fn classify_range(
    shared: &Shared,
    classifier: &dyn Classify,
    inputs: &[MessageInput],
    costs: &[usize],
    range: Range<usize>,
    abandoned: &dyn Fn() -> bool,
    between_passes: &mut dyn FnMut(),
) -> Result<Batched, InferError> {
    let batch_size = range.len();
    let results =
        classify_chunked(shared, classifier, &inputs[range.clone()], &costs[range], abandoned, between_passes)?;
    Ok(Batched { results, batch_size })
}

/// Classifies the inputs in consecutive calls of at most the token budget each (an input
/// above the budget goes alone), and returns the results in input order.
///
/// Between two calls it calls `between_passes`, which may serve other requests. Before each
/// call it checks `abandoned`: once every request waiting for these results has timed out, the
/// remaining calls are skipped, so that an abandoned large batch does not hold the worker while
/// requests queue behind it.
fn classify_chunked(
    shared: &Shared,
    classifier: &dyn Classify,
    inputs: &[MessageInput],
    costs: &[usize],
    abandoned: &dyn Fn() -> bool,
    between_passes: &mut dyn FnMut(),
) -> Result<Vec<Classification>, InferError> {
    let mut results = Vec::with_capacity(inputs.len());
    for (pass, range) in chunks(costs, shared.config.max_batch_tokens).into_iter().enumerate() {
        if pass > 0 {
            between_passes();
        }
        if abandoned() {
            tracing::info!(skipped_inputs = inputs.len() - results.len(), "stopped a batch whose requests all timed out");
            return Err(InferError::Timeout);
        }
        let tokens = costs[range.clone()].iter().sum();
        let started = Instant::now();
        let chunk = classifier.classify(&inputs[range.clone()])?;
        shared.observer.batch_done(range.len(), tokens, started.elapsed());
        if chunk.len() != range.len() {
            return Err(InferError::Internal(format!(
                "the classifier returned {} results for {} inputs",
                chunk.len(),
                range.len()
            )));
        }
        results.extend(chunk);
    }
    Ok(results)
}

/// Splits `0..costs.len()` into consecutive ranges whose costs sum to at most `budget`, except
/// a single item above the budget, which gets a range of its own.
fn chunks(costs: &[usize], budget: usize) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut sum) = (0, 0);
    for (i, &cost) in costs.iter().enumerate() {
        if i > start && sum + cost > budget {
            ranges.push(start..i);
            (start, sum) = (i, 0);
        }
        sum += cost;
    }
    if start < costs.len() {
        ranges.push(start..costs.len());
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_respect_the_budget() {
        assert_eq!(chunks(&[3, 4, 5, 6], 12), [0..3, 3..4]);
        assert_eq!(chunks(&[3, 20, 2], 10), [0..1, 1..2, 2..3]);
        assert_eq!(chunks(&[1], 10), vec![0..1]);
        assert!(chunks(&[], 10).is_empty());
    }
}
