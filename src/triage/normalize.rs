//! The one text normalisation. The encoder and the rules both read its output, so rules and
//! model always read the same text.

use unicode_normalization::UnicodeNormalization;

/// Normalises a message: Unicode NFC, invisible characters removed, typographic apostrophes and
/// quotes folded to ASCII, every run of whitespace collapsed to one space, and trimmed. The
/// result follows the text as displayed: characters that render as nothing are removed, and
/// characters that render as a blank count as whitespace. A variation selector is kept only
/// right after a symbol, as in the emoji "❤️". After a letter, a digit, punctuation, a space or
/// another selector it changes nothing on screen, so it is removed.
///
/// Letter-spaced writing is read as words. In a run of at least [`MIN_SPACED_LETTERS`] single
/// letters, the narrowest gap joins two letters and wider gaps separate words. So "j e  v e u x"
/// becomes "je veux", as does one letter a line with a blank line between words.
///
/// Returns an empty string for a text that is empty or only whitespace and invisible characters.
pub fn normalize(text: &str) -> String {
    join_words(&displayed_words(text))
}

/// Minimum number of single letters in a row that counts as letter-spaced writing. French and
/// SMS writing have runs of up to four ("il y a à", "g t a l école"), and rarely of five.
const MIN_SPACED_LETTERS: usize = 5;

/// Blanks that a line break counts as: more than a space, so that it can separate words.
const LINE_BREAK: usize = 2;

/// A word as displayed, with the blanks before it.
struct Word {
    text: String,
    /// Blanks between this word and the previous one: 1 for a single space.
    gap: usize,
}

impl Word {
    /// Tells whether the word is one letter, possibly with punctuation or symbols around it, as
    /// in the last letter of "M O U R I R!!!" or the first of a quoted "\"j e".
    fn is_single_letter(&self) -> bool {
        let mut alphanumeric = self.text.chars().filter(|c| c.is_alphanumeric());
        alphanumeric.next().is_some_and(char::is_alphabetic) && alphanumeric.next().is_none()
    }
}

/// Splits the displayed text into words: invisible characters removed, selectors kept only after
/// symbols, punctuation folded, and the blanks between words counted.
fn displayed_words(text: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut current = String::new();
    // Blanks since the last word ended, and the blanks before the word being read.
    let mut blanks = 0;
    let mut gap = 0;
    // Whether the last character kept may carry a variation selector.
    let mut selector_allowed = false;
    for c in text.nfc() {
        if is_invisible(c) {
            continue;
        }
        if is_variation_selector(c) {
            if selector_allowed && blanks == 0 {
                current.push(c);
                selector_allowed = false;
            }
            continue;
        }
        if c.is_whitespace() || is_blank(c) {
            if !current.is_empty() {
                words.push(Word { text: std::mem::take(&mut current), gap });
            }
            blanks += if c == '\n' || c == '\r' { LINE_BREAK } else { 1 };
            continue;
        }
        if current.is_empty() {
            gap = blanks;
            blanks = 0;
        }
        let folded = fold_punctuation(c);
        current.push(folded);
        selector_allowed = takes_variation_selector(folded);
    }
    if !current.is_empty() {
        words.push(Word { text: current, gap });
    }
    words
}

/// Joins the words with single spaces, except inside letter-spaced writing. There, letters
/// separated by the run's narrowest gap are joined, and wider gaps separate words.
fn join_words(words: &[Word]) -> String {
    // For each word, whether it is joined to the previous one.
    let mut joined = vec![false; words.len()];
    let mut start = 0;
    while start < words.len() {
        let end = start + words[start..].iter().take_while(|w| w.is_single_letter()).count();
        if end - start >= MIN_SPACED_LETTERS {
            let narrowest = words[start + 1..end].iter().map(|w| w.gap).min().unwrap_or(1);
            for index in start + 1..end {
                joined[index] = words[index].gap == narrowest;
            }
        }
        start = end.max(start + 1);
    }

    let mut out = String::new();
    for (index, word) in words.iter().enumerate() {
        if index > 0 && !joined[index] {
            out.push(' ');
        }
        out.push_str(&word.text);
    }
    out
}

/// Symbols from the Letterlike Symbols block on, where the emoji are: not letters, digits,
/// ASCII, Latin-1 signs or general punctuation such as ’ « » …
fn takes_variation_selector(c: char) -> bool {
    c >= '\u{2100}' && !c.is_alphanumeric()
}

fn is_variation_selector(c: char) -> bool {
    matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
}

/// Zero-width and formatting characters, which are invisible when rendered: soft hyphen, joiners,
/// direction marks, Mongolian selectors, Khmer inherent vowels, interlinear annotation marks,
/// Egyptian hieroglyph and shorthand format controls, musical format controls and tag characters.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}'
            | '\u{17B4}' | '\u{17B5}' | '\u{FFF9}'..='\u{FFFB}' | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E007F}'
    ) || (c.is_control() && !c.is_whitespace())
}

/// Characters that render as a blank without being Unicode whitespace: the Hangul fillers (U+3164
/// makes a message that looks empty) and the blank Braille pattern.
fn is_blank(c: char) -> bool {
    matches!(c, '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{2800}')
}

fn fold_punctuation(c: char) -> char {
    match c {
        '\u{2018}' | '\u{2019}' | '\u{201B}' | '\u{02BC}' | '\u{2032}' | '`' | '\u{00B4}' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{201F}' | '\u{00AB}' | '\u{00BB}' => '"',
        '\u{2013}' | '\u{2014}' => '-',
        '\u{2026}' => '…',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_whitespace_and_trims() {
        assert_eq!(normalize("  il   me\n\tharcèle  "), "il me harcèle");
    }

    #[test]
    fn folds_apostrophes_and_quotes() {
        assert_eq!(normalize("j’ai peur « vraiment »"), "j'ai peur \" vraiment \"");
    }

    #[test]
    fn removes_invisible_characters() {
        assert_eq!(normalize("a\u{200B}ide\u{FEFF} moi"), "aide moi");
        assert_eq!(normalize("\u{200B} \u{00AD}\n"), "");
        assert_eq!(normalize("je\u{E0020}veux\u{180B}\u{1D173}"), "jeveux");
        assert_eq!(normalize("a\u{FFF9}i\u{1BCA0}d\u{17B4}e\u{13430}"), "aide");
    }

    #[test]
    fn letter_spaced_writing_is_joined() {
        assert_eq!(normalize("J E   V E U X   M O U R I R"), "JE VEUX MOURIR");
        assert_eq!(normalize("j v e u x  m o u r i r"), "jveux mourir");
        assert_eq!(normalize("J E  V E U X  M O U R I R!!!"), "JE VEUX MOURIR!!!");
        assert_eq!(normalize("\"j e  v e u x  m o u r i r\""), "\"je veux mourir\"");
        assert_eq!(normalize("J\nE\n\nV\nE\nU\nX\n\nM\nO\nU\nR\nI\nR"), "JE VEUX MOURIR");
        assert_eq!(normalize("m o r t e\ne n v i e"), "morte envie");
        assert_eq!(normalize("j\u{3164}e\u{3164} v\u{3164}a\u{3164}i\u{3164}s"), "je vais");
        assert_eq!(normalize("ok  j e  m e  t u e"), "ok je me tue");
    }

    #[test]
    fn short_runs_of_single_letters_stay_apart() {
        assert_eq!(normalize("il y a 5 min"), "il y a 5 min");
        assert_eq!(normalize("de 14 h à 6 h du matin"), "de 14 h à 6 h du matin");
        assert_eq!(normalize("y a à  voir"), "y a à voir");
        assert_eq!(normalize("il y a à y aller"), "il y a à y aller");
        assert_eq!(normalize("g t a l ecole"), "g t a l ecole");
        assert_eq!(normalize("test 1 2 1 2"), "test 1 2 1 2");
    }

    #[test]
    fn blank_characters_are_whitespace() {
        assert_eq!(normalize("je\u{3164}veux\u{FFA0}mourir\u{2800}"), "je veux mourir");
        assert_eq!(normalize("\u{3164} \u{2800}\u{115F}"), "");
    }

    #[test]
    fn keeps_variation_selector_after_a_symbol() {
        assert_eq!(normalize("je t'aime \u{2764}\u{FE0F}"), "je t'aime \u{2764}\u{FE0F}");
        assert_eq!(normalize("\u{2764}\u{FE0F}\u{FE0F}\u{FE0F}"), "\u{2764}\u{FE0F}");
        let padded = format!("{}jveux mourir{}", "\u{FE0F}".repeat(50), " \u{FE0F}".repeat(50));
        assert_eq!(normalize(&padded), "jveux mourir");
        assert_eq!(normalize(&"\u{FE0F}".repeat(10)), "");
        // After letters and digits a selector shows nothing, so it cannot split words.
        assert_eq!(normalize("je\u{FE0F} v\u{FE0F}e\u{FE0F}ux 1\u{FE0F}"), "je veux 1");
        // Nor after punctuation, folded or not.
        assert_eq!(normalize("j\u{2019}\u{FE0F}ai \u{AB}\u{FE0F} ok \u{BB}\u{FE0E}\u{2026}\u{FE0F}"), "j'ai \" ok \"\u{2026}");
    }

    #[test]
    fn composes_to_nfc() {
        assert_eq!(normalize("e\u{0301}cole"), "école");
    }

    #[test]
    fn keeps_emoji_and_other_scripts() {
        assert_eq!(normalize("😭 ساعدني"), "😭 ساعدني");
    }
}
