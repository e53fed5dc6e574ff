//! Lines of a JSONL file or stream, read as bytes so that invalid UTF-8 fails only its own line,
//! with the line number and the byte position.
//!
//! Lines end in `\n` or `\r\n`, as [`str::lines`] splits them. A UTF-8 byte-order mark at the
//! start of line 1 is dropped, because some editors, mostly on Windows, save UTF-8 files with one.
//! Anywhere else it is kept, so a JSON parser rejects that line.

use std::fmt;

/// The UTF-8 byte-order mark, as the character it decodes to.
pub const BYTE_ORDER_MARK: char = '\u{FEFF}';

/// Error for a line that is not valid UTF-8. It gives the position of the first invalid byte and
/// never the bytes, because data lines are messages from minors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8 {
    /// Position of the first invalid byte in the line, counted from 1. On line 1 a byte-order
    /// mark counts as 3 bytes.
    pub byte: usize,
}

impl fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid UTF-8 at byte {} of the line", self.byte)
    }
}

impl std::error::Error for InvalidUtf8 {}

/// Decodes line `number` (counted from 1), given with or without its line ending (`\n` or
/// `\r\n`), and returns it without the ending. On line 1 a leading byte-order mark is dropped.
pub fn decode_line(bytes: &[u8], number: usize) -> Result<&str, InvalidUtf8> {
    let bytes = match bytes.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None => bytes,
    };
    let line = std::str::from_utf8(bytes).map_err(|error| InvalidUtf8 { byte: error.valid_up_to() + 1 })?;
    if number == 1 {
        return Ok(line.strip_prefix(BYTE_ORDER_MARK).unwrap_or(line));
    }
    Ok(line)
}

/// Splits `bytes` into lines as [`str::lines`] does, and decodes each with [`decode_line`].
/// Yields the line number, counted from 1, with the decoded line or its error, so a caller can
/// report a bad line and go on to the next one.
pub fn decode_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, Result<&str, InvalidUtf8>)> {
    bytes.split_inclusive(|&byte| byte == b'\n').enumerate().map(|(index, line)| {
        let number = index + 1;
        (number, decode_line(line, number))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8]) -> Vec<(usize, Result<&str, InvalidUtf8>)> {
        decode_lines(bytes).collect()
    }

    #[test]
    fn splits_like_str_lines() {
        let cases = [
            "",
            "\n",
            "\n\n",
            "un",
            "un\n",
            "un\ndeux",
            "un\r\ndeux\r\n",
            "un\n\ndeux\n",
            "un\r\n\r\ndeux",
            "un\rdeux\n",
            "un\r",
            "\r\n",
            "  \n\t\n",
            "é\nà\r\n",
        ];
        for case in cases {
            let expected: Vec<&str> = case.lines().collect();
            let lines: Vec<&str> = decode_lines(case.as_bytes()).map(|(_, line)| line.unwrap()).collect();
            assert_eq!(lines, expected, "{case:?}");
        }
    }

    #[test]
    fn numbers_lines_from_one() {
        let numbers: Vec<usize> = decode_lines(b"a\n\nb\r\nc").map(|(number, _)| number).collect();
        assert_eq!(numbers, [1, 2, 3, 4]);
    }

    #[test]
    fn byte_order_mark_dropped_on_line_one() {
        assert_eq!(decoded(b"\xef\xbb\xbf{}\n{}\n"), [(1, Ok("{}")), (2, Ok("{}"))]);
        assert_eq!(decoded(b"\xef\xbb\xbf{}\r\n"), [(1, Ok("{}"))]);
        assert_eq!(decoded(b"\xef\xbb\xbf\n{}"), [(1, Ok("")), (2, Ok("{}"))]);
        assert_eq!(decoded(b"\xef\xbb\xbf"), [(1, Ok(""))]);
    }

    #[test]
    fn byte_order_mark_kept_elsewhere() {
        assert_eq!(decoded(b"{}\n\xef\xbb\xbf{}\n"), [(1, Ok("{}")), (2, Ok("\u{FEFF}{}"))]);
        // Only one mark is dropped: a second one is part of the line.
        assert_eq!(decoded(b"\xef\xbb\xbf\xef\xbb\xbf{}"), [(1, Ok("\u{FEFF}{}"))]);
    }

    #[test]
    fn invalid_utf8_gives_line_and_byte() {
        // "é" in Latin-1 is the single byte 0xE9, which is not UTF-8.
        let lines = decoded(b"{\"a\": 1}\n{\"text\": \"il m'a \xe9crit\"}\r\n{\"b\": 2}\n");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], (1, Ok("{\"a\": 1}")));
        assert_eq!(lines[1], (2, Err(InvalidUtf8 { byte: 18 })));
        assert_eq!(lines[2], (3, Ok("{\"b\": 2}")));
    }

    #[test]
    fn invalid_utf8_position_counts_byte_order_mark() {
        assert_eq!(decoded(b"\xef\xbb\xbf{\"text\": \"\xff\"}"), [(1, Err(InvalidUtf8 { byte: 14 }))]);
    }

    #[test]
    fn truncated_sequence_at_line_end_is_invalid() {
        // The first two bytes of the three-byte "€", cut before the line ending.
        assert_eq!(decoded(b"ab\xe2\x82\r\n"), [(1, Err(InvalidUtf8 { byte: 3 }))]);
        assert_eq!(decoded(b"ab\xe2\x82"), [(1, Err(InvalidUtf8 { byte: 3 }))]);
    }

    #[test]
    fn invalid_utf8_message_has_no_line_bytes() {
        let error = decode_line(b"secret \xe9\n", 4).unwrap_err();
        assert_eq!(error.to_string(), "invalid UTF-8 at byte 8 of the line");
    }
}
