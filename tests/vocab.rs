//! The pruned tokenizer of the real base encoder gives the same token ids as the full
//! `tokenizer.json` on French, English, Arabic, Spanish and Portuguese text. Run
//! `cybertriage fetch-base` first (`.ci/run` does).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use tokenizers::Tokenizer;

use cybertriage::model::base::{
    default_models_dir, PinnedBase, BASE_INFO_FILE, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE,
};
use cybertriage::model::encoder::{Encoder, QUERY_PREFIX};
use cybertriage::model::vocab::{
    base64_decode, charsmap_entries, in_dropped_script, BaseTokenizer, KeptChars, KAOMOJI_LETTERS, ORIGINAL_IDS_FILE,
    PRUNED_TOKENIZER_FILE,
};

const UNK_ID: u32 = 3;
const WORD_START_ID: u32 = 6;

fn base_dir() -> PathBuf {
    PinnedBase::load().unwrap().output_dir(&default_models_dir())
}

fn full() -> &'static Tokenizer {
    static FULL: OnceLock<Tokenizer> = OnceLock::new();
    FULL.get_or_init(|| {
        Tokenizer::from_file(base_dir().join(TOKENIZER_FILE))
            .expect("base encoder missing: run `cybertriage fetch-base` first")
    })
}

fn pruned() -> &'static BaseTokenizer {
    static PRUNED: OnceLock<BaseTokenizer> = OnceLock::new();
    PRUNED.get_or_init(|| BaseTokenizer::load(&base_dir()).unwrap())
}

fn encoder() -> &'static Encoder {
    static ENCODER: OnceLock<Encoder> = OnceLock::new();
    ENCODER.get_or_init(|| Encoder::load(&base_dir()).unwrap())
}

fn full_ids(text: &str) -> Vec<u32> {
    full().encode(text, false).unwrap().get_ids().to_vec()
}

/// Invented helpline-style messages: SMS spellings, accents in composed and decomposed form,
/// emoji, kaomoji, URLs, numbers, handles, mixed case, fullwidth and "fancy font" letters.
const MESSAGES: &[&str] = &[
    // French
    "slt jsuis ds la merde mon ex a mis mes photos sur snap 😭😭 jsp koi faire",
    "Bonjour, ma fille (12 ans) reçoit des messages d'un certain @lucas_du_93 sur Insta... Que faire ?",
    "ptdr ils ont créé un groupe « les bolosses de 4e B » et ils m'ont ajouté 🤡",
    "j'ai 14ans et un mec de 25 me demande des nudes ça se fait pas hein??",
    "MON BEAU-PÈRE ME FRAPPE QUAND MAMAN EST PAS LÀ",
    "envoie 50€ sur paypal sinon je balance tout : https://bit.ly/3xYz9Ab",
    "on m'a dit d'appeler le 3018, c bien vous ?",
    "Ça fait 3 semaines que j'ose plus aller au collège, ils m'attendent à 16h30 devant le portail",
    "je me sens tellement seule… personne me calcule ¯\\_(ツ)_/¯",
    "c quoi le num pour porter plainte ? j'habite [ADRESSE], 75011 Paris",
    "Œuvre, cœur, naïve, Noël, où, déjà, ÇA, ÉCOLE, À BIENTÔT, l’école, « guillemets »",
    "e\u{301}cole, c\u{327}a, ou\u{300}, i\u{308}, E\u{301}COLE",
    "ｊｅ ｓｕｉｓ ｐａｓ ｂｉｅｎ ！！",
    "𝐢𝐥𝐬 𝐦𝐞 𝐡𝐚𝐫𝐜𝐞𝐥𝐞𝐧𝐭 𝓪𝓲𝓭𝓮𝔃 𝕞𝕠𝕚",
    "il fait -3°C, 5 µg, 10 Ω, ½ heure… (ಠ_ಠ) (╯°□°)╯︵ ┻━┻ (ノಠ益ಠ)ノ彡┻━┻ ಥ_ಥ (・ω・) (╯°Д°)╯ ლ(ಠ益ಠლ)",
    "jveu mourir. sérieux. g pri 10 cachets 💊💊",
    // English
    "someone keeps DMing me on discord and says he'll leak my pics if i dont pay $200",
    "idk who to talk to tbh… my step-dad yells every night 😔",
    "u there?? plz answer its urgent!!!",
    "My son (11yo) was added to a WhatsApp group called 'losers 6B' #bullying",
    "check this out www.example.com/watch?v=dQw4w9WgXcQ&t=42s lol",
    // Spanish
    "hola, un chico de 19 años me pide fotos íntimas por ig, ¿qué hago? 😢",
    "mi padrastro me pega cuando mamá no está… no sé a quién contarle",
    "q onda, me están haciendo bullying en el cole x whatsapp, ya no aguanto más!!",
    "¡Ayuda! Me amenazan con publicar mis vídeos, señora. Pingüino.",
    // Portuguese
    "oi, tô sofrendo bullying na escola e ninguém faz nada 😞",
    "um cara de 30 anos tá pedindo nudes pra minha irmã de 13, o que eu faço?",
    "não aguento mais, vcs podem me ajudar? minha mãe não sabe de nada",
    "Ele disse que vai espalhar as fotos se eu não pagar R$ 500,00 até amanhã às 18h",
    // Arabic, in Arabic script (with and without diacritics, Eastern digits, presentation
    // forms) and in Arabizi
    "مرحبا، شخص يبتزني بصوري ويطلب مني المال 😭",
    "ساعدوني من فضلكم، زملائي في المدرسة يتنمرون علي كل يوم",
    "عمري ١٣ سنة وأبي يضربني عندما يغضب",
    "مَرْحَبًا، هَلْ يُمْكِنُنِي التَّحَدُّثُ مَعَ أَحَدٍ؟",
    "ﻣﺮﺣﺒﺎ ﻻ ﺃﻋﺮﻑ ﻣﺎﺫﺍ ﺃﻓﻌﻞ",
    "wesh khoya, 3andi mochkil m3a wahed f insta kayhededni, 7ta chi wa9t",
    // Mixed, special tokens typed as text, whitespace, emoji sequences
    "Salut! I'm 15, j'habite à Marseille, mi mamá es española e meu pai é brasileiro — يا رب 🙏🏽",
    "<s> test </s> <mask> <unk> <pad>",
    "  plusieurs   espaces\tet\ttabs\net des\r\nretours  ",
    "",
    "   ",
    "👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷 🇲🇦 ❤️‍🔥 👍🏿 1️⃣ 🏴󠁧󠁢󠁥󠁮󠁧󠁿 ☺︎ ✌🏼",
    "HaHaHa jSuIs TrOp NuLlE mDr :'( :-) <3 xD ^^ -_- >_<",
    "1234567890 +33 6 12 34 56 78 07.12.34.56.78 n°5 3ème 1er 2nd",
];

fn corpus_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("eval/testset.jsonl")];
    let mut training: Vec<PathBuf> = std::fs::read_dir(root.join("training-data"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    training.sort();
    files.extend(training);
    files
}

fn corpus() -> Vec<String> {
    let mut texts: Vec<String> = MESSAGES.iter().map(|text| text.to_string()).collect();
    for file in corpus_files() {
        for line in std::fs::read_to_string(&file).unwrap().lines().filter(|line| !line.trim().is_empty()) {
            let example: serde_json::Value = serde_json::from_str(line).unwrap();
            texts.push(example["text"].as_str().unwrap().to_string());
        }
    }
    texts
}

#[test]
fn base_folder_holds_a_pruned_tokenizer() {
    let dir = base_dir();
    let tokenizer = pruned();
    assert!(tokenizer.is_pruned());
    assert!(dir.join(PRUNED_TOKENIZER_FILE).is_file());
    assert!(dir.join(ORIGINAL_IDS_FILE).is_file());
    let pieces = tokenizer.pieces();
    assert!((100_000..150_000).contains(&pieces), "{pieces} pieces kept of 250,002");
}

#[test]
fn pruning_changes_no_token_id_on_the_corpus() {
    let texts = corpus();
    assert!(texts.len() > 3_500, "{} texts", texts.len());
    let long = MESSAGES[..30].join(" ").repeat(4);
    for text in texts.iter().map(String::as_str).chain([long.as_str()]) {
        let expected = full_ids(text);
        assert_eq!(pruned().encode(text).unwrap(), expected, "ids differ for {text:?}");
        assert_eq!(
            pruned().decode(&expected, false).unwrap(),
            full().decode(&expected, false).unwrap(),
            "decoding differs for {text:?}"
        );
    }
}

#[test]
fn encoder_sequences_match_the_full_tokenizer() {
    let long = MESSAGES[..30].join(" ").repeat(4);
    for text in MESSAGES.iter().copied().chain([long.as_str()]) {
        let content = full_ids(&format!("{QUERY_PREFIX}{text}"));
        let mut expected = vec![0];
        expected.extend(&content[..content.len().min(510)]);
        expected.push(2);
        assert_eq!(encoder().tokenize(text).unwrap(), expected, "sequence differs for {text:?}");
        assert_eq!(encoder().count_tokens(text).unwrap(), content.len() + 2);
    }
    assert!(encoder().count_tokens(&long).unwrap() > 512, "the long message is truncated");
}

/// Generates characters of the five languages and of chat, and any other character outside the
/// dropped scripts. The first kind covers ASCII, Latin with diacritics (precomposed and as
/// combining marks), Arabic (letters, marks, digits, presentation forms), emoji with joiners, skin
/// tones and variation selectors, symbols, fullwidth and mathematical letters, and kaomoji.
fn kept_char() -> impl Strategy<Value = char> {
    let ranges: &[(u32, u32)] = &[
        (0x20, 0x7E),
        (0xA0, 0x24F),
        (0x300, 0x36F),
        (0x1E00, 0x1EFF),
        (0x600, 0x6FF),
        (0xFB50, 0xFDFF),
        (0xFE70, 0xFEFF),
        (0x2000, 0x2BFF),
        (0x1F300, 0x1FAFF),
        (0xFE00, 0xFE0F),
        (0x200D, 0x200D),
        (0xFF01, 0xFF64),
        (0x1D400, 0x1D6A3),
        (0x3000, 0x303F),
    ];
    let from_ranges = proptest::sample::select(ranges.to_vec())
        .prop_flat_map(|(first, last)| (first..=last).prop_filter_map("not a char", char::from_u32));
    let kaomoji = proptest::sample::select(KAOMOJI_LETTERS.to_vec());
    prop_oneof![6 => from_ranges, 1 => kaomoji, 2 => any::<char>(), 2 => Just(' ')]
        .prop_filter("dropped script", |c| !in_dropped_script(*c))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

    #[test]
    fn random_text_without_dropped_scripts_keeps_its_ids(chars in proptest::collection::vec(kept_char(), 0..40)) {
        let text: String = chars.into_iter().collect();
        prop_assert_eq!(pruned().encode(&text).unwrap(), full_ids(&text), "text {:?}", text);
    }
}

#[test]
fn dropped_scripts_become_unknown_tokens() {
    // Russian and Chinese: each word is a word-start piece then one fused <unk>.
    assert_eq!(pruned().encode("Меня травят").unwrap(), vec![WORD_START_ID, UNK_ID, WORD_START_ID, UNK_ID]);
    assert_eq!(pruned().encode("有人在网上骚扰我").unwrap(), vec![WORD_START_ID, UNK_ID]);
    // The kept part of a mixed message is tokenized as before.
    let mixed = pruned().encode("aidez moi Меня травят 😭").unwrap();
    let kept = full_ids("aidez moi");
    assert_eq!(&mixed[..kept.len()], kept.as_slice());
    assert!(mixed.contains(&UNK_ID));
    // The encoder embeds such text without error.
    let vector = &encoder().embed(&["Меня травят в чате", "有人在网上骚扰我"]).unwrap()[1];
    assert!(vector.iter().all(|x| x.is_finite()));
}

#[test]
fn pinned_charsmap_is_read_completely() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base_dir().join(TOKENIZER_FILE)).unwrap()).unwrap();
    let normalizer = &json["normalizer"];
    let encoded = normalizer["normalizers"][0]["precompiled_charsmap"].as_str().unwrap();
    let bytes = base64_decode(encoded).unwrap();
    let entries = charsmap_entries(&bytes).unwrap();
    assert!(entries.len() > 200_000, "{} entries", entries.len());
    let precompiled = tokenizers::normalizers::precompiled::Precompiled::from(&bytes).unwrap();
    for (source, target) in entries.iter().filter(|(source, _)| source.chars().count() == 1) {
        assert_eq!(precompiled.transform(source), Some(target.as_str()), "entry for {source:?}");
    }

    let chars = KeptChars::from_config(normalizer, &json["pre_tokenizer"]).unwrap();
    // µ (micro sign) normalises to Greek μ, and ohm sign + combining accent to accented Greek.
    assert!(chars.contains('μ'));
    assert!(chars.contains('Ώ'));
    assert!(!chars.contains('а'), "Cyrillic a");
    assert!(!chars.contains('中'));
}

/// Makes a base folder as fetched before pruning existed: every file but the pruned tokenizer,
/// with the weights linked rather than copied.
fn old_base_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in [BASE_INFO_FILE, CONFIG_FILE, TOKENIZER_FILE] {
        std::fs::copy(base_dir().join(file), dir.path().join(file)).unwrap();
    }
    std::os::unix::fs::symlink(base_dir().join(WEIGHTS_FILE), dir.path().join(WEIGHTS_FILE)).unwrap();
    dir
}

#[test]
fn old_base_folder_is_pruned_on_first_load() {
    let old = old_base_folder();
    let encoder = Encoder::load(old.path()).unwrap();
    assert!(old.path().join(PRUNED_TOKENIZER_FILE).is_file());
    assert!(old.path().join(ORIGINAL_IDS_FILE).is_file());
    for file in [PRUNED_TOKENIZER_FILE, ORIGINAL_IDS_FILE] {
        let built = std::fs::read(old.path().join(file)).unwrap();
        assert!(built == std::fs::read(base_dir().join(file)).unwrap(), "{file} differs from the fetched one");
    }
    let text = "ils m'insultent sur insta 😭";
    assert_eq!(encoder.tokenize(text).unwrap(), self::encoder().tokenize(text).unwrap());
}

#[test]
fn stale_or_damaged_pruned_files_are_rebuilt() {
    let old = old_base_folder();
    let ids_path = old.path().join(ORIGINAL_IDS_FILE);
    let expected = BaseTokenizer::load(old.path()).unwrap().encode("bonjour à tous").unwrap();
    let good = std::fs::read(&ids_path).unwrap();

    // Made by another pruning rule.
    std::fs::write(&ids_path, r#"{"rule": "older", "original_ids": [0, 1, 2]}"#).unwrap();
    assert_eq!(BaseTokenizer::load(old.path()).unwrap().encode("bonjour à tous").unwrap(), expected);
    assert_eq!(std::fs::read(&ids_path).unwrap(), good);

    // An id map that does not match the tokenizer, one cut short, and one that is not JSON.
    let mut mismatched: serde_json::Value = serde_json::from_slice(&good).unwrap();
    mismatched["original_ids"].as_array_mut().unwrap().pop();
    let mismatched = serde_json::to_vec(&mismatched).unwrap();
    for damaged in [mismatched.as_slice(), &good[..good.len() / 2], b"{}".as_slice()] {
        std::fs::write(&ids_path, damaged).unwrap();
        assert_eq!(BaseTokenizer::load(old.path()).unwrap().encode("bonjour à tous").unwrap(), expected);
        assert_eq!(std::fs::read(&ids_path).unwrap(), good);
    }
}
