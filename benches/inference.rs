//! Criterion micro-benchmarks of the in-process path, on the invented messages of
//! `benches/messages.jsonl`:
//! - `tokenize/{short,long}`: `Encoder::tokenize` on every message of the set, one per call;
//! - `encoder/{short,long}/{1,8,32}`: `Encoder::embed_ids` on pre-tokenized batches;
//! - `classify/{1,32}`: the whole `Classify` path (normalisation, encoder, heads, rules and
//!   decision) on the single short message, and on a batch of 32 mixed messages.
//!
//! Short messages are the chat lines of the mix without context (12 to 29 tokens, 21 on
//! average). Long ones are its paragraphs of 250 tokens or more. Throughput is in messages per
//! second.
//!
//! Run `cargo bench --bench inference`, or one group with a filter such as
//! `cargo bench --bench inference -- encoder/short`. Needs the base encoder on disk. A whole run
//! took 5 to 13 minutes on 2 shared cores, most of it in `encoder/long/32` and `classify/32`,
//! whose passes take seconds each: criterion needs at least 10 samples, plus a warm-up pass.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use cybertriage::cli::bench::messages::{self, BenchMessage, Kind};
use cybertriage::model::base::{default_models_dir, BaseInfo, PinnedBase};
use cybertriage::model::encoder::TokenIds;
use cybertriage::triage::classifier::{default_model_dir, Classifier, Classify, MessageInput};

/// Paragraphs at least this long (special tokens included) count as long messages.
const LONG_TOKENS: usize = 250;
const BATCH_SIZES: [usize; 3] = [1, 8, 32];

struct Fixture {
    classifier: Classifier,
    short: Vec<BenchMessage>,
    long: Vec<BenchMessage>,
    single: MessageInput,
    mixed32: Vec<MessageInput>,
}

/// Loads the classifier and the message sets once for every group. Exits with a hint when the
/// base encoder is missing.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let models_dir = default_models_dir();
        let base_dir = PinnedBase::load().expect("models/base.toml is valid").output_dir(&models_dir);
        if let Err(error) = BaseInfo::read(&base_dir) {
            eprintln!("error: {error:#}");
            eprintln!("the benchmarks need the base encoder: run `cybertriage fetch-base` (cargo run --release -- fetch-base)");
            std::process::exit(2);
        }
        let classifier = Classifier::load(&models_dir, &default_model_dir(&models_dir)).unwrap_or_else(|error| {
            eprintln!("error: {error:#}");
            std::process::exit(1);
        });
        let mix = messages::load(None).expect("benches/messages.jsonl is valid");
        let encoder = classifier.encoder();
        let short: Vec<BenchMessage> = messages::plain_of_kind(&mix, Kind::Short).into_iter().cloned().collect();
        let long: Vec<BenchMessage> = messages::plain_of_kind(&mix, Kind::Paragraph)
            .into_iter()
            .filter(|m| encoder.tokenize(&m.text).map(|ids| ids.len() >= LONG_TOKENS).unwrap_or(false))
            .cloned()
            .collect();
        assert!(!long.is_empty(), "benches/messages.jsonl has no paragraph of {LONG_TOKENS} tokens or more");
        let single = messages::single(&mix).expect("the mix has a short message").input();
        let mixed32 = messages::mixed_batch(&mix, 32).expect("the mix has short and paragraph messages");
        let mixed32 = mixed32.into_iter().map(BenchMessage::input).collect();
        Fixture { classifier, short, long, single, mixed32 }
    })
}

/// `size` token sequences taken from `set` in order, repeated if the set is smaller.
fn batch_ids(fixture: &Fixture, set: &[BenchMessage], size: usize) -> Vec<TokenIds> {
    let encoder = fixture.classifier.encoder();
    set.iter().cycle().take(size).map(|m| encoder.tokenize(&m.text).expect("tokenizes")).collect()
}

fn tokenize(c: &mut Criterion) {
    let fixture = fixture();
    let encoder = fixture.classifier.encoder();
    let mut group = c.benchmark_group("tokenize");
    for (name, set) in [("short", &fixture.short), ("long", &fixture.long)] {
        group.throughput(Throughput::Elements(set.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                for message in set.iter() {
                    black_box(encoder.tokenize(black_box(&message.text)).expect("tokenizes"));
                }
            })
        });
    }
    group.finish();
}

fn encoder(c: &mut Criterion) {
    let fixture = fixture();
    let encoder = fixture.classifier.encoder();
    let mut group = c.benchmark_group("encoder");
    // A long batch of 32 takes seconds: flat sampling runs each sample once instead of a
    // growing number of times.
    group.sampling_mode(SamplingMode::Flat);
    for (name, set) in [("short", &fixture.short), ("long", &fixture.long)] {
        for size in BATCH_SIZES {
            let ids = batch_ids(fixture, set, size);
            group.throughput(Throughput::Elements(size as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &ids, |b, ids| {
                b.iter(|| black_box(encoder.embed_ids(ids).expect("embeds")))
            });
        }
    }
    group.finish();
}

fn classify(c: &mut Criterion) {
    let fixture = fixture();
    let mut group = c.benchmark_group("classify");
    group.sampling_mode(SamplingMode::Flat);
    let single = std::slice::from_ref(&fixture.single);
    for (size, inputs) in [(1, single), (32, fixture.mixed32.as_slice())] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), inputs, |b, inputs| {
            b.iter(|| black_box(fixture.classifier.classify(inputs).expect("classifies")))
        });
    }
    group.finish();
}

/// Ten samples (criterion's minimum) and short measuring windows keep each fast case to a few
/// seconds. A slow case takes longer than its window, and criterion then warns and still runs 10
/// samples.
fn config() -> Criterion {
    Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = tokenize, encoder, classify
}
criterion_main!(benches);
