//! Forming one batch from the queue under a token budget and a wait window.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Instant;

use crate::triage::classifier::MessageInput;

use super::{BatchConfig, InferError, Job};

/// A queued request with the token cost of each of its inputs.
pub(super) struct Costed {
    pub job: Job,
    pub costs: Vec<usize>,
}

impl Costed {
    pub fn tokens(&self) -> usize {
        self.costs.iter().sum()
    }
}

/// The receiving end of the queue, plus the request that did not fit in the previous batch.
pub(super) struct Intake {
    receiver: Receiver<Job>,
    carry: Option<Costed>,
}

impl Intake {
    pub fn new(receiver: Receiver<Job>) -> Self {
        Intake { receiver, carry: None }
    }

    /// Returns the next batch, or `None` once the queue is closed and empty.
    ///
    /// Blocks for the first request, then adds the requests already queued while they fit in
    /// the token budget. A worker that has two or more requests also waits up to
    /// `config.max_wait` for more; a lone request runs at once. `dequeued` is called once for
    /// every request taken off the queue.
    pub fn next_batch(
        &mut self,
        config: &BatchConfig,
        cost: &dyn Fn(&MessageInput) -> usize,
        dequeued: &dyn Fn(),
    ) -> Option<Vec<Costed>> {
        let first = self.first(cost, dequeued)?;
        let mut tokens = first.tokens();
        let mut batch = vec![first];
        let window_end = Instant::now() + config.max_wait;
        while tokens < config.max_batch_tokens {
            let job = match self.receiver.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) if batch.len() > 1 => {
                    match self.receiver.recv_timeout(window_end.saturating_duration_since(Instant::now())) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            };
            dequeued();
            let Some(next) = admit(job, cost) else { continue };
            if tokens + next.tokens() > config.max_batch_tokens {
                self.carry = Some(next);
                break;
            }
            tokens += next.tokens();
            batch.push(next);
        }
        Some(batch)
    }

    /// Takes the carried request, or the first live one from the queue.
    fn first(&mut self, cost: &dyn Fn(&MessageInput) -> usize, dequeued: &dyn Fn()) -> Option<Costed> {
        if let Some(carried) = self.carry.take() {
            return Some(carried);
        }
        loop {
            let job = self.receiver.recv().ok()?;
            dequeued();
            if let Some(costed) = admit(job, cost) {
                return Some(costed);
            }
        }
    }
}

/// Computes the token cost of a request's inputs, or drops the request when its caller has
/// stopped waiting.
fn admit(job: Job, cost: &dyn Fn(&MessageInput) -> usize) -> Option<Costed> {
    if job.reply.is_closed() {
        return None;
    }
    if Instant::now() >= job.deadline {
        let _ = job.reply.send(Err(InferError::Timeout));
        return None;
    }
    // Every input costs at least one token, so that a batch always has a bounded size.
    let costs = job.inputs.iter().map(|input| cost(input).max(1)).collect();
    Some(Costed { job, costs })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::mpsc::{sync_channel, SyncSender};
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    type Answer = oneshot::Receiver<Result<super::super::Batched, InferError>>;

    fn job(words: usize) -> (Job, Answer) {
        let (reply, answer) = oneshot::channel();
        let inputs = vec![MessageInput::new(vec!["mot"; words].join(" "))];
        (Job { inputs, deadline: Instant::now() + Duration::from_secs(60), reply }, answer)
    }

    /// Counts one token per word.
    fn words(input: &MessageInput) -> usize {
        input.text.split(' ').count()
    }

    fn config(max_batch_tokens: usize, max_wait: Duration) -> BatchConfig {
        BatchConfig { max_batch_tokens, max_wait, queue_size: 16, workers: 1, max_text_tokens: None }
    }

    fn queue(sizes: &[usize]) -> (Intake, SyncSender<Job>, Vec<Answer>) {
        let (sender, receiver) = sync_channel(16);
        let answers = sizes
            .iter()
            .map(|&n| {
                let (job, answer) = job(n);
                sender.send(job).unwrap();
                answer
            })
            .collect();
        (Intake::new(receiver), sender, answers)
    }

    fn sizes(batch: &[Costed]) -> Vec<usize> {
        batch.iter().map(Costed::tokens).collect()
    }

    #[test]
    fn batch_of_one_skips_the_wait() {
        let (mut intake, _sender, _answers) = queue(&[3]);
        // An hour-long window: the call would hang if a lone request waited for it.
        let batch = intake.next_batch(&config(100, Duration::from_secs(3600)), &words, &|| ()).unwrap();
        assert_eq!(sizes(&batch), [3]);
    }

    #[test]
    fn batch_collects_queued_under_budget() {
        let (mut intake, _sender, _answers) = queue(&[3, 4, 5, 6]);
        let taken = Cell::new(0);
        let count = || taken.set(taken.get() + 1);
        let config = config(12, Duration::ZERO);
        assert_eq!(sizes(&intake.next_batch(&config, &words, &count).unwrap()), [3, 4, 5]);
        assert_eq!(sizes(&intake.next_batch(&config, &words, &count).unwrap()), [6]);
        assert_eq!(taken.get(), 4, "each request is counted off the queue exactly once");
    }

    #[test]
    fn batch_of_two_waits_for_more() {
        let (mut intake, sender, _answers) = queue(&[3, 4]);
        let (late, _late_answer) = job(5);
        let late_sender = std::thread::spawn(move || sender.send(late).unwrap());
        // The window is an hour long; the batch closes because the late request fills the budget.
        let batch = intake.next_batch(&config(12, Duration::from_secs(3600)), &words, &|| ()).unwrap();
        late_sender.join().unwrap();
        assert_eq!(sizes(&batch), [3, 4, 5]);
    }

    #[test]
    fn batch_above_budget_runs_alone() {
        let (mut intake, _sender, _answers) = queue(&[50, 2]);
        let config = config(10, Duration::ZERO);
        assert_eq!(sizes(&intake.next_batch(&config, &words, &|| ()).unwrap()), [50]);
        assert_eq!(sizes(&intake.next_batch(&config, &words, &|| ()).unwrap()), [2]);
    }

    #[test]
    fn batch_skips_abandoned_and_expired() {
        let (sender, receiver) = sync_channel(16);
        let (abandoned, answer) = job(1);
        drop(answer);
        sender.send(abandoned).unwrap();
        let (mut expired, expired_answer) = job(1);
        expired.deadline = Instant::now();
        sender.send(expired).unwrap();
        let (live, _live_answer) = job(2);
        sender.send(live).unwrap();

        let mut intake = Intake::new(receiver);
        let batch = intake.next_batch(&config(100, Duration::ZERO), &words, &|| ()).unwrap();
        assert_eq!(sizes(&batch), [2]);
        assert_eq!(expired_answer.blocking_recv().unwrap().unwrap_err(), InferError::Timeout);
    }

    #[test]
    fn batch_none_when_queue_closed() {
        let (mut intake, sender, _answers) = queue(&[1]);
        drop(sender);
        assert!(intake.next_batch(&config(100, Duration::ZERO), &words, &|| ()).is_some());
        assert!(intake.next_batch(&config(100, Duration::ZERO), &words, &|| ()).is_none());
    }
}
