//! Forming one batch from the queue under a token budget and a wait window.
//!
//! A worker takes every queued request off the channel into one of four lanes. A request is
//! urgent when the rules raise one of its inputs to `critical`, and short when its texts fit in
//! one encoder window. The lanes are, in the order that batches take from them: urgent short,
//! urgent long, short, and long. Each lane keeps arrival order. Most chat messages are short, so
//! a critical message that no rule reads waits for the forward pass that is running, not for
//! every long text queued before it. An urgent chat message does not wait for long urgent texts
//! queued before it either.
//!
//! A request whose inputs exceed the token budget needs several forward passes. Between two of
//! them the worker may run one more batch from the two urgent lanes and the short lane, taken by
//! [`Intake::next_interleaved`]. That batch takes only requests that need a single pass. A
//! request that needs several stays at its place in its lane, so requests behind it can overtake
//! it there. This is the one exception to arrival order within a lane.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use crate::triage::classifier::{MessageInput, TokenCost};

use super::{BatchConfig, InferError, Job};

/// A queued request with the token cost of each of its inputs.
pub(super) struct Costed {
    pub job: Job,
    pub costs: Vec<TokenCost>,
}

impl Costed {
    /// Returns the tokens that the request costs in a batch.
    pub fn tokens(&self) -> usize {
        self.costs.iter().map(|cost| cost.total).sum()
    }

    /// Tells whether every text of the request fits in one encoder window.
    pub fn is_short(&self) -> bool {
        self.costs.iter().all(|cost| cost.text <= SHORT_TEXT_TOKENS)
    }

    /// Tells whether the request runs in one forward pass under `budget`: it has a single input,
    /// or its inputs fit in the budget together. The worker splits any other request into
    /// several passes.
    pub fn fits_one_pass(&self, budget: usize) -> bool {
        self.costs.len() == 1 || self.tokens() <= budget
    }
}

/// The worker's side of taking requests in: token costs, urgency, and counts for metrics.
pub(super) trait Admission {
    /// Counts the encoder tokens of the input. An error fails its request.
    fn cost(&self, input: &MessageInput) -> Result<TokenCost, InferError>;
    /// Called once for every request that leaves the intake, in a batch or dropped.
    fn dequeued(&self);
    /// Called once for every request put in an urgent lane.
    fn prioritized(&self);
}

const URGENT_SHORT: usize = 0;
const URGENT_LONG: usize = 1;
const SHORT: usize = 2;
const LONG: usize = 3;
/// Lanes in the order that [`Intake::next_batch`] takes from them.
const LANES: [usize; 4] = [URGENT_SHORT, URGENT_LONG, SHORT, LONG];
/// Lanes in the order that [`Intake::next_interleaved`] takes from them. Long requests that are
/// not urgent wait for the running request to end.
const INTERLEAVED_LANES: [usize; 3] = [URGENT_SHORT, URGENT_LONG, SHORT];

/// Most text tokens of a short request's inputs: one encoder window, context aside.
pub(super) const SHORT_TEXT_TOKENS: usize = 512;

/// The receiving end of the queue, and the requests taken off it that wait for a batch.
pub(super) struct Intake {
    receiver: Receiver<Job>,
    /// The lanes indexed by [`URGENT_SHORT`], [`URGENT_LONG`], [`SHORT`] and [`LONG`], each
    /// oldest first.
    lanes: [VecDeque<Costed>; 4],
}

impl Intake {
    pub fn new(receiver: Receiver<Job>) -> Self {
        Intake { receiver, lanes: Default::default() }
    }

    /// Returns the next batch, or `None` once the queue is closed and empty.
    ///
    /// Blocks for the first request, then adds the waiting requests, lane by lane, while they
    /// fit in the token budget. When the first request is short, the batch ends at the first
    /// long request, so that a long text never lengthens the pass of a chat message. A worker that has two or more requests also waits up to `config.max_wait` for more. A
    /// lone request runs at once.
    pub fn next_batch(&mut self, config: &BatchConfig, admission: &dyn Admission) -> Option<Vec<Costed>> {
        let first = self.first(admission)?;
        let short_only = first.is_short();
        let mut tokens = first.tokens();
        let mut batch = vec![first];
        let window_end = Instant::now() + config.max_wait;
        while tokens < config.max_batch_tokens {
            self.take_queued(admission);
            let Some(lane) = self.next_lane(admission) else {
                if batch.len() == 1 {
                    break;
                }
                match self.receiver.recv_timeout(window_end.saturating_duration_since(Instant::now())) {
                    Ok(job) => self.take_in(job, admission),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
                continue;
            };
            // The request that does not fit stays at the head of its lane for the next batch.
            let next_tokens = self.lanes[lane][0].tokens();
            if tokens + next_tokens > config.max_batch_tokens || (short_only && !self.lanes[lane][0].is_short()) {
                break;
            }
            let next = self.pop(lane, admission);
            tokens += next_tokens;
            batch.push(next);
        }
        Some(batch)
    }

    /// Returns a batch of waiting requests to run between two forward passes of a larger batch,
    /// or `None` when no such request waits. Never blocks and never waits for more requests.
    ///
    /// It takes from the urgent short, urgent long and short lanes, in that order and in arrival
    /// order within each, under the same token budget as [`Intake::next_batch`]. It skips a
    /// request that needs more than one forward pass and leaves it in place, so the batch is
    /// always a single pass. It drops the requests whose caller stopped waiting, wherever they
    /// are in these lanes.
    pub fn next_interleaved(
        &mut self,
        config: &BatchConfig,
        admission: &dyn Admission,
    ) -> Option<Vec<Costed>> {
        self.take_queued(admission);
        let mut batch = Vec::new();
        let mut tokens = 0;
        for lane in INTERLEAVED_LANES {
            let mut index = 0;
            while index < self.lanes[lane].len() {
                let candidate = &self.lanes[lane][index];
                if !is_live(&candidate.job) {
                    let dropped = self.lanes[lane].remove(index).expect("the index is in the lane");
                    drop_job(dropped.job, admission);
                    continue;
                }
                if !candidate.fits_one_pass(config.max_batch_tokens) {
                    index += 1;
                    continue;
                }
                // As in `next_batch`, the request that does not fit ends the batch and keeps its
                // place. A first request with a single input above the budget runs alone.
                let candidate_tokens = candidate.tokens();
                if !batch.is_empty() && tokens + candidate_tokens > config.max_batch_tokens {
                    return Some(batch);
                }
                admission.dequeued();
                batch.push(self.lanes[lane].remove(index).expect("the index is in the lane"));
                tokens += candidate_tokens;
            }
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// Takes the first waiting request, blocking until one comes.
    fn first(&mut self, admission: &dyn Admission) -> Option<Costed> {
        loop {
            self.take_queued(admission);
            if let Some(lane) = self.next_lane(admission) {
                return Some(self.pop(lane, admission));
            }
            let job = self.receiver.recv().ok()?;
            self.take_in(job, admission);
        }
    }

    /// Moves every request already in the channel to its lane, without blocking.
    fn take_queued(&mut self, admission: &dyn Admission) {
        while let Ok(job) = self.receiver.try_recv() {
            self.take_in(job, admission);
        }
    }

    /// Puts a request in its lane. Drops it when its caller has stopped waiting, and fails it
    /// when a token count fails.
    fn take_in(&mut self, job: Job, admission: &dyn Admission) {
        if !is_live(&job) {
            drop_job(job, admission);
            return;
        }
        // If the classifier panics below, the request is dropped unanswered, and the guard
        // still counts it off the queue.
        let guard = DequeueOnDrop(admission);
        // Every input costs at least one token, so that a batch always has a bounded size.
        let costs: Result<Vec<TokenCost>, InferError> = job
            .inputs
            .iter()
            .map(|input| admission.cost(input).map(|cost| TokenCost { total: cost.total.max(1), ..cost }))
            .collect();
        std::mem::forget(guard);
        let costs = match costs {
            Ok(costs) => costs,
            Err(error) => {
                // Counted off the queue before the reply, so that the caller never sees it queued.
                admission.dequeued();
                let _ = job.reply.send(Err(error));
                return;
            }
        };
        if job.urgent {
            admission.prioritized();
        }
        let costed = Costed { job, costs };
        let lane = match (costed.job.urgent, costed.is_short()) {
            (true, true) => URGENT_SHORT,
            (true, false) => URGENT_LONG,
            (false, true) => SHORT,
            (false, false) => LONG,
        };
        self.lanes[lane].push_back(costed);
    }

    /// Drops the requests at the head of the lanes whose caller has stopped waiting, and returns
    /// the first lane that has a request.
    fn next_lane(&mut self, admission: &dyn Admission) -> Option<usize> {
        for lane in LANES {
            while let Some(head) = self.lanes[lane].front() {
                if is_live(&head.job) {
                    return Some(lane);
                }
                let dropped = self.lanes[lane].pop_front().expect("the lane has a head");
                drop_job(dropped.job, admission);
            }
        }
        None
    }

    fn pop(&mut self, lane: usize, admission: &dyn Admission) -> Costed {
        admission.dequeued();
        self.lanes[lane].pop_front().expect("next_lane returned a lane with a request")
    }
}

/// Calls [`Admission::dequeued`] when dropped.
struct DequeueOnDrop<'a>(&'a dyn Admission);

impl Drop for DequeueOnDrop<'_> {
    fn drop(&mut self) {
        self.0.dequeued();
    }
}

/// Tells whether the job's caller still waits for its result.
fn is_live(job: &Job) -> bool {
    !job.reply.is_closed() && Instant::now() < job.deadline
}

/// Drops a job that is no longer live. A caller that still listens gets [`InferError::Timeout`].
/// The job is counted off the queue before the reply, so that the caller never sees it queued.
fn drop_job(job: Job, admission: &dyn Admission) {
    admission.dequeued();
    let _ = job.reply.send(Err(InferError::Timeout));
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::sync::mpsc::{sync_channel, SyncSender};
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    type Answer = oneshot::Receiver<Result<super::super::Batched, InferError>>;

    /// Word that marks a test job as urgent, as the rules would.
    const URGENT_WORD: &str = "alerte";

    fn text_is_urgent(text: &str) -> bool {
        text.split(' ').any(|word| word == URGENT_WORD)
    }

    fn job_with_text(text: String) -> (Job, Answer) {
        let (reply, answer) = oneshot::channel();
        let inputs = vec![MessageInput::new(text)];
        let urgent = text_is_urgent(&inputs[0].text);
        (Job { inputs, urgent, deadline: Instant::now() + Duration::from_secs(60), reply }, answer)
    }

    fn job(words: usize) -> (Job, Answer) {
        job_with_text(vec!["mot"; words].join(" "))
    }

    /// Returns a job of `words` words whose first word is [`URGENT_WORD`].
    fn urgent_job(words: usize) -> (Job, Answer) {
        let mut text = vec!["mot"; words];
        text[0] = URGENT_WORD;
        job_with_text(text.join(" "))
    }

    /// Counts one token per word, and counts calls.
    #[derive(Default)]
    struct Words {
        dequeued: Cell<usize>,
        prioritized: Cell<usize>,
    }

    impl Admission for Words {
        fn cost(&self, input: &MessageInput) -> Result<TokenCost, InferError> {
            let words = input.text.split(' ').count();
            Ok(TokenCost { text: words, total: words })
        }

        fn dequeued(&self) {
            self.dequeued.set(self.dequeued.get() + 1);
        }

        fn prioritized(&self) {
            self.prioritized.set(self.prioritized.get() + 1);
        }
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

    fn is_urgent(costed: &Costed) -> bool {
        costed.job.urgent
    }

    #[test]
    fn batch_of_one_skips_the_wait() {
        let (mut intake, _sender, _answers) = queue(&[3]);
        // An hour-long window: the call would hang if a lone request waited for it.
        let batch = intake.next_batch(&config(100, Duration::from_secs(3600)), &Words::default()).unwrap();
        assert_eq!(sizes(&batch), [3]);
    }

    #[test]
    fn batch_collects_queued_under_budget() {
        let (mut intake, _sender, _answers) = queue(&[3, 4, 5, 6]);
        let admission = Words::default();
        let config = config(12, Duration::ZERO);
        assert_eq!(sizes(&intake.next_batch(&config, &admission).unwrap()), [3, 4, 5]);
        assert_eq!(sizes(&intake.next_batch(&config, &admission).unwrap()), [6]);
        assert_eq!(admission.dequeued.get(), 4, "each request is counted off the queue exactly once");
        assert_eq!(admission.prioritized.get(), 0);
    }

    #[test]
    fn batch_of_two_waits_for_more() {
        let (mut intake, sender, _answers) = queue(&[3, 4]);
        let (late, _late_answer) = job(5);
        let late_sender = std::thread::spawn(move || sender.send(late).unwrap());
        // The window is an hour long; the batch closes because the late request fills the budget.
        let batch = intake.next_batch(&config(12, Duration::from_secs(3600)), &Words::default()).unwrap();
        late_sender.join().unwrap();
        assert_eq!(sizes(&batch), [3, 4, 5]);
    }

    #[test]
    fn batch_above_budget_runs_alone() {
        let (mut intake, _sender, _answers) = queue(&[50, 2]);
        let config = config(10, Duration::ZERO);
        assert_eq!(sizes(&intake.next_batch(&config, &Words::default()).unwrap()), [50]);
        assert_eq!(sizes(&intake.next_batch(&config, &Words::default()).unwrap()), [2]);
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
        let admission = Words::default();
        let batch = intake.next_batch(&config(100, Duration::ZERO), &admission).unwrap();
        assert_eq!(sizes(&batch), [2]);
        assert_eq!(expired_answer.blocking_recv().unwrap().unwrap_err(), InferError::Timeout);
        assert_eq!(admission.dequeued.get(), 3, "dropped requests leave the queue too");
    }

    #[test]
    fn batch_none_when_queue_closed() {
        let (mut intake, sender, _answers) = queue(&[1]);
        drop(sender);
        assert!(intake.next_batch(&config(100, Duration::ZERO), &Words::default()).is_some());
        assert!(intake.next_batch(&config(100, Duration::ZERO), &Words::default()).is_none());
    }

    #[test]
    fn urgent_request_taken_before_older_ones() {
        let (mut intake, sender, _answers) = queue(&[4, 4, 4]);
        let (urgent, _urgent_answer) = urgent_job(2);
        sender.send(urgent).unwrap();
        let admission = Words::default();
        let config = config(10, Duration::ZERO);

        let first = intake.next_batch(&config, &admission).unwrap();
        assert!(is_urgent(&first[0]), "the urgent request leads the batch");
        assert_eq!(sizes(&first), [2, 4, 4], "the normal lane fills the rest of the budget in order");
        assert_eq!(sizes(&intake.next_batch(&config, &admission).unwrap()), [4]);
        assert_eq!(admission.prioritized.get(), 1);
        assert_eq!(admission.dequeued.get(), 4);
    }

    #[test]
    fn short_requests_go_before_long_ones() {
        let long = SHORT_TEXT_TOKENS + 88;
        let (mut intake, _sender, _answers) = queue(&[long, 3, long + 100, 4]);
        let admission = Words::default();
        let config = config(1000, Duration::ZERO);
        // The long requests would fit beside the short ones, but a short batch takes none.
        assert_eq!(sizes(&intake.next_batch(&config, &admission).unwrap()), [3, 4]);
        assert_eq!(sizes(&intake.next_batch(&config, &admission).unwrap()), [long]);
        assert_eq!(sizes(&intake.next_batch(&config, &admission).unwrap()), [long + 100]);
        assert_eq!(admission.dequeued.get(), 4);
    }

    #[test]
    fn urgent_lane_keeps_arrival_order_and_budget() {
        let (sender, receiver) = sync_channel(16);
        let mut answers = Vec::new();
        for (job, answer) in [job(3), urgent_job(6), job(3), urgent_job(5)] {
            sender.send(job).unwrap();
            answers.push(answer);
        }
        let mut intake = Intake::new(receiver);
        let admission = Words::default();
        let config = config(8, Duration::ZERO);

        let first = intake.next_batch(&config, &admission).unwrap();
        assert_eq!(sizes(&first), [6], "the second urgent request does not fit beside the first");
        assert!(is_urgent(&first[0]));
        let second = intake.next_batch(&config, &admission).unwrap();
        assert_eq!(sizes(&second), [5, 3], "the second urgent request, then the oldest normal one");
        assert!(is_urgent(&second[0]));
        assert!(!is_urgent(&second[1]));
        assert_eq!(sizes(&intake.next_batch(&config, &admission).unwrap()), [3]);
        assert_eq!(admission.prioritized.get(), 2);
    }

    #[test]
    fn urgent_short_requests_go_before_urgent_long() {
        let long = SHORT_TEXT_TOKENS + 100;
        let (sender, receiver) = sync_channel(16);
        let mut answers = Vec::new();
        for (job, answer) in [urgent_job(long), urgent_job(long + 1), job(2), urgent_job(3), urgent_job(4)] {
            sender.send(job).unwrap();
            answers.push(answer);
        }
        let mut intake = Intake::new(receiver);
        let admission = Words::default();
        // Neither long request fits beside another request under this budget.
        let config = config(600, Duration::ZERO);

        let first = intake.next_batch(&config, &admission).unwrap();
        assert_eq!(sizes(&first), [3, 4], "the urgent short requests in arrival order");
        assert!(first.iter().all(is_urgent));
        let second = intake.next_batch(&config, &admission).unwrap();
        assert_eq!(sizes(&second), [long], "the older urgent long request");
        assert!(is_urgent(&second[0]));
        assert_eq!(sizes(&intake.next_batch(&config, &admission).unwrap()), [long + 1]);
        let last = intake.next_batch(&config, &admission).unwrap();
        assert_eq!(sizes(&last), [2], "the short request that is not urgent comes after both urgent lanes");
        assert!(!is_urgent(&last[0]));
        assert_eq!(admission.prioritized.get(), 4);
        assert_eq!(admission.dequeued.get(), 5);
    }

    #[test]
    fn short_batch_takes_no_long_request() {
        let long = SHORT_TEXT_TOKENS + 100;
        let (sender, receiver) = sync_channel(16);
        let mut answers = Vec::new();
        for (job, answer) in [urgent_job(long), urgent_job(3), job(long + 1), job(2)] {
            sender.send(job).unwrap();
            answers.push(answer);
        }
        let mut intake = Intake::new(receiver);
        let admission = Words::default();
        // Every request fits beside the others under this budget.
        let config = config(4000, Duration::ZERO);

        let first = intake.next_batch(&config, &admission).unwrap();
        assert_eq!(sizes(&first), [3], "a long urgent text would lengthen the chat message's pass");
        let second = intake.next_batch(&config, &admission).unwrap();
        assert_eq!(sizes(&second), [long, 2, long + 1], "a batch started by a long request takes every lane");
        assert_eq!(admission.dequeued.get(), 4);
    }

    #[test]
    fn interleaved_batch_takes_urgent_short_first() {
        let long = SHORT_TEXT_TOKENS + 1;
        let (sender, receiver) = sync_channel(16);
        let mut answers = Vec::new();
        for (job, answer) in [urgent_job(long), job(2), urgent_job(3)] {
            sender.send(job).unwrap();
            answers.push(answer);
        }
        let mut intake = Intake::new(receiver);
        let admission = Words::default();

        let batch = intake.next_interleaved(&config(1000, Duration::ZERO), &admission).unwrap();
        assert_eq!(sizes(&batch), [3, long, 2], "urgent short, then urgent long, then short");
        assert!(is_urgent(&batch[0]));
        assert!(is_urgent(&batch[1]));
        assert!(!is_urgent(&batch[2]));
    }

    /// Returns a queue with, in arrival order: an urgent request of 14 tokens in two inputs,
    /// which needs two passes under a budget of 10, a long request, short requests of
    /// `short_sizes` tokens, and urgent requests of `urgent_sizes` tokens.
    fn interleaving_queue(urgent_sizes: &[usize], short_sizes: &[usize]) -> (Intake, SyncSender<Job>, Vec<Answer>) {
        let (sender, receiver) = sync_channel(16);
        let mut answers = Vec::new();
        let (mut multi_pass, answer) = urgent_job(8);
        multi_pass.inputs.push(MessageInput::new("mot mot mot mot mot mot"));
        sender.send(multi_pass).unwrap();
        answers.push(answer);
        let (long, answer) = job(SHORT_TEXT_TOKENS + 1);
        sender.send(long).unwrap();
        answers.push(answer);
        for &size in short_sizes {
            let (short, answer) = job(size);
            sender.send(short).unwrap();
            answers.push(answer);
        }
        for &size in urgent_sizes {
            let (urgent, answer) = urgent_job(size);
            sender.send(urgent).unwrap();
            answers.push(answer);
        }
        (Intake::new(receiver), sender, answers)
    }

    #[test]
    fn interleaved_batch_skips_multi_pass_requests() {
        let (mut intake, _sender, _answers) = interleaving_queue(&[3], &[4, 5]);
        let admission = Words::default();
        let config = config(10, Duration::ZERO);

        let batch = intake.next_interleaved(&config, &admission).unwrap();
        assert_eq!(sizes(&batch), [3, 4], "the urgent request, then short ones while they fit");
        assert!(is_urgent(&batch[0]));
        assert_eq!(admission.dequeued.get(), 2);
        let batch = intake.next_interleaved(&config, &admission).unwrap();
        assert_eq!(sizes(&batch), [5], "the request that did not fit comes next");
        assert!(intake.next_interleaved(&config, &admission).is_none(), "the long lane never interleaves");

        let skipped = intake.next_batch(&config, &admission).unwrap();
        assert_eq!(sizes(&skipped), [14], "the multi-pass urgent request kept its place");
        assert_eq!(sizes(&intake.next_batch(&config, &admission).unwrap()), [SHORT_TEXT_TOKENS + 1]);
        assert_eq!(admission.dequeued.get(), 5);
        assert_eq!(admission.prioritized.get(), 2);
    }

    #[test]
    fn interleaved_batch_takes_urgent_first() {
        let (mut intake, _sender, _answers) = interleaving_queue(&[3, 2], &[4]);
        let admission = Words::default();
        let config = config(10, Duration::ZERO);

        let batch = intake.next_interleaved(&config, &admission).unwrap();
        assert_eq!(sizes(&batch), [3, 2, 4], "both urgent requests, then the older short one");
        assert!(is_urgent(&batch[0]));
        assert!(is_urgent(&batch[1]));
        assert!(!is_urgent(&batch[2]));
        assert!(intake.next_interleaved(&config, &admission).is_none());
    }

    #[test]
    fn interleaved_batch_above_budget_runs_alone() {
        let (mut intake, _sender, _answers) = interleaving_queue(&[12, 1], &[]);
        let admission = Words::default();
        let config = config(10, Duration::ZERO);
        assert_eq!(sizes(&intake.next_interleaved(&config, &admission).unwrap()), [12]);
        assert_eq!(sizes(&intake.next_interleaved(&config, &admission).unwrap()), [1]);
    }

    #[test]
    fn interleaved_batch_drops_abandoned() {
        let (sender, receiver) = sync_channel(16);
        let (urgent, _urgent_answer) = urgent_job(2);
        sender.send(urgent).unwrap();
        let (abandoned, answer) = urgent_job(2);
        drop(answer);
        sender.send(abandoned).unwrap();
        let (mut expired, expired_answer) = job(1);
        expired.deadline = Instant::now();
        sender.send(expired).unwrap();
        let (live, _live_answer) = job(3);
        sender.send(live).unwrap();

        let mut intake = Intake::new(receiver);
        let admission = Words::default();
        let batch = intake.next_interleaved(&config(100, Duration::ZERO), &admission).unwrap();
        assert_eq!(sizes(&batch), [2, 3]);
        assert_eq!(expired_answer.blocking_recv().unwrap().unwrap_err(), InferError::Timeout);
        assert_eq!(admission.dequeued.get(), 4, "dropped requests leave the queue too");
    }

    /// Records, at each `dequeued` call, whether the reply had already been sent to the caller.
    struct WatchesReply {
        answer: RefCell<Answer>,
        replied_before_dequeued: Cell<Option<bool>>,
    }

    impl Admission for WatchesReply {
        fn cost(&self, input: &MessageInput) -> Result<TokenCost, InferError> {
            Words::default().cost(input)
        }

        fn dequeued(&self) {
            let replied = !matches!(self.answer.borrow_mut().try_recv(), Err(oneshot::error::TryRecvError::Empty));
            self.replied_before_dequeued.set(Some(replied));
        }

        fn prioritized(&self) {}
    }

    #[test]
    fn dropped_job_leaves_the_queue_before_its_reply() {
        let (mut expired, answer) = job(1);
        expired.deadline = Instant::now();
        let admission = WatchesReply { answer: RefCell::new(answer), replied_before_dequeued: Cell::new(None) };

        drop_job(expired, &admission);

        assert_eq!(admission.replied_before_dequeued.get(), Some(false), "the caller must not see the request still queued");
        assert_eq!(admission.answer.into_inner().blocking_recv().unwrap().unwrap_err(), InferError::Timeout);
    }

    #[test]
    fn interleaved_batch_empty_does_not_block() {
        let (sender, receiver) = sync_channel::<Job>(16);
        // The sender stays open, so a call that waited for a request would block. It runs on its
        // own thread, and the test fails once the bound passes.
        let call = std::thread::spawn(move || {
            let mut intake = Intake::new(receiver);
            let config = config(10, Duration::from_secs(3600));
            intake.next_interleaved(&config, &Words::default()).is_none()
        });
        let (done, finished) = sync_channel(1);
        std::thread::spawn(move || done.send(call.join().unwrap()).unwrap());
        let empty = finished.recv_timeout(Duration::from_secs(30)).expect("next_interleaved returns without waiting");
        assert!(empty);
        drop(sender);
    }
}
