//! Robustness copies of the evaluation messages: accents stripped, common SMS spellings,
//! typos and case changes, the ways real messages differ from tidy training text.
//!
//! Each copy keeps the gold labels of its source. A copy is deterministic: its random choices
//! come from a generator seeded with the run's seed, the example id and the kind, so the same
//! seed gives the same text on every machine, whatever the order of the examples. A copy whose
//! text would equal its source (no accent to strip, no SMS word) is not made.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use super::example::Example;

/// One way of altering a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perturbation {
    Accents,
    Sms,
    Typos,
    Case,
}

/// Share of eligible words that get a typo; at least one word always does.
const TYPO_RATE: f64 = 0.15;

/// Common chat spellings, matched on whole lowercase words (apostrophes included); the longest
/// phrase wins.
const SMS_SPELLINGS: [(&str, &str); 42] = [
    ("je ne sais pas", "jsp"),
    ("je sais pas", "jsp"),
    ("s'il te plaît", "stp"),
    ("s'il te plait", "stp"),
    ("s'il vous plaît", "svp"),
    ("s'il vous plait", "svp"),
    ("parce que", "pcq"),
    ("quelque chose", "qqch"),
    ("il y a", "ya"),
    ("je suis", "jsuis"),
    ("ça va", "sava"),
    ("c'est", "c"),
    ("j'ai", "g"),
    ("qu'il", "kil"),
    ("qu'elle", "kel"),
    ("quelqu'un", "qqn"),
    ("aujourd'hui", "ajd"),
    ("t'inquiète", "tkt"),
    ("pourquoi", "pk"),
    ("quoi", "koi"),
    ("que", "ke"),
    ("beaucoup", "bcp"),
    ("bonjour", "bjr"),
    ("salut", "slt"),
    ("vraiment", "vrmt"),
    ("toujours", "tjrs"),
    ("tout", "tt"),
    ("avec", "avc"),
    ("comment", "cmt"),
    ("maintenant", "mtn"),
    ("problème", "pb"),
    ("message", "msg"),
    ("messages", "msg"),
    ("rien", "r1"),
    ("bien", "b1"),
    ("demain", "dm1"),
    ("vous", "vs"),
    ("nous", "ns"),
    ("cette", "cte"),
    ("ouais", "ouai"),
    ("oui", "wi"),
    ("photo", "foto"),
];

/// Neighbours on a French AZERTY keyboard, for substitution typos.
const AZERTY_ROWS: [&str; 3] = ["azertyuiop", "qsdfghjklm", "wxcvbn"];

impl Perturbation {
    pub const ALL: [Perturbation; 4] = [Perturbation::Accents, Perturbation::Sms, Perturbation::Typos, Perturbation::Case];

    pub fn id(self) -> &'static str {
        match self {
            Perturbation::Accents => "accents",
            Perturbation::Sms => "sms",
            Perturbation::Typos => "typos",
            Perturbation::Case => "case",
        }
    }

    /// French name shown in the HTML report.
    pub fn label(self) -> &'static str {
        match self {
            Perturbation::Accents => "Accents supprimés",
            Perturbation::Sms => "Écriture SMS",
            Perturbation::Typos => "Fautes de frappe",
            Perturbation::Case => "Majuscules / minuscules changées",
        }
    }

    /// Returns the altered text. Deterministic for a given generator state.
    pub fn apply(self, text: &str, rng: &mut StdRng) -> String {
        match self {
            Perturbation::Accents => strip_accents(text),
            Perturbation::Sms => sms_spellings(text),
            Perturbation::Typos => typos(text, rng),
            Perturbation::Case => change_case(text, rng),
        }
    }
}

/// A perturbed copy of one example.
#[derive(Debug, Clone, PartialEq)]
pub struct PerturbedExample {
    /// Position of the source example.
    pub source: usize,
    pub kind: Perturbation,
    /// The source with the altered text and the id `{source id}~{kind}`.
    pub example: Example,
}

/// Makes every perturbed copy of `examples` that differs from its source, grouped by kind.
pub fn perturb(examples: &[Example], seed: u64) -> Vec<PerturbedExample> {
    let mut copies = Vec::new();
    for kind in Perturbation::ALL {
        for (source, example) in examples.iter().enumerate() {
            let mut rng = StdRng::seed_from_u64(seed ^ fnv1a(&example.id) ^ fnv1a(kind.id()).rotate_left(17));
            let text = kind.apply(&example.text, &mut rng);
            if text != example.text {
                let id = format!("{}~{}", example.id, kind.id());
                copies.push(PerturbedExample { source, kind, example: Example { id, text, ..example.clone() } });
            }
        }
    }
    copies
}

/// 64-bit FNV-1a: a stable hash, unlike `std`'s, which may change between Rust releases.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

pub fn strip_accents(text: &str) -> String {
    text.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(|c| match c {
            'œ' => "oe".chars().collect::<Vec<_>>(),
            'Œ' => "OE".chars().collect(),
            'æ' => "ae".chars().collect(),
            'Æ' => "AE".chars().collect(),
            c => vec![c],
        })
        .nfc()
        .collect()
}

/// Splits text into runs, each a word (letters, digits, apostrophes) or what lies between
/// words, flagged `true` for a word.
fn tokens(text: &str) -> Vec<(&str, bool)> {
    let is_word = |c: char| c.is_alphanumeric() || c == '\'' || c == '’';
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_word = None;
    for (index, c) in text.char_indices() {
        let word = is_word(c);
        if in_word.is_some_and(|w| w != word) {
            out.push((&text[start..index], in_word.unwrap()));
            start = index;
        }
        in_word = Some(word);
    }
    if let Some(word) = in_word {
        out.push((&text[start..], word));
    }
    out
}

pub fn sms_spellings(text: &str) -> String {
    let tokens = tokens(text);
    let lower: Vec<String> = tokens.iter().map(|(t, _)| t.to_lowercase().replace('’', "'")).collect();
    let mut out = String::with_capacity(text.len());
    let mut index = 0;
    'outer: while index < tokens.len() {
        if tokens[index].1 {
            // Phrases are listed longest first within each length; try every entry.
            let mut best: Option<(usize, &str)> = None;
            for (phrase, replacement) in SMS_SPELLINGS {
                if let Some(end) = match_phrase(&tokens, &lower, index, phrase) {
                    if best.is_none_or(|(b, _)| end > b) {
                        best = Some((end, replacement));
                    }
                }
            }
            if let Some((end, replacement)) = best {
                out.push_str(replacement);
                index = end;
                continue 'outer;
            }
        }
        out.push_str(tokens[index].0);
        index += 1;
    }
    out
}

/// If the words of `phrase` start at token `start`, separated only by spaces, returns the
/// token index just past the match.
fn match_phrase(tokens: &[(&str, bool)], lower: &[String], start: usize, phrase: &str) -> Option<usize> {
    let mut index = start;
    for (n, word) in phrase.split(' ').enumerate() {
        if n > 0 {
            let (separator, is_word) = tokens.get(index)?;
            if *is_word || !separator.chars().all(|c| c == ' ') {
                return None;
            }
            index += 1;
        }
        if !tokens.get(index)?.1 || lower[index] != word {
            return None;
        }
        index += 1;
    }
    Some(index)
}

pub fn typos(text: &str, rng: &mut StdRng) -> String {
    let tokens = tokens(text);
    let eligible: Vec<usize> = (0..tokens.len())
        .filter(|&i| tokens[i].1 && tokens[i].0.chars().filter(|c| c.is_alphabetic()).count() >= 4)
        .collect();
    let Some(&forced) = eligible.choose(rng) else { return text.to_string() };
    let mut out = String::with_capacity(text.len() + 4);
    for (index, (token, _)) in tokens.iter().enumerate() {
        if eligible.contains(&index) && (index == forced || rng.gen_bool(TYPO_RATE)) {
            out.push_str(&typo(token, rng));
        } else {
            out.push_str(token);
        }
    }
    out
}

/// Makes one typo inside a word of at least four letters: swap, drop, double or hit a
/// neighbour key.
fn typo(word: &str, rng: &mut StdRng) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    // Keep the first letter: people rarely mistype it, and it keeps the word recognisable.
    let at = rng.gen_range(1..chars.len() - 1);
    match rng.gen_range(0..4) {
        0 => chars.swap(at, at + 1),
        1 => {
            chars.remove(at);
        }
        2 => chars.insert(at, chars[at]),
        _ => chars[at] = neighbour_key(chars[at], rng).unwrap_or(chars[at]),
    }
    let typo: String = chars.into_iter().collect();
    // A swap of two equal letters changes nothing: drop a letter instead.
    if typo == word {
        let mut chars: Vec<char> = word.chars().collect();
        chars.remove(at);
        return chars.into_iter().collect();
    }
    typo
}

fn neighbour_key(c: char, rng: &mut StdRng) -> Option<char> {
    let lower = c.to_lowercase().next()?;
    let (row, column) = AZERTY_ROWS
        .iter()
        .enumerate()
        .find_map(|(r, keys)| keys.chars().position(|k| k == lower).map(|col| (r, col)))?;
    let keys: Vec<char> = AZERTY_ROWS[row].chars().collect();
    let mut neighbours = Vec::new();
    if column > 0 {
        neighbours.push(keys[column - 1]);
    }
    if column + 1 < keys.len() {
        neighbours.push(keys[column + 1]);
    }
    let key = *neighbours.choose(rng)?;
    Some(if c.is_uppercase() { key.to_ascii_uppercase() } else { key })
}

/// Rewrites the text in all capitals, all small letters, or with each word capitalised,
/// whichever first changes the text in a seeded order of the three.
pub fn change_case(text: &str, rng: &mut StdRng) -> String {
    let mut modes = [0, 1, 2];
    modes.shuffle(rng);
    modes
        .iter()
        .map(|mode| match mode {
            0 => text.to_uppercase(),
            1 => text.to_lowercase(),
            _ => tokens(text)
                .iter()
                .map(|(token, word)| {
                    let mut chars = token.chars();
                    match (word, chars.next()) {
                        (true, Some(first)) => first.to_uppercase().chain(chars).collect(),
                        _ => token.to_string(),
                    }
                })
                .collect(),
        })
        .find(|changed| changed != text)
        .unwrap_or_else(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(1)
    }

    #[test]
    fn accents_are_stripped() {
        assert_eq!(strip_accents("Élève à l'école, cœur brisé"), "Eleve a l'ecole, coeur brise");
    }

    #[test]
    fn sms_spellings_replace_whole_words() {
        assert_eq!(sms_spellings("Je suis là, je sais pas quoi faire."), "jsuis là, jsp koi faire.");
        assert_eq!(sms_spellings("C’est quoi ? Il y a un problème"), "c koi ? ya un pb");
        // "quoique" is not "quoi", and phrases do not span punctuation.
        assert_eq!(sms_spellings("quoique parce, que"), "quoique parce, ke");
    }

    #[test]
    fn typos_skip_short_words() {
        let text = "il me harcèle tous les jours";
        let altered = typos(text, &mut rng());
        assert_ne!(altered, text);
        assert_eq!(typos("oui ok", &mut rng()), "oui ok", "no word of four letters");
    }

    #[test]
    fn case_changes_the_text() {
        assert_ne!(change_case("salut", &mut rng()), "salut");
        assert_ne!(change_case("SALUT", &mut rng()), "SALUT");
        assert_eq!(change_case("123 ?", &mut rng()), "123 ?");
    }

    #[test]
    fn perturbation_is_deterministic_and_skips_unchanged_copies() {
        let example = |id: &str, text: &str| Example {
            id: id.into(),
            text: text.into(),
            categories: vec!["harassment".into()],
            intent: "seek_help".into(),
            urgency: "medium".into(),
            speaker: "young_person".into(),
            tags: vec![],
        };
        let examples = [example("a", "Je suis harcelée tous les jours à l'école"), example("b", "ok")];
        let first = perturb(&examples, 42);
        assert_eq!(first, perturb(&examples, 42));
        let ids: Vec<&str> = first.iter().map(|p| p.example.id.as_str()).collect();
        // "ok" has no accent, no SMS word and no word for a typo; only its case can change.
        assert_eq!(ids, ["a~accents", "a~sms", "a~typos", "a~case", "b~case"]);
        assert!(first.iter().all(|p| p.example.urgency == "medium" || p.source == 1));
        // Reordering the examples does not change any copy's text.
        let reversed = [examples[1].clone(), examples[0].clone()];
        let text = |copies: &[PerturbedExample], id: &str| {
            copies.iter().find(|p| p.example.id == id).unwrap().example.text.clone()
        };
        assert_eq!(text(&first, "a~typos"), text(&perturb(&reversed, 42), "a~typos"));
    }
}
