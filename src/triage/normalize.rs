//! The one text normalisation. The encoder and the rules both read its output, so rules and
//! model always read the same text.

use unicode_normalization::UnicodeNormalization;

/// Normalises a message: Unicode NFC, invisible characters removed, typographic apostrophes and
/// quotes folded to ASCII, every run of whitespace collapsed to one space, and trimmed.
///
/// Returns an empty string for a text that is empty or only whitespace and invisible characters.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.nfc() {
        if is_invisible(c) {
            continue;
        }
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(fold_punctuation(c));
    }
    out
}

/// Zero-width and formatting characters, which are invisible when rendered.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}'
    ) || (c.is_control() && !c.is_whitespace())
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
