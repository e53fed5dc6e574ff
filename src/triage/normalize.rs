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
/// Returns an empty string for a text that is empty or only whitespace and invisible characters.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    // Whether the last character kept may carry a variation selector.
    let mut selector_allowed = false;
    for c in text.nfc() {
        if is_invisible(c) {
            continue;
        }
        if is_variation_selector(c) {
            if selector_allowed && !pending_space {
                out.push(c);
                selector_allowed = false;
            }
            continue;
        }
        if c.is_whitespace() || is_blank(c) {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        let folded = fold_punctuation(c);
        out.push(folded);
        selector_allowed = takes_variation_selector(folded);
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
